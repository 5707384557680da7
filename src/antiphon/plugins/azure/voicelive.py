"""Azure AI Voice Live (speech to speech): ``wss://<resource>/voice-live/realtime``.

Voice Live speaks the *preview* OpenAI Realtime event names (``response.audio.delta``,
flat session fields) with Azure additions: Azure voices (``azure-standard``,
``azure-custom``, ``azure-personal``...), ``azure_semantic_vad`` turn detection, deep noise
suppression and server echo cancellation. Auth is an ``api-key`` header or an Entra ID
bearer token. The session itself is :class:`~antiphon.services.realtime.RealtimeSession`;
see ``docs/realtime.md``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from antiphon.errors import ConfigError
from antiphon.plugins.keys import require_api_key
from antiphon.protocols.realtime import Dialect, Tool, Voice, build_url
from antiphon.services.realtime import RealtimeDeadlines, WebSocketRealtimeModel

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_MODEL",
    "DEFAULT_TURN_DETECTION",
    "DEFAULT_VOICE",
    "PATH",
    "PROVIDER",
    "AzureVoiceLive",
    "TokenProvider",
]

PROVIDER = "azure-voicelive"
PATH = "/voice-live/realtime"
#: The ``api-version`` that Azure's own SDK (azure-ai-voicelive 1.3) sends; the messages
#: antiphon sends and reads validate against that SDK's models (tests/test_sdk_azure_voicelive.py).
DEFAULT_API_VERSION = "2026-07-15"
DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = Voice("en-US-Ava:DragonHDLatestNeural", "azure-standard")
DEFAULT_TURN_DETECTION: Mapping[str, Any] = {
    "type": "azure_semantic_vad",
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}

TokenProvider = Callable[[], str | Awaitable[str]]


class AzureVoiceLive(WebSocketRealtimeModel):
    """Azure AI Voice Live.

    ``endpoint``: ``https://<resource>.services.ai.azure.com`` (or ``wss://``; a local fake
    at ``ws://127.0.0.1:PORT``), default ``$AZURE_VOICELIVE_ENDPOINT``. Credentials: an
    ``api_key`` (default ``$AZURE_VOICELIVE_API_KEY``), or ``token`` / ``token_provider``
    for Entra ID (scope ``https://ai.azure.com/.default``); a provider is called for every
    connection, so reconnects get a fresh token. ``voice``: an OpenAI voice name, a
    :class:`Voice` or a mapping with its ``type``. ``noise_suppression`` and
    ``echo_cancellation`` turn on Azure's input processing. ``max_input_backlog``: seconds
    of input audio that may wait for the socket before the session fails (default 2.0);
    ``max_output_backlog``: seconds of agent audio the consumer may fall behind before the
    session fails (default 120.0).
    """

    provider: ClassVar[str] = PROVIDER
    dialect: ClassVar[Dialect] = Dialect.BETA

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        api_key: str | None = None,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        api_version: str = DEFAULT_API_VERSION,
        model: str = DEFAULT_MODEL,
        instructions: str = "",
        voice: str | Voice | Mapping[str, Any] = DEFAULT_VOICE,
        tools: Sequence[Tool | Mapping[str, Any]] = (),
        turn_detection: Mapping[str, Any] | None = DEFAULT_TURN_DETECTION,
        transcription: Mapping[str, Any] | None = None,
        noise_suppression: bool = True,
        echo_cancellation: bool = True,
        input_sample_rate: int = 24000,
        output_sample_rate: int = 24000,
        deadlines: RealtimeDeadlines | None = None,
        max_reconnects: int = 2,
        max_input_backlog: float = 2.0,
        max_output_backlog: float = 120.0,
        extra_session: Mapping[str, Any] | None = None,
    ) -> None:
        ep = endpoint if endpoint is not None else os.environ.get("AZURE_VOICELIVE_ENDPOINT", "")
        if not ep.strip():
            raise ConfigError(
                "Azure Voice Live needs an endpoint: pass endpoint='https://<resource>."
                "services.ai.azure.com' or set AZURE_VOICELIVE_ENDPOINT"
            )
        given = [x is not None for x in (api_key, token, token_provider)]
        if sum(given) > 1:
            raise ConfigError("pass only one of api_key, token or token_provider")
        self._key: str | None = None
        self._token = token
        self._token_provider = token_provider
        if token is None and token_provider is None:
            self._key = require_api_key(
                api_key,
                "AZURE_VOICELIVE_API_KEY",
                "Azure Voice Live",
                how="or pass token=/token_provider= for Entra ID",
            )
        if not api_version or not model:
            raise ConfigError(
                f"api_version and model are required, e.g. {DEFAULT_API_VERSION!r}, 'gpt-realtime'"
            )
        self.api_version = api_version
        self.model = model
        super().__init__(
            url=build_url(ep.strip(), PATH, {"api-version": api_version, "model": model}),
            auth_hint="check AZURE_VOICELIVE_API_KEY (or the api_key/token argument) and that "
            "the resource has Voice Live",
            instructions=instructions,
            voice=voice,
            tools=tools,
            turn_detection=turn_detection,
            transcription=(
                transcription if transcription is not None else {"model": "azure-speech"}
            ),
            noise_reduction={"type": "azure_deep_noise_suppression"} if noise_suppression else None,
            echo_cancellation={"type": "server_echo_cancellation"} if echo_cancellation else None,
            input_sample_rate=input_sample_rate,
            output_sample_rate=output_sample_rate,
            deadlines=deadlines,
            max_reconnects=max_reconnects,
            max_input_backlog=max_input_backlog,
            max_output_backlog=max_output_backlog,
            extra_session=extra_session,
        )

    async def connect_headers(self) -> Mapping[str, str]:
        if self._key is not None:
            return {"api-key": self._key}
        if self._token_provider is not None:
            got = self._token_provider()
            token = await got if inspect.isawaitable(got) else got
        else:
            token = self._token or ""
        if not isinstance(token, str) or not token.strip():
            raise ConfigError("the Entra ID token (token or token_provider) is empty")
        return {"Authorization": f"Bearer {token.strip()}"}
