"""The streaming TTS contract: ``TTS.stream()`` → ``SynthesisStream``.

A stream takes text (``push_text``, ``flush``, ``end_input``), yields ``AudioFrame``s, and
reaches exactly one terminal state — completed, cancelled or failed with a typed error —
within its deadlines, whatever the provider does. Every phase that waits on the provider
is bounded by :class:`TTSDeadlines`; only waiting for the caller's own text is not.

Plugins implement :meth:`SynthesisStream._run`: a single loop that owns the protocol
state and takes every input — the caller's text and the server's messages — from one
mailbox, so no flag is ever shared between tasks.

Word timings travel beside the audio, not in it: :attr:`SynthesisStream.words` is
``None`` for a provider that sends none (nothing is invented here; a consumer that wants
timings estimates them itself and says so), and otherwise a list of
:class:`WordTiming` (seconds from the start of the stream's audio) that grows as the
provider's timing messages arrive — with or shortly after the audio they describe.
"""

from __future__ import annotations

import functools
import logging
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

from antiphon import metrics
from antiphon.aio.stream import InputStream, ProviderService
from antiphon.aio.stream import StreamState as StreamState
from antiphon.aio.tasks import TaskOwner
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError
from antiphon.protocols.tts_session import WordTiming

__all__ = [
    "TTS",
    "EndInput",
    "FlushInput",
    "FlushSegmentStream",
    "StreamState",
    "SynthesisStream",
    "TTSDeadlines",
    "TextInput",
    "WordTiming",
]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=256)
def metric_child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: every stream counts itself in a few
    metrics, and each ``labels()`` takes a lock and builds a key (a few µs a stream)."""
    return metric.labels(*labels)


@dataclass(frozen=True, slots=True)
class TTSDeadlines:
    """Every wait on a TTS provider, in seconds.

    ``connect``: open a connection. ``first_audio``: from a flush to its first audio.
    ``idle``: gap between audio chunks (or until the done marker) while audio is owed.
    ``clear``: from a cancel's Clear to the server's acknowledgement, after which the
    connection is closed instead of reused. ``close``: closing a connection or a stream.
    """

    connect: float = 5.0
    first_audio: float = 10.0
    idle: float = 5.0
    clear: float = 2.0
    close: float = 2.0

    def __post_init__(self) -> None:
        for name in ("connect", "first_audio", "idle", "clear", "close"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"TTSDeadlines.{name} must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class TextInput:
    text: str


@dataclass(frozen=True, slots=True)
class FlushInput:
    pass


@dataclass(frozen=True, slots=True)
class EndInput:
    pass


class SynthesisStream(InputStream[AudioFrame]):
    """One synthesis: text in, ``AudioFrame``s out, exactly one terminal state.

    Use as ``async with tts.stream() as s`` so ``aclose()`` runs; iterate it for audio.
    Iteration ends when the stream completes or is cancelled and raises the typed error
    when it failed (after yielding the audio received before the failure).

    ``words``: the provider's word timings so far (see the module docstring), ``None``
    when its service sends none.
    """

    def __init__(
        self,
        *,
        provider: str,
        sample_rate: int,
        channels: int,
        generation: int,
        owner: TaskOwner,
        close_timeout: float,
        word_timings: bool = False,
    ) -> None:
        super().__init__(provider=provider, generation=generation, close_timeout=close_timeout)
        self.sample_rate = sample_rate
        self.channels = channels
        self.words: list[WordTiming] | None = [] if word_timings else None
        self.audio_seconds = 0.0
        self._audio_counted = 0.0  # the part of audio_seconds already in the metric
        self._audio_metric = metric_child(metrics.TTS_AUDIO_SECONDS, provider)
        self._launch(owner, f"{provider}-stream")

    # -- input
    def push_text(self, text: str) -> None:
        """Append text (LLM tokens as they come); spoken at the next flush or end."""
        if not isinstance(text, str):
            raise ConfigError(f"push_text() takes str, got {type(text).__name__}")
        self._check_input("push_text")
        if text:
            self._mailbox.send_nowait(TextInput(text))

    def flush(self) -> None:
        """Speak what was pushed so far without ending the input."""
        self._check_input("flush")
        self._mailbox.send_nowait(FlushInput())

    def end_input(self) -> None:
        """No more text: the stream completes once all its audio has arrived."""
        self._end_input(EndInput())

    # -- output
    def __aiter__(self) -> AsyncIterator[AudioFrame]:
        """The output channel itself: ``async for`` takes each frame from the channel's
        own ``__anext__``, with no call of the stream's in between (once per chunk)."""
        return self._out

    async def collect(self) -> AudioFrame:
        """All audio of the stream as one frame (raises the stream's error on failure)."""
        chunks = [f.data async for f in self]
        return AudioFrame(b"".join(chunks), self.sample_rate, self.channels, self.generation)

    # -- for plugins
    def _emit(self, frame: AudioFrame) -> None:
        if self._state is StreamState.RUNNING and frame.data:
            self.audio_seconds += frame.duration
            self._out.send_nowait(frame)

    def _emit_words(self, words: tuple[WordTiming, ...], offset: float) -> None:
        """Add the provider's ``words``, shifted by ``offset`` to stream-relative time."""
        if self.words is not None and self._state is StreamState.RUNNING:
            self.words.extend(w.shifted(offset) if offset else w for w in words)

    def _count_audio(self) -> None:
        """Add the audio emitted since the last call to the audio-seconds metric.

        Called per segment (a plugin's done marker) and at the terminal state, not per
        frame: the metric's lock and bookkeeping cost more than the frame itself.
        """
        seconds = self.audio_seconds - self._audio_counted
        if seconds:
            self._audio_counted = self.audio_seconds
            self._audio_metric.inc(seconds)

    def _on_terminal(self, state: StreamState, error: ProviderError | None) -> None:
        super()._on_terminal(state, error)
        self._count_audio()
        metric_child(metrics.TTS_STREAMS, self.provider, state.value).inc()
        if error is not None:
            metrics.TTS_ERRORS.labels(self.provider, type(error).__name__).inc()


