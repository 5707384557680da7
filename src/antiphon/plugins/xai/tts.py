"""xAI (Grok) streaming TTS (``wss://api.x.ai/v1/tts``).

Connections are pooled and reused across turns. Each flush is a ``text.done``, answered
by exactly one ``audio.done``; the protocol state machine counts what is owed when the
flush is *decided*, so an ``audio.done`` that arrives before our ``send`` returned cannot
be missed. A cancelled stream sends ``text.clear`` and its connection goes back to the pool
only after ``audio.clear`` (old audio in between is dropped), since the protocol carries no
utterance ids. The streaming itself is :mod:`antiphon.services.ws_tts`; this module maps it
onto :mod:`antiphon.protocols.xai_tts`.
"""

from __future__ import annotations

import logging

from antiphon.errors import ProviderError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.keys import auth_hint, require_api_key
from antiphon.protocols import xai_tts as xai
from antiphon.protocols.tts_session import Action
from antiphon.protocols.xai_tts import XAISession
from antiphon.services.tts import TTSDeadlines
from antiphon.services.ws_tts import WebSocketTTS

__all__ = ["DEFAULT_POOL", "ENV_API_KEY", "PROVIDER", "XAITTS"]

log = logging.getLogger(__name__)
PROVIDER = xai.PROVIDER
ENV_API_KEY = "XAI_API_KEY"
#: xAI closes a TTS connection after about 2,100 s (observed by LiveKit); retire ours
#: well before that.
DEFAULT_POOL = PoolOptions(max_age=1800.0)


class XAITTS(WebSocketTTS):
    """xAI (Grok) streaming TTS.

    ``api_key`` defaults to ``$XAI_API_KEY``. ``voice``: a built-in voice (``eve`` by
    default, ``ara``, ``rex``, ``sal``, ``leo``) or a custom voice id. ``language``: a
    BCP-47 code xAI supports (``en`` by default) or ``auto``. ``encoding``: ``linear16``
    (codec ``pcm``, default), ``mulaw``/``ulaw`` or ``alaw`` (8 kHz telephony);
    ``sample_rate``: 8000, 16000, 22050, 24000 (default), 44100 or 48000. ``speed``
    (0.7–1.5), ``optimize_streaming_latency`` (0, 1, 2), ``text_normalization`` and
    ``with_timestamps`` are sent only when set, so the server's defaults apply otherwise.
    ``base_url`` may point at a local fake (``ws://127.0.0.1:PORT``). ``pool`` defaults to
    connections retired after 1,800 s. ``max_reconnects``: how often a stream may move to a
    new connection when one drops before any audio of the pending text arrived.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        voice: str = xai.DEFAULT_VOICE,
        language: str = xai.DEFAULT_LANGUAGE,
        encoding: str = xai.DEFAULT_ENCODING,
        sample_rate: int = xai.DEFAULT_SAMPLE_RATE,
        speed: float | None = None,
        optimize_streaming_latency: int | None = None,
        text_normalization: bool | None = None,
        with_timestamps: bool | None = None,
        base_url: str = xai.DEFAULT_BASE_URL,
        deadlines: TTSDeadlines | None = None,
        pool: PoolOptions | None = None,
        max_reconnects: int = 1,
    ) -> None:
        key = require_api_key(
            api_key,
            ENV_API_KEY,
            "xAI TTS",
            how="create a key in the xAI console, console.x.ai, under API Keys",
        )
        self.options = xai.XAIOptions(
            voice=voice,
            language=language,
            encoding=encoding,
            sample_rate=sample_rate,
            speed=speed,
            optimize_streaming_latency=optimize_streaming_latency,
            text_normalization=text_normalization,
            with_timestamps=with_timestamps,
        )
        super().__init__(
            url=xai.build_url(base_url, self.options),
            headers=xai.auth_headers(key),
            auth_hint=auth_hint(ENV_API_KEY),
            sample_rate=self.options.sample_rate,
            wire_encoding=self.options.encoding,
            deadlines=deadlines,
            pool=pool if pool is not None else DEFAULT_POOL,
            max_reconnects=max_reconnects,
        )
        self.word_timings = bool(with_timestamps)  # per-character timings, grouped into words

    def new_session(self) -> XAISession:
        return XAISession()

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return xai.close_error(code, reason, stage=stage)

    def notice(self, action: Action) -> None:
        log.debug("xai: %s %s", action.note, action.event)
