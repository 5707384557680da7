"""ElevenLabs streaming TTS over the multi-context WebSocket.

``wss://api.elevenlabs.io/v1/text-to-speech/{voice}/multi-stream-input``: connections are
pooled and reused across turns, and every stream speaks in a context of its own. A
cancelled stream sends ``close_context`` and its connection goes straight back to the
pool; whatever audio of the old context still arrives is dropped by the next stream,
which only accepts its own context id. The streaming itself is
:mod:`antiphon.services.ws_tts`; this module maps it onto the protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from antiphon.errors import ProviderError
from antiphon.net.pool import PoolOptions
from antiphon.plugins.keys import require_api_key
from antiphon.protocols import elevenlabs_tts as el
from antiphon.protocols.elevenlabs_tts import (
    ContextSession,
    PronunciationDictionary,
    StreamOptions,
    VoiceSettings,
)
from antiphon.protocols.tts_session import Action
from antiphon.services.tts import TTSDeadlines
from antiphon.services.ws_tts import WebSocketTTS

__all__ = ["KEY_ENV", "PROVIDER", "ElevenLabsTTS"]

log = logging.getLogger(__name__)
PROVIDER = el.PROVIDER
#: Environment variables read for the key, in order.
KEY_ENV = ("ELEVEN_API_KEY", "ELEVENLABS_API_KEY")


class ElevenLabsTTS(WebSocketTTS):
    """ElevenLabs streaming TTS (multi-context WebSocket, one context per stream).

    ``api_key`` defaults to ``$ELEVEN_API_KEY``, then ``$ELEVENLABS_API_KEY``. ``voice`` is a
    voice id; ``model`` a model id (``eleven_flash_v2_5`` by default; ``eleven_v3`` has no
    multi-context streaming). Audio: ``encoding`` linear16 (``sample_rate`` 8000, 16000,
    22050, 24000 or 44100; 24000 by default) or mulaw/alaw at 8000, or the same given as
    ``output_format`` (``"pcm_24000"``, ``"ulaw_8000"``); mp3/opus are refused since
    frames are raw PCM. ``voice_settings``, ``chunk_length_schedule`` (characters, 50-500
    each) and ``pronunciation_dictionaries`` go with every context's first message.
    ``language_code``, ``inactivity_timeout`` (seconds, 1-180; the server's default is
    20), ``auto_mode``, ``enable_ssml_parsing``, ``apply_text_normalization``
    (auto/on/off), ``enable_logging`` and ``seed`` are query parameters; ``None`` keeps the
    server's default. ``base_url`` may be a residency host or a local fake
    (``ws://127.0.0.1:PORT``). ``max_reconnects``: how often a stream may move to a new
    connection when one drops before any of its audio arrived.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None = None,
        voice: str = el.DEFAULT_VOICE,
        model: str = el.DEFAULT_MODEL,
        encoding: str | None = None,
        sample_rate: int | None = None,
        output_format: str | None = None,
        voice_settings: VoiceSettings | None = None,
        chunk_length_schedule: Sequence[int] | None = None,
        pronunciation_dictionaries: Iterable[PronunciationDictionary] = (),
        language_code: str | None = None,
        inactivity_timeout: int | None = None,
        auto_mode: bool | None = None,
        enable_ssml_parsing: bool | None = None,
        apply_text_normalization: str | None = None,
        enable_logging: bool | None = None,
        seed: int | None = None,
        base_url: str = el.DEFAULT_BASE_URL,
        deadlines: TTSDeadlines | None = None,
        pool: PoolOptions | None = None,
        max_reconnects: int = 1,
    ) -> None:
        key = require_api_key(
            api_key,
            KEY_ENV[0],
            "ElevenLabs TTS",
            also=KEY_ENV[1:],
            how="create one at https://elevenlabs.io/app/settings/api-keys",
        )
        wire, rate = el.resolve_format(encoding, sample_rate, output_format)
        self.options = StreamOptions(
            voice=voice,
            model=model,
            encoding=wire,
            sample_rate=rate,
            language_code=language_code,
            inactivity_timeout=inactivity_timeout,
            auto_mode=auto_mode,
            enable_ssml_parsing=enable_ssml_parsing,
            apply_text_normalization=apply_text_normalization,
            enable_logging=enable_logging,
            seed=seed,
            voice_settings=voice_settings,
            chunk_length_schedule=(
                tuple(chunk_length_schedule) if chunk_length_schedule is not None else None
            ),
            pronunciation_dictionaries=tuple(pronunciation_dictionaries),
        )
        super().__init__(
            url=el.build_url(base_url, self.options),
            headers=el.auth_headers(key),
            auth_hint=el.KEY_HINT,
            sample_rate=rate,
            wire_encoding=wire,
            deadlines=deadlines,
            pool=pool,
            max_reconnects=max_reconnects,
        )

    #: Every audio message carries its characters' ``alignment`` (grouped into words).
    word_timings = True

    def new_session(self) -> ContextSession:
        return ContextSession(self.options)

    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        return el.close_error(code, reason, stage=stage)

    def notice(self, action: Action) -> None:
        log.debug("elevenlabs: %s %s", action.note, action.event)
