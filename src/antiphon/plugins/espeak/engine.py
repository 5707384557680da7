"""espeak-ng through ctypes, from the library and data that ``espeakng-loader`` ships.

libespeak-ng keeps its state in globals (one voice, one set of parameters, one callback
per process), so this module drives it from one place: :func:`synthesize` holds a
process-wide lock for a whole utterance, sets voice and parameters, and runs
``espeak_Synth`` in synchronous mode with a callback that hands each block of samples to
``on_audio`` *as it is produced* (a few tens of milliseconds of audio at a time). The
callback returning ``False`` aborts the synthesis at the next block.

This module is blocking and knows nothing of asyncio: the TTS plugin calls it on its own
worker thread (:mod:`antiphon.plugins.espeak.tts`).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from antiphon.errors import ConfigError, ProviderError

PROVIDER = "espeak"
INSTALL_HINT = "install espeak-ng's library and data with: pip install espeakng-loader"

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
#: Milliseconds of audio per callback block (espeak's ``buflength``).
BLOCK_MS = 60

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_lock = threading.Lock()
_lib: Any = None
_sample_rate = 0
_current: Callable[[bytes], bool] | None = None
_aborted = False
_raised: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Voice:
    """An espeak-ng voice and its prosody.

    ``name``: a voice such as ``en-us``, ``en``, ``en-gb`` (``espeak-ng --voices`` lists
    them). ``rate``: words per minute (80-450). ``pitch`` and ``volume``: 0-100 / 0-200.
    """

    name: str = "en-us"
    rate: int = 175
    pitch: int = 50
    volume: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("espeak voice name must be a non-empty string such as 'en-us'")
        for field, lo, hi in (("rate", 80, 450), ("pitch", 0, 100), ("volume", 0, 200)):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ConfigError(f"espeak {field} must be an int in [{lo}, {hi}], got {value!r}")


def _on_samples(wav: Any, n: int, _events: Any) -> int:
    """espeak's synth callback (runs inside ``espeak_Synth``, on the calling thread)."""
    global _aborted, _raised
    sink = _current
    if sink is None or _aborted:
        return 1
    try:
        keep_going = not (wav and n > 0) or sink(ctypes.string_at(wav, n * 2))
    except BaseException as exc:  # ctypes would swallow it: hand it to synthesize()
        _raised = exc
        keep_going = False
    if not keep_going:
        _aborted = True
        return 1
    return 0


_callback = _CALLBACK(_on_samples)  # kept alive for the life of the process


def _load() -> Any:
    """Load and initialise the library once per process (call with ``_lock`` held)."""
    global _lib, _sample_rate
    if _lib is not None:
        return _lib
    try:
        import espeakng_loader  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError(f"espeak-ng is not installed; {INSTALL_HINT}") from exc
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path()
    except (OSError, RuntimeError) as exc:
        raise ProviderError(
            f"cannot load libespeak-ng: {exc}", provider=PROVIDER, stage="load", hint=INSTALL_HINT
        ) from exc
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, BLOCK_MS, data.encode(), 0)
    if rate <= 0:
        raise ProviderError(
            f"espeak_Initialize failed ({rate})", provider=PROVIDER, stage="load", hint=INSTALL_HINT
        )
    lib.espeak_SetSynthCallback(_callback)
    _lib, _sample_rate = lib, rate
    return lib


def sample_rate() -> int:
    """The library's output rate in Hz (22050 for espeak-ng), loading it if needed."""
    with _lock:
        _load()
        return _sample_rate


def synthesize(text: str, voice: Voice, on_audio: Callable[[bytes], bool]) -> bool:
    """Speak ``text``: call ``on_audio(pcm)`` with int16 mono blocks as they are made.

    Blocks until done. ``on_audio`` returning ``False`` aborts; returns ``False`` then,
    ``True`` when the whole text was spoken. An exception raised by ``on_audio`` aborts
    and is re-raised here; ``ProviderError`` if espeak itself fails.
    """
    global _current, _aborted, _raised
    with _lock:
        lib = _load()
        if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise ConfigError(
                f"espeak-ng has no voice {voice.name!r}; try 'en-us', 'en' or 'en-gb'"
            )
        lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
        lib.espeak_SetParameter(_PARAM_VOLUME, voice.volume, 0)
        data = text.encode("utf-8")
        _current, _aborted, _raised = on_audio, False, None
        try:
            err = lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            aborted, raised = _aborted, _raised
        finally:
            _current, _raised = None, None
        if raised is not None:
            raise raised
        if err != 0 and not aborted:
            raise ProviderError(f"espeak_Synth failed ({err})", provider=PROVIDER, stage="synth")
        return not aborted


def synthesize_pcm(text: str, voice: Voice | None = None) -> bytes:
    """The whole utterance as int16 mono PCM at :func:`sample_rate` (for tests, tools)."""
    blocks: list[bytes] = []

    def keep(pcm: bytes) -> bool:
        blocks.append(pcm)
        return True

    synthesize(text, voice or Voice(), keep)
    return b"".join(blocks)
