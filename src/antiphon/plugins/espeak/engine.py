"""espeak-ng through ctypes, from the library and data that ``espeakng-loader`` ships.

libespeak-ng keeps its state in globals (one voice, one set of parameters, one callback
per process), so this module drives it from one place: :func:`synthesize` holds a
process-wide lock for a whole utterance, sets voice and parameters, and runs
``espeak_Synth`` in synchronous mode with a callback that hands each block of samples to
``on_audio`` *as it is produced* (a few tens of milliseconds of audio at a time). The
callback returning ``False`` aborts the synthesis at the next block.

espeak-ng's output is deterministic for a process's history but not per call: its
wave generator keeps state between utterances (the pitch "flutter" phase), so the same
text gives slightly different samples, and a few samples more or less, each time. Tests
compare with the blocks the engine produced, not with a second synthesis.

This module is blocking and knows nothing of asyncio: the TTS plugin calls it on its own
worker thread (:mod:`antiphon.plugins.espeak.tts`).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError

__all__ = [
    "BLOCK_MS",
    "INSTALL_HINT",
    "PROVIDER",
    "Voice",
    "check_voice",
    "phonemize",
    "sample_rate",
    "synthesize",
    "synthesize_pcm",
]

PROVIDER = "espeak"
INSTALL_HINT = "install espeak-ng's library and data with: pip install espeakng-loader"

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes: IPA as UTF-8 instead of espeak's names
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

    ``name``: a voice such as ``en-us``, ``en`` (British) or ``fr``, optionally with a variant
    such as ``en-us+f3`` (``espeak-ng --voices`` lists them; :func:`check_voice` tells).
    ``rate``: words per minute (80-450). ``pitch`` and ``volume``: 0-100 / 0-200.
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
    lib.espeak_TextToPhonemes.argtypes = [
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
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
    if _lib is not None:  # loaded: never wait for a synthesis that holds the lock
        return _sample_rate
    with _lock:
        _load()
        return _sample_rate


def _acquire(wait: float | None) -> None:
    if not _lock.acquire(timeout=-1 if wait is None else max(0.0, wait)):
        assert wait is not None
        raise ProviderTimeoutError(
            "another espeak-ng synthesis in this process did not finish",
            provider=PROVIDER,
            stage="busy",
            timeout=wait,
            hint="libespeak-ng speaks one text at a time per process",
        )


def _set_voice(lib: Any, name: str) -> None:
    if lib.espeak_SetVoiceByName(name.encode()) != 0:
        raise ConfigError(
            f"espeak-ng has no voice {name!r}; use e.g. 'en-us', 'en' (British), "
            "'en-us+f3' (a variant) or another name that `espeak-ng --voices` lists"
        )


def check_voice(voice: Voice, *, wait: float = 1.0) -> bool:
    """Refuse a voice espeak-ng does not have (``ConfigError``); True if it was checked.

    Waits at most ``wait`` seconds for a synthesis that holds the library; returns
    False (unchecked) if it is still busy then.
    """
    if not _lock.acquire(timeout=wait):
        return False
    try:
        _set_voice(_load(), voice.name)
    finally:
        _lock.release()
    return True


def synthesize(
    text: str, voice: Voice, on_audio: Callable[[bytes], bool], *, wait: float | None = None
) -> bool:
    """Speak ``text``: call ``on_audio(pcm)`` with int16 mono blocks as they are made.

    Blocks until done. ``on_audio`` returning ``False`` aborts; returns ``False`` then,
    ``True`` when the whole text was spoken. An exception raised by ``on_audio`` aborts
    and is re-raised here; ``ConfigError`` for an unknown voice; ``ProviderError`` if
    espeak itself fails. One synthesis runs at a time per process: ``wait`` bounds the
    wait for another one to finish (``ProviderTimeoutError``, stage ``busy``; None: no
    bound).
    """
    global _current, _aborted, _raised
    _acquire(wait)
    try:
        lib = _load()
        _set_voice(lib, voice.name)
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
    finally:
        _lock.release()


def phonemize(text: str, voice: str, *, wait: float | None = None) -> str:
    """``text`` as IPA phonemes in ``voice``'s language (words separated by spaces).

    espeak-ng reads the text clause by clause and drops the punctuation; callers that
    need it split the clauses themselves. ``wait`` bounds the wait for the library as in
    :func:`synthesize`; ``ConfigError`` for an unknown voice.
    """
    _acquire(wait)
    try:
        lib = _load()
        _set_voice(lib, voice)
        cursor = ctypes.c_char_p(text.encode("utf-8"))
        clauses: list[str] = []
        while cursor.value:  # espeak advances the cursor one clause per call
            out = lib.espeak_TextToPhonemes(ctypes.byref(cursor), _CHARS_UTF8, _PHONEMES_IPA)
            if out:
                clauses.append(out.decode("utf-8", errors="replace"))
        return " ".join(c.strip() for c in clauses if c.strip())
    finally:
        _lock.release()


def synthesize_pcm(text: str, voice: Voice | None = None) -> bytes:
    """The whole utterance as int16 mono PCM at :func:`sample_rate` (for tests, tools)."""
    blocks: list[bytes] = []

    def keep(pcm: bytes) -> bool:
        blocks.append(pcm)
        return True

    synthesize(text, voice or Voice(), keep)
    return b"".join(blocks)
