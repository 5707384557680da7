"""The streaming TTS contract: ``TTS.stream()`` → ``SynthesisStream``.

A stream takes text (``push_text``, ``flush``, ``end_input``), yields ``AudioFrame``s, and
reaches exactly one terminal state — completed, cancelled or failed with a typed error —
within its deadlines, whatever the provider does. Every phase that waits on the provider
is bounded by :class:`TTSDeadlines`; only waiting for the caller's own text is not.

Plugins implement :meth:`SynthesisStream._run`: a single loop that owns the protocol
state and takes every input — the caller's text and the server's messages — from one
mailbox, so no flag is ever shared between tasks.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Self

from antiphon import metrics
from antiphon.aio.channel import Channel, ChannelClosed
from antiphon.aio.tasks import TaskOwner
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError, StreamClosedError

log = logging.getLogger(__name__)


class StreamState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


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


class SynthesisStream(ABC):
    """One synthesis: text in, ``AudioFrame``s out, exactly one terminal state.

    Use as ``async with tts.stream() as s`` so ``aclose()`` runs; iterate it for audio.
    Iteration ends when the stream completes or is cancelled and raises the typed error
    when it failed (after yielding the audio received before the failure).
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
    ) -> None:
        self.provider = provider
        self.sample_rate = sample_rate
        self.channels = channels
        self.generation = generation
        self._close_timeout = close_timeout
        self._mailbox: Channel[object] = Channel()
        self._out: Channel[AudioFrame] = Channel()
        self._state = StreamState.RUNNING
        self._error: ProviderError | None = None
        self._input_ended = False
        self._terminal = asyncio.Event()
        self.audio_seconds = 0.0
        self._audio_metric = metrics.TTS_AUDIO_SECONDS.labels(provider)
        self._task = owner.spawn(self._main(), name=f"{provider}-stream")

    # -- state
    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def error(self) -> ProviderError | None:
        return self._error

    @property
    def done(self) -> bool:
        return self._state is not StreamState.RUNNING

    async def wait(self) -> StreamState:
        """Wait for the terminal state (without consuming audio)."""
        await self._terminal.wait()
        return self._state

    # -- input
    def _check_input(self, what: str) -> None:
        if self._state is not StreamState.RUNNING:
            detail = f": {self._error}" if self._error else ""
            raise StreamClosedError(f"cannot {what}: the stream is {self._state.value}{detail}")
        if self._input_ended:
            raise StreamClosedError(f"cannot {what} after end_input()")

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
        self._check_input("end_input")
        self._input_ended = True
        self._mailbox.send_nowait(EndInput())

    def cancel(self) -> None:
        """Stop now: no more audio is yielded; the provider is told in the background."""
        if self._finish(StreamState.CANCELLED):
            self._task.cancel()

    async def aclose(self) -> None:
        """Cancel if still running and wait (bounded) for the stream's task to end."""
        self.cancel()
        if not self._task.done():
            await asyncio.wait([self._task], timeout=self._close_timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- output
    def __aiter__(self) -> AsyncIterator[AudioFrame]:
        return self

    async def __anext__(self) -> AudioFrame:
        try:
            return await self._out.recv()
        except ChannelClosed:
            raise StopAsyncIteration from None

    async def collect(self) -> AudioFrame:
        """All audio of the stream as one frame (raises the stream's error on failure)."""
        chunks = [f.data async for f in self]
        return AudioFrame(b"".join(chunks), self.sample_rate, self.channels, self.generation)

    # -- for plugins
    def _emit(self, frame: AudioFrame) -> None:
        if self._state is StreamState.RUNNING and frame.data:
            self.audio_seconds += frame.duration
            self._audio_metric.inc(frame.duration)
            self._out.send_nowait(frame)

    def _finish(self, state: StreamState, error: ProviderError | None = None) -> bool:
        """Enter a terminal state; only the first call counts."""
        if self._state is not StreamState.RUNNING:
            return False
        self._state = state
        self._error = error
        if state is StreamState.CANCELLED:
            self._out.clear()
        self._out.close(error)
        self._mailbox.close()
        metrics.TTS_STREAMS.labels(self.provider, state.value).inc()
        if error is not None:
            metrics.TTS_ERRORS.labels(self.provider, type(error).__name__).inc()
        self._terminal.set()
        return True

    async def _main(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            self._finish(StreamState.CANCELLED)
            raise
        except ProviderError as exc:
            self._finish(StreamState.FAILED, exc)
        except Exception as exc:
            log.exception("%s stream failed unexpectedly", self.provider)
            self._finish(
                StreamState.FAILED,
                ProviderError(f"unexpected error: {exc!r}", provider=self.provider, stage="stream"),
            )
        else:
            self._finish(StreamState.COMPLETED)

    @abstractmethod
    async def _run(self) -> None:
        """Drive the synthesis; return when complete, raise ``ProviderError`` on failure."""


class TTS(ABC):
    """A streaming text-to-speech service.

    Owns every task its streams start; ``aclose()`` cancels live streams and closes
    connections within its deadline. Use ``async with`` or call ``aclose()``.
    """

    provider: ClassVar[str] = "tts"

    def __init__(
        self, *, sample_rate: int, channels: int = 1, deadlines: TTSDeadlines | None = None
    ) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.deadlines = deadlines or TTSDeadlines()
        self._tasks = TaskOwner(f"tts:{self.provider}")
        self._streams: set[SynthesisStream] = set()
        self._closed = False
        self._close_lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def stream(self, *, generation: int = 0) -> SynthesisStream:
        """Open a synthesis stream (must be called inside the event loop)."""
        if self._closed:
            raise StreamClosedError(f"{self.provider} TTS is closed; create a new one")
        self._streams = {s for s in self._streams if not s._task.done()}
        s = self._new_stream(generation)
        self._streams.add(s)
        return s

    def synthesize(self, text: str, *, generation: int = 0) -> SynthesisStream:
        """One-shot: a stream with ``text`` pushed and input ended; iterate it for audio."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("synthesize() needs non-empty text to speak")
        s = self.stream(generation=generation)
        s.push_text(text)
        s.end_input()
        return s

    async def prewarm(self) -> None:  # noqa: B027 - optional hook
        """Open what the first stream needs ahead of time (no-op by default)."""

    @property
    def active_streams(self) -> int:
        """Streams whose task has not ended yet."""
        return sum(1 for s in self._streams if not s._task.done())

    async def aclose(self) -> None:
        """Cancel live streams, stop every task and close connections; idempotent."""
        async with self._close_lock:
            if self._closed and not self._tasks:
                return
            self._closed = True
            for s in list(self._streams):
                s.cancel()
            await self._tasks.aclose(self.deadlines.close + self.deadlines.clear)
            await self._aclose_resources()

    async def _aclose_resources(self) -> None:  # noqa: B027 - optional hook
        """Release plugin resources (pools, threads) after every task has ended."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abstractmethod
    def _new_stream(self, generation: int) -> SynthesisStream:
        """Create the plugin's stream."""
