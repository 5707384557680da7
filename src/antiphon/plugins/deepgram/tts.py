"""Deepgram streaming TTS (``wss://api.deepgram.com/v1/speak``).

Connections are pooled and reused across turns; a cancelled stream sends ``Clear`` and
its connection goes back to the pool only after ``Cleared`` (old audio in between is
dropped), so audio of an interrupted turn never reaches the next one. The streaming
itself is :mod:`antiphon.services.ws_tts`; this module maps it onto the protocol.
"""

from __future__ import annotations

import logging

from antiphon.errors import ProviderError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import deepgram_tts as dg
from antiphon.protocols.deepgram_tts import SpeakSession
from antiphon.protocols.tts_session import Action
from antiphon.services.tts import TTSDeadlines
from antiphon.services.ws_tts import WebSocketTTS

__all__ = ["PROVIDER", "DeepgramTTS"]

log = logging.getLogger(__name__)
PROVIDER = dg.PROVIDER


class DeepgramTTS(WebSocketTTS):
    """Deepgram Aura streaming TTS.

    ``api_key`` defaults to ``$DEEPGRAM_API_KEY``. ``base_url`` may point at a local fake
    (``ws://127.0.0.1:PORT``). ``max_reconnects``: how often a stream may move to a new
    connection when one drops before any audio of the pending text arrived.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = dg.DEFAULT_MODEL,
        encoding: str = dg.DEFAULT_ENCODING,
        sample_rate: int = dg.DEFAULT_SAMPLE_RATE,
        speed: float | None = None,
        mip_opt_out: bool | None = None,
        base_url: str = dg.DEFAULT_BASE_URL,
        deadlines: TTSDeadlines | None = None,
        pool: PoolOptions | None = None,
        max_reconnects: int = 1,
    ) -> None:
        key = require_api_key(
            api_key, "DEEPGRAM_API_KEY", "Deepgram TTS", how="create a key in the Deepgram console"
        )
        self.options = dg.SpeakOptions(model, encoding, sample_rate, speed, mip_opt_out)
        super().__init__(
            url=dg.build_url(base_url, self.options),
            headers=dg.auth_headers(key),
            auth_hint=auth_hint("DEEPGRAM_API_KEY"),
            sample_rate=sample_rate,
            wire_encoding=encoding,
            deadlines=deadlines,
            pool=pool,
            max_reconnects=max_reconnects,
        )

    def new_session(self) -> SpeakSession:
        return SpeakSession()

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return dg.close_error(code, reason, stage=stage)

    def notice(self, action: Action) -> None:
        if isinstance(action.event, dg.Warning):
            log.warning("deepgram warning %s: %s", action.event.code, action.event.description)