class FlushSegmentStream(SynthesisStream):
    """A synthesis stream that speaks its text one flush segment at a time.

    For engines that take whole text, not a token stream (in-process voices): the text
    pushed up to each ``flush()`` or ``end_input()`` is joined, stripped and handed to
    :meth:`_speak` in order; the stream completes after the last segment is spoken.
    """

    async def _run(self) -> None:
        pending: list[str] = []
        async for item in self._mailbox:
            if isinstance(item, TextInput):
                pending.append(item.text)
            elif isinstance(item, FlushInput | EndInput):
                text = "".join(pending).strip()
                pending.clear()
                if text:
                    await self._speak(text)
                if isinstance(item, EndInput):
                    return

    @abstractmethod
    async def _speak(self, text: str) -> None:
        """Speak one non-empty segment (emit its audio); raise ``ProviderError`` on failure."""


class TTS(ProviderService[SynthesisStream]):
    """A streaming text-to-speech service.

    Owns every task its streams start; ``aclose()`` cancels live streams and closes
    connections within its deadline. Use ``async with`` or call ``aclose()``.

    ``word_timings``: the service sends word timings as configured (its streams'
    :attr:`SynthesisStream.words` is a list, else ``None``); a plugin sets it.
    """

    provider: ClassVar[str] = "tts"
    kind: ClassVar[str] = "TTS"
    word_timings: bool = False

    def __init__(
        self, *, sample_rate: int, channels: int = 1, deadlines: TTSDeadlines | None = None
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.channels = channels
        self.deadlines = deadlines or TTSDeadlines()

    def stream(self, *, generation: int = 0) -> SynthesisStream:
        """Open a synthesis stream (must be called inside the event loop)."""
        return self._open(lambda: self._new_stream(generation))

    def synthesize(self, text: str, *, generation: int = 0) -> SynthesisStream:
        """One-shot: a stream with ``text`` pushed and input ended; iterate it for audio."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("synthesize() needs non-empty text to speak")
        s = self.stream(generation=generation)
        s.push_text(text)
        s.end_input()
        return s

    async def prewarm(self) -> None:
        """Open what the first stream needs ahead of time (no-op by default)."""

    def _close_timeout(self) -> float:
        return self.deadlines.close + self.deadlines.clear

    @abstractmethod
    def _new_stream(self, generation: int) -> SynthesisStream:
        """Create the plugin's stream."""
