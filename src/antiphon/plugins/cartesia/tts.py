"""Cartesia Sonic streaming TTS (``wss://api.cartesia.ai/tts/websocket``).

Connections are pooled and reused across turns; every stream is its own Cartesia context
(``context_id``), so a cancelled stream sends ``cancel`` and its connection goes back to
the pool at once: whatever the server still sends for the old context is dropped by the
next stream's session. The streaming itself is :mod:`antiphon.services.ws_tts`; this
module maps it onto :mod:`antiphon.protocols.cartesia_tts`.
"""

from __future__ import annotations

import logging

from antiphon.errors import ProviderError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import cartesia_tts as ca
from antiphon.protocols.cartesia_tts import ContextSession
from antiphon.protocols.tts_session import Action
from antiphon.services.tts import TTSDeadlines
from antiphon.services.ws_tts import WebSocketTTS

__all__ = ["ENV_API_KEY", "PROVIDER", "CartesiaTTS"]

log = logging.getLogger(__name__)
PROVIDER = ca.PROVIDER
ENV_API_KEY = "CARTESIA_API_KEY"


class CartesiaTTS(WebSocketTTS):
    """Cartesia Sonic streaming TTS.

    ``api_key`` defaults to ``$CARTESIA_API_KEY``. ``model`` is any Cartesia model id
    (``sonic-2`` by default, ``sonic-3``, ...); ``voice`` a voice id (UUID); ``encoding``
    ``linear16`` (pcm_s16le), ``mulaw`` or ``alaw`` (8 or 16 kHz); ``sample_rate`` one of
    8000, 16000, 22050, 24000, 44100, 48000. ``speed``/``volume``/``emotion`` become
    ``generation_config`` (Sonic-3); ``max_buffer_delay_ms`` lets the server wait for
    more text before it starts speaking (antiphon flushes explicitly, so it is left to the
    server's default). ``api_version`` is the ``Cartesia-Version`` header. ``base_url`` may
    point at a local fake (``ws://127.0.0.1:PORT``). ``add_timestamps``: ask for word
    timings (on each stream's ``words``). ``max_reconnects``: how often a stream
    may move to a new connection when one drops before any audio of the pending text.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = ca.DEFAULT_MODEL,
        voice: str = ca.DEFAULT_VOICE,
        language: str | None = ca.DEFAULT_LANGUAGE,
        encoding: str = ca.DEFAULT_ENCODING,
        sample_rate: int = ca.DEFAULT_SAMPLE_RATE,
        speed: float | None = None,
        volume: float | None = None,
        emotion: str | None = None,
        max_buffer_delay_ms: int | None = None,
        pronunciation_dict_id: str | None = None,
        add_timestamps: bool = False,
        api_version: str = ca.DEFAULT_API_VERSION,
        base_url: str = ca.DEFAULT_BASE_URL,
        deadlines: TTSDeadlines | None = None,
        pool: PoolOptions | None = None,
        max_reconnects: int = 1,
    ) -> None:
        key = require_api_key(
            api_key,
            ENV_API_KEY,
            "Cartesia TTS",
            how="create a key at play.cartesia.ai under API Keys",
        )
        self.options = ca.CartesiaOptions(
            model=model,
            voice=voice,
            language=language,
            encoding=encoding,
            sample_rate=sample_rate,
            api_version=api_version,
            speed=speed,
            volume=volume,
            emotion=emotion,
            max_buffer_delay_ms=max_buffer_delay_ms,
            pronunciation_dict_id=pronunciation_dict_id,
            add_timestamps=add_timestamps,
        )
        super().__init__(
            url=ca.build_url(base_url, self.options),
            headers=ca.auth_headers(key, self.options.api_version),
            auth_hint=auth_hint(ENV_API_KEY),
            sample_rate=sample_rate,
            wire_encoding=self.options.encoding,
            deadlines=deadlines,
            pool=pool,
            max_reconnects=max_reconnects,
        )
        self.word_timings = add_timestamps

    def new_session(self) -> ContextSession:
        return ContextSession(self.options)

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return ca.close_error(code, reason, stage=stage)

    def notice(self, action: Action) -> None:
        log.debug("cartesia: %s %s", action.note, action.event)
