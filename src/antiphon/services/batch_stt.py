"""A streaming STT over a non-streaming recogniser: one request per speech segment.

:class:`BatchSTT` turns any recogniser that takes a whole clip and answers its text (a
file-transcription endpoint such as OpenAI's ``audio/transcriptions``, a local model run
once per clip) into the streaming contract of :mod:`antiphon.services.stt`. A plugin
supplies only :meth:`BatchSTT.transcribe` (PCM16 mono at :attr:`BatchSTT.sample_rate` in,
a :class:`Clip` out).

How it is built:

- the stream's one task takes the caller's audio from the mailbox, converts it to the
  recogniser's rate (streaming resampler) and cuts it into *segments*: a segment ends at
  ``flush()`` (the agent's VAD heard the end of speech), at ``end_input()``, at the end
  of speech heard by the stream's own VAD (``vad=``: a factory of
  :class:`~antiphon.services.vad.VAD`; without one only flushes cut), or when it reaches
  ``max_segment`` seconds. Each segment is transcribed in order, one request at a time,
  and answered by one final transcript (no interim ones: the recogniser has none) with
  the segment's times in the stream's audio. Segments shorter than ``min_segment`` are
  not sent. The final of a flush's segment is marked ``flushed`` (an empty final when
  the segment had no text, or no segment was open), as the WebSocket STTs mark theirs:
  every segment before it was answered already, in order;
- with a VAD, only speech goes out: silence between segments is dropped (at most the
  VAD's padding before speech is kept), so a call pays for what was said;
- a request has the ``final`` deadline; a retryable failure (429, 5xx, a dropped
  connection) is retried with :class:`~antiphon.protocols.retry.Backoff` at most
  ``max_retries`` times, within that same deadline; any other failure fails the stream
  with its typed error;
- ``speech_only`` is true: an agent may feed the stream only speech, as it does for
  in-process engines.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError
from antiphon.protocols.retry import Backoff, retry_delay
from antiphon.services.stt import (
    STT,
    AudioInput,
    EndInput,
    FlushInput,
    RecognizeStream,
    STTDeadlines,
    Transcript,
)
from antiphon.services.vad import VAD, SpeechStart, VADEvent

__all__ = ["BatchRecognizeStream", "BatchSTT", "Clip"]


@dataclass(frozen=True, slots=True)
class Clip:
    """What the recogniser heard in one segment: ``text`` (empty: nothing) and its
    ``confidence`` in [0, 1] (1.0 when the recogniser gives none)."""

    text: str
    confidence: float = 1.0


class BatchSTT(STT):
    """Streaming STT over a recogniser of whole clips (see the module docstring).

    Args:
        sample_rate: The rate :meth:`transcribe` takes.
        deadlines: ``final`` bounds each segment's request, retries included.
        vad: Builds one VAD per stream that cuts segments at the end of speech
            (None: only ``flush()`` and ``end_input()`` cut).
        min_segment: Shorter segments are not sent (seconds).
        max_segment: A longer segment is cut and sent (seconds).
        max_retries: Retries of a request after a retryable failure.
        backoff: The waits between retries.

    Raises:
        ConfigError: an option out of range.
    """

    speech_only: ClassVar[bool] = True

    def __init__(
        self,
        *,
        sample_rate: int,
        deadlines: STTDeadlines | None = None,
        vad: Callable[[], VAD] | None = None,
        min_segment: float = 0.1,
        max_segment: float = 30.0,
        max_retries: int = 2,
        backoff: Backoff | None = None,
    ) -> None:
        if not isinstance(sample_rate, int) or sample_rate < 8000:
            raise ConfigError(f"sample_rate must be an int >= 8000, got {sample_rate!r}")
        if not isinstance(min_segment, int | float) or min_segment < 0:
            raise ConfigError("min_segment must be >= 0 seconds")
        if not isinstance(max_segment, int | float) or max_segment <= max(min_segment, 0.5):
            raise ConfigError("max_segment must be > 0.5 s and above min_segment")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError("max_retries must be an int >= 0")
        if vad is not None and not callable(vad):
            raise ConfigError("vad must be a callable that builds a VAD (or None)")
        super().__init__(deadlines=deadlines)
        self._rate = sample_rate
        self.vad_factory = vad
        self.min_segment = float(min_segment)
        self.max_segment = float(max_segment)
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self.requests = 0
        """Requests sent so far (retries included)."""

    @property
    def sample_rate(self) -> int:
        """The rate :meth:`transcribe` takes."""
        return self._rate

    @abstractmethod
    async def transcribe(self, pcm: bytes) -> Clip:
        """Recognise one segment (int16 mono PCM at :attr:`sample_rate`).

        Raise a typed ``ProviderError`` on failure (``retryable`` when a new attempt may
        succeed). The caller bounds the call with ``deadlines.final`` and cancels it on
        close, so it needs no deadline of its own.
        """

    def _new_stream(self, generation: int) -> RecognizeStream:
        return BatchRecognizeStream(self, generation)


class BatchRecognizeStream(RecognizeStream):
    """One recognition over a :class:`BatchSTT`: one request per segment."""

    def __init__(self, stt: BatchSTT, generation: int) -> None:
        self._stt = stt
        self._vad = stt.vad_factory() if stt.vad_factory is not None else None
        self._bps = stt.sample_rate * 2
        self._audio = bytearray()  # at the recogniser's rate, from ``_audio_start``
        self._audio_start = 0.0  # stream seconds of ``_audio[0]``
        self._speech_start: float | None = None  # the VAD's speech in progress (stream s)
        self._utterance = 0
        super().__init__(
            provider=stt.provider,
            generation=generation,
            owner=stt._tasks,
            close_timeout=stt.deadlines.close,
        )

    @property
    def _end(self) -> float:
        return self._audio_start + len(self._audio) / self._bps

    async def _run(self) -> None:
        stt = self._stt
        converter = AudioConverter(stt.sample_rate, 1)
        while True:
            item = await self._mailbox.recv()  # only the caller's audio is waited for unbounded
            if isinstance(item, AudioInput):
                self._audio += converter.process(item.frame).data
                if self._vad is not None:
                    await self._heard(self._vad.process(item.frame))
                    if self._speech_start is None:
                        self._drop_silence()
                start = self._open_start()
                if start is not None and self._end - start >= stt.max_segment:
                    await self._segment(start, self._end)
                    if self._speech_start is not None:
                        self._speech_start = self._end  # the speech goes on
            elif isinstance(item, FlushInput | EndInput):
                answered = False
                if isinstance(item, FlushInput):
                    self._took_flush()
                    answered = not self._flush_pending  # no later flush waits behind it
                self._audio += converter.flush().data
                if self._vad is not None and isinstance(item, EndInput):
                    await self._heard(self._vad.flush())
                start = self._open_start()
                emitted = False
                if start is not None:
                    emitted = await self._segment(start, self._end, flushed=answered)
                if answered and not emitted:
                    self._emit(
                        Transcript(
                            "", True, self._until, self._until, 0.0, 0, self.generation, True
                        )
                    )
                if self._speech_start is not None:
                    self._speech_start = self._end  # the VAD still hears the same speech
                if isinstance(item, EndInput):
                    return

    async def _heard(self, events: list[VADEvent]) -> None:
        for ev in events:
            if isinstance(ev, SpeechStart):
                self._speech_start = ev.time
            else:
                self._speech_start = None
                await self._segment(ev.start, ev.time)

    def _open_start(self) -> float | None:
        """Where the segment open now begins (stream seconds; None: none is open)."""
        if self._vad is None:
            return self._audio_start
        return self._speech_start

    def _drop_silence(self) -> None:
        """Keep only the VAD's padding of silence before speech."""
        assert self._vad is not None
        keep = round((self._vad.options.padding + 0.1) * self._bps) // 2 * 2
        if len(self._audio) > keep:
            cut = len(self._audio) - keep
            del self._audio[:cut]
            self._audio_start += cut / self._bps

    async def _segment(self, start: float, end: float, *, flushed: bool = False) -> bool:
        """Transcribe the audio from ``start`` to ``end`` (stream seconds) and forget it;
        whether a final was emitted (marked ``flushed`` when it answers a flush)."""
        start = max(start, self._audio_start)
        end = min(end, self._end)
        lo = round((start - self._audio_start) * self._bps) // 2 * 2
        hi = round((end - self._audio_start) * self._bps) // 2 * 2
        pcm = bytes(self._audio[lo:hi])
        del self._audio[:hi]
        self._audio_start += hi / self._bps
        if len(pcm) / self._bps < max(self._stt.min_segment, 1 / self._bps):
            return False
        clip = await self._request(pcm)
        text = clip.text.strip()
        if not text:
            return False
        self._emit(
            Transcript(
                text,
                True,
                start,
                end,
                min(1.0, max(0.0, clip.confidence)),
                self._utterance,
                self.generation,
                flushed,
            )
        )
        self._utterance += 1
        return True

    async def _request(self, pcm: bytes) -> Clip:
        """One segment's request, retried within the ``final`` deadline."""
        stt = self._stt
        loop = asyncio.get_running_loop()
        timeout = stt.deadlines.final
        deadline = loop.time() + timeout
        attempt = 0
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    stt.requests += 1
                    try:
                        return await stt.transcribe(pcm)
                    except ProviderError as exc:
                        wait = retry_delay(
                            exc,
                            delivered=False,
                            attempt=attempt,
                            max_retries=stt.max_retries,
                            max_wait=stt.backoff.cap,
                            backoff=stt.backoff,
                            budget=deadline - loop.time(),
                        )
                        if wait is None:
                            raise
                        attempt += 1
                        await asyncio.sleep(wait)
        except TimeoutError:
            raise ProviderTimeoutError(
                "no transcript for the segment",
                provider=self.provider,
                stage="final",
                timeout=timeout,
                hint="the recogniser did not answer in time (retries included)",
            ) from None
