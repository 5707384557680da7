"""Rime streaming TTS (``wss://users-ws.rime.ai/ws3``, the JSON WebSocket).

Connections are pooled and reused across turns; every stream is its own context id, so a
cancelled stream sends ``clear`` (which Rime does not acknowledge) and its connection goes
back to the pool at once: whatever the server still sends for the old context is dropped
by the next stream's session. Word timestamps arrive as notices
(:class:`~antiphon.protocols.rime_tts.WordTimestamps`). The streaming itself is
:mod:`antiphon.services.ws_tts`; this module maps it onto :mod:`antiphon.protocols.rime_tts`
(which cites Rime's documentation: there is no official SDK to check against).
"""

from __future__ import annotations

import logging

from antiphon.errors import ProviderError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import rime_tts as rt
from antiphon.protocols.rime_tts import RimeSession
from antiphon.protocols.tts_session import Action
from antiphon.services.tts import TTSDeadlines
from antiphon.services.ws_tts import WebSocketTTS

__all__ = ["ENV_API_KEY", "PROVIDER", "RimeTTS"]

log = logging.getLogger(__name__)
PROVIDER = rt.PROVIDER
ENV_API_KEY = "RIME_API_KEY"


class RimeTTS(WebSocketTTS):
    """Rime streaming TTS.

    Args:
        api_key: defaults to ``$RIME_API_KEY``.
        speaker: a Rime voice of the model (``astra`` by default).
        model: ``arcana`` (default), ``mistv2``, ``mistv3``, … (``modelId``).
        encoding: ``linear16`` (``audioFormat=pcm``) or ``mulaw``.
        sample_rate: one of 8000, 16000, 22050, 24000, 44100, 48000.
        language: ``lang`` (must match the speaker's language).
        speed_alpha: ``speedAlpha`` (1 is normal, lower is faster).
        base_url: ``wss://users-ws.rime.ai`` (path ``/ws3`` added), or a local fake.
        deadlines, pool, max_reconnects: as for every WebSocket TTS.

    Raises:
        ConfigError: no key, or an option Rime does not take.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        speaker: str = rt.DEFAULT_SPEAKER,
        model: str = rt.DEFAULT_MODEL,
        encoding: str = "linear16",
        sample_rate: int = rt.DEFAULT_SAMPLE_RATE,
        language: str | None = None,
        speed_alpha: float | None = None,
        base_url: str = rt.DEFAULT_BASE_URL,
        deadlines: TTSDeadlines | None = None,
        pool: PoolOptions | None = None,
        max_reconnects: int = 1,
    ) -> None:
        key = require_api_key(
            api_key,
            ENV_API_KEY,
            "Rime TTS",
            how="create one in the Rime dashboard under API Tokens",
        )
        self.options = rt.RimeOptions(
            speaker=speaker,
            model=model,
            encoding=encoding,
            sample_rate=sample_rate,
            language=language,
            speed_alpha=speed_alpha,
        )
        super().__init__(
            url=rt.build_url(base_url, self.options),
            headers=rt.auth_headers(key),
            auth_hint=auth_hint(ENV_API_KEY),
            sample_rate=sample_rate,
            wire_encoding=encoding,
            deadlines=deadlines,
            pool=pool,
            max_reconnects=max_reconnects,
        )

    def new_session(self) -> RimeSession:
        return RimeSession()

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return rt.close_error(code, reason, stage=stage)

    def notice(self, action: Action) -> None:
        log.debug("rime: %s %s", action.note, action.event)
