"""Offline streaming TTS with espeak-ng (library and voices from ``espeakng-loader``).

Each flush segment is synthesised on the plugin's own worker thread
(:class:`~antiphon.aio.worker.ThreadWorker`), and the audio reaches the stream block by
block *while* espeak produces it (60 ms of audio per block), through a bounded
:class:`~antiphon.aio.handoff.Handoff` (:data:`IN_FLIGHT` blocks) the stream reads with
its deadlines: when the reader falls behind, espeak's callback waits for room, so nothing
is dropped and nothing piles up. A cancel
sets an abort flag that espeak's callback checks at the next block, so the thread stops
within one block's compute (well under a millisecond); ``aclose()`` joins the thread.

libespeak-ng is process-global (one voice, one callback), so all synthesis in a process
is serialised by :mod:`antiphon.plugins.espeak.engine`; a TTS instance has one thread.
The wait for the library is bounded by ``first_audio`` on the thread too, so a
synthesis that never returns (holding the library) fails later streams with
``ProviderTimeoutError`` instead of piling up blocked threads. A thread whose call missed
its deadline is retired (it ends by itself when the call returns, and ``aclose()`` joins
it) and a fresh one serves the next stream.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from antiphon.aio.deadline import deadline
from antiphon.aio.handoff import Handoff
from antiphon.aio.worker import ThreadWorker, WorkerSlot
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import StreamResampler
from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.espeak import engine as esp
from antiphon.services.tts import TTS, FlushSegmentStream, SynthesisStream, TTSDeadlines

__all__ = ["IN_FLIGHT", "PROVIDER", "EspeakStream", "EspeakTTS", "Synthesizer"]

log = logging.getLogger(__name__)
PROVIDER = esp.PROVIDER
#: Blocks of audio (60 ms each) that may wait for the stream's reader; espeak then waits.
IN_FLIGHT = 32

#: ``synthesize(text, voice, on_audio) -> completed``: the engine call (tests wrap it).
Synthesizer = Callable[[str, esp.Voice, Callable[[bytes], bool]], bool]


@dataclass(frozen=True, slots=True)
class _Done:
    error: BaseException | None = None


class EspeakTTS(TTS):
    """espeak-ng speech, streamed as it is synthesised.

    ``voice``: an :class:`~antiphon.plugins.espeak.engine.Voice` (name, rate, pitch,
    volume). ``sample_rate``: output rate (espeak's native 22050 Hz by default; other
    rates are resampled with soxr, continuous across a segment).
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        *,
        voice: esp.Voice | None = None,
        sample_rate: int | None = None,
        deadlines: TTSDeadlines | None = None,
        synthesize: Synthesizer | None = None,
    ) -> None:
        self.native_rate = esp.sample_rate()  # loads the library: refuses at once if missing
        if sample_rate is not None and (
            not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0
        ):
            raise ConfigError(f"sample_rate must be a positive int in Hz, got {sample_rate!r}")
        if voice is not None and not isinstance(voice, esp.Voice):
            raise ConfigError(f"voice must be an espeak Voice, got {type(voice).__name__}")
        super().__init__(sample_rate=sample_rate or self.native_rate, deadlines=deadlines)
        self.voice = voice or esp.Voice()
        esp.check_voice(self.voice)  # an unknown voice is refused here, not mid-stream
        self._synthesize: Synthesizer = synthesize or functools.partial(
            esp.synthesize, wait=self.deadlines.first_audio
        )
        self._slot: WorkerSlot[None] = WorkerSlot(
            lambda: ThreadWorker(lambda: None, provider=self.provider)
        )

    def _engine(self) -> ThreadWorker[None]:
        """The worker thread, replaced if a call on it hung."""
        return self._slot.get()

    @property
    def threads(self) -> list[threading.Thread]:
        """The engine threads alive now (for leak checks)."""
        return self._slot.threads

    def _new_stream(self, generation: int) -> SynthesisStream:
        return EspeakStream(self, generation)

    async def _aclose_resources(self) -> None:
        await self._slot.aclose(self.deadlines.close)


class EspeakStream(FlushSegmentStream):
    """One stream of :class:`EspeakTTS`: each flush segment is one engine call."""

    def __init__(self, tts: EspeakTTS, generation: int) -> None:
        self._tts = tts
        self._abort = threading.Event()  # the engine call in progress stops when set
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
        worker = tts._engine()
        await worker.load(dl.connect)  # a failed load is this stream's error, at once
        audio: Handoff[bytes | _Done] = Handoff(IN_FLIGHT, name="espeak audio")
        abort = self._abort = threading.Event()
        synthesize, voice = tts._synthesize, tts.voice

        def on_audio(pcm: bytes) -> bool:  # on the worker thread, inside espeak_Synth
            return not abort.is_set() and audio.put(pcm)  # False: espeak stops

        def job(_: None) -> None:
            if abort.is_set():  # cancelled while queued: do not take the library
                return
            try:
                synthesize(text, voice, on_audio)
            except BaseException as exc:
                audio.put(_Done(exc))
            else:
                audio.put(_Done())

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
                            f"espeak-ng failed: {item.error!r}",
                            provider=self.provider,
                            stage="synth",
                        ) from item.error
                    if resampler is not None:
                        self._frame(resampler.flush().data)
                    return
                first = False
                if resampler is not None:
                    item = resampler.process(AudioFrame(item, tts.native_rate)).data
                self._frame(item)
        finally:
            abort.set()  # a cancel or failure stops espeak at its next block
            audio.close()

    def cancel(self) -> None:
        """Stop now: the engine stops at its next block, even before the task runs."""
        self._abort.set()
        super().cancel()

    def _frame(self, pcm: bytes) -> None:
        if pcm:
            self._emit(AudioFrame(pcm, self.sample_rate, 1, self.generation))
