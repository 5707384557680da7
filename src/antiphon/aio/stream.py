"""``ProviderStream``: what every provider stream shares (TTS, STT, LLM).

Output on a :class:`~antiphon.aio.channel.Channel`, one owned task that drives the
provider, and exactly one terminal state — completed, cancelled or failed with a typed
:class:`~antiphon.errors.ProviderError` — whatever the task does. Iterate the stream for
its output: iteration ends when it completes or is cancelled, and raises the typed error
when it failed (after what came before the failure).

:class:`InputStream` adds the caller's side of a streaming request: a mailbox the task
reads in order, and ``end_input``. :class:`ProviderService` is the service that owns
such streams.

Both queues are bounded (DESIGN rule 13): the output holds at most
:attr:`ProviderStream.max_output` items with the ``FAIL`` policy — a consumer that falls
that far behind fails the stream with a typed error (stage ``output``) instead of
growing memory; the mailbox holds at most :attr:`InputStream.max_input` inputs with the
``FAIL`` policy — a provider that falls that far behind its input fails the stream
(stage ``input``), and the push that overflowed raises ``StreamClosedError``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

from antiphon.aio.channel import Channel, Overflow
from antiphon.aio.tasks import TaskOwner
from antiphon.errors import ChannelFull, ProviderError, StreamClosedError

__all__ = ["InputStream", "ProviderService", "ProviderStream", "StreamState"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class StreamState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class ProviderStream(ABC, Generic[T]):
    """Output of type ``T``, one owned task, exactly one terminal state.

    A subclass implements :meth:`_run` (return when complete, raise ``ProviderError`` on
    failure), emits with ``self._out.send_nowait``, and calls :meth:`_launch` at the end of
    its ``__init__``. ``_on_terminal`` and ``_cleanup`` are optional hooks.
    """

    _task: asyncio.Task[None]
    max_output: ClassVar[int] = 8192
    """Items the output holds for a consumer that has not read them (policy: fail)."""

    def __init__(self, *, provider: str, generation: int, close_timeout: float) -> None:
        self.provider = provider
        self.generation = generation
        self._close_timeout = close_timeout
        self._out: Channel[T] = Channel(
            self.max_output, Overflow.FAIL, name=f"{provider} stream output"
        )
        self._state = StreamState.RUNNING
        self._error: ProviderError | None = None
        self._terminal = asyncio.Event()

    def _launch(self, owner: TaskOwner, name: str) -> None:
        self._task = owner.spawn(self._main(), name=name)

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
        """Wait for the terminal state (without consuming the output)."""
        await self._terminal.wait()
        return self._state

    # -- control
    def cancel(self) -> None:
        """Stop now: no more output is yielded; the provider is told in the background."""
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
    def __aiter__(self) -> AsyncIterator[T]:
        return self

    def __anext__(self) -> Awaitable[T]:
        # The channel's own awaitable, not a coroutine around it: one frame fewer per
        # item on every stream's consumer path.
        return self._out.__anext__()

    # -- for subclasses
    def _finish(self, state: StreamState, error: ProviderError | None = None) -> bool:
        """Enter a terminal state; only the first call counts."""
        if self._state is not StreamState.RUNNING:
            return False
        self._state = state
        self._error = error
        if state is StreamState.CANCELLED:
            self._out.clear()
        self._out.close(error)
        self._on_terminal(state, error)
        self._terminal.set()
        return True

    def _on_terminal(self, state: StreamState, error: ProviderError | None) -> None:
        """Runs once, as the terminal state is entered (metrics, closing a mailbox)."""

    async def _main(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            self._finish(StreamState.CANCELLED)
            raise
        except Exception as exc:
            self._finish(StreamState.FAILED, self._typed(exc))
        else:
            self._finish(StreamState.COMPLETED)
        finally:
            try:
                await self._cleanup()
            except Exception:  # the terminal state is set: a cleanup bug is only logged
                log.exception("%s stream cleanup failed", self.provider)

    def _typed(self, exc: Exception) -> ProviderError:
        """The typed error the stream fails with when its work raised ``exc`` (call it in
        the ``except`` block: an unexpected error is logged with its traceback)."""
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, ChannelFull):
            return ProviderError(
                f"the consumer fell behind: {exc.maxsize} items unread",
                provider=self.provider,
                stage="output",
                hint="read the stream as it is produced, or cancel it",
            )
        log.exception("%s stream failed unexpectedly", self.provider)
        return ProviderError(f"unexpected error: {exc!r}", provider=self.provider, stage="stream")

    async def _cleanup(self) -> None:
        """Release what the stream holds (runs after the terminal state, even on cancel)."""

    @abstractmethod
    async def _run(self) -> None:
        """Drive the provider; return when complete, raise ``ProviderError`` on failure."""


class _Mailbox(Channel[object]):
    """An input stream's mailbox: overflowing it fails the stream (stage ``input``).

    It knows its stream weakly: the stream holds it, and a strong reference back would be
    a cycle per stream, left for a full garbage collection.
    """

    def __init__(self, stream: InputStream[Any], maxsize: int) -> None:
        super().__init__(maxsize, Overflow.FAIL, name=f"{stream.provider} stream input")
        self._stream = weakref.ref(stream)

    def send_nowait(self, item: object) -> None:
        try:
            super().send_nowait(item)
        except ChannelFull as exc:
            stream = self._stream()
            error = exc if stream is None else stream._overflowed(exc)
            raise StreamClosedError(f"cannot send: {error}") from exc

    def receiver_waiting(self) -> bool:
        """The stream's task waits for its next input (so nothing is queued).

        Then an input the stream takes at once, past the mailbox, keeps its order: every
        input sent before it has been taken, and the task is not busy with one. A waiting
        receiver's future is listed until an item or the close wakes it, which empties
        the list at once; so a listed future means an empty mailbox. (A receiver
        cancelled while it waits stays listed until its task runs: an input taken then
        is taken before whatever the task does next, as if pushed a moment earlier.)
        """
        return bool(self._getters)


class InputStream(ProviderStream[T]):
    """A stream the caller feeds: inputs go to ``_mailbox``, read in order by the task."""

    max_input: ClassVar[int] = 4096
    """Inputs the mailbox holds for a provider that has not taken them (policy: fail)."""

    def __init__(self, *, provider: str, generation: int, close_timeout: float) -> None:
        super().__init__(provider=provider, generation=generation, close_timeout=close_timeout)
        self._mailbox = _Mailbox(self, self.max_input)
        self._input_ended = False

    def _overflowed(self, exc: ChannelFull) -> ProviderError:
        error = ProviderError(
            f"the provider fell behind its input: {exc.maxsize} inputs queued",
            provider=self.provider,
            stage="input",
            hint="the service does not keep up; check its load and the network",
            retryable=True,
        )
        if self._finish(StreamState.FAILED, error):
            self._task.cancel()
        return self._error or error

    def _check_input(self, what: str) -> None:
        if self._state is not StreamState.RUNNING:
            detail = f": {self._error}" if self._error else ""
            raise StreamClosedError(f"cannot {what}: the stream is {self._state.value}{detail}")
        if self._input_ended:
            raise StreamClosedError(f"cannot {what} after end_input()")

    def _end_input(self, marker: object) -> None:
        self._check_input("end_input")
        self._input_ended = True
        self._mailbox.send_nowait(marker)

    def _on_terminal(self, state: StreamState, error: ProviderError | None) -> None:
        self._mailbox.close()


S = TypeVar("S", bound="ProviderStream[Any]")


class ProviderService(ABC, Generic[S]):
    """What every streaming service shares (TTS, STT, LLM): it owns its streams' tasks.

    ``aclose()`` cancels live streams, stops every task within :meth:`_close_timeout`
    and then releases the plugin's resources (:meth:`_aclose_resources`); it is
    idempotent and safe from several tasks at once. Subclasses open streams with
    :meth:`_open`, which refuses once closed.
    """

    provider: ClassVar[str] = "service"
    kind: ClassVar[str] = "service"
    """How error messages name the service: "TTS", "STT", "LLM"."""

    def __init__(self) -> None:
        self._tasks = TaskOwner(f"{self.kind.lower()}:{self.provider}")
        self._streams: set[S] = set()
        self._closed = False
        self._close_lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def _open(self, make: Callable[[], S]) -> S:
        """A new stream from ``make()``, tracked until its task ends (then let go of: an
        ended stream holds its service, which would hold it, a cycle)."""
        if self._closed:
            raise StreamClosedError(f"{self.provider} {self.kind} is closed; create a new one")
        s = make()
        self._streams.add(s)
        s._task.add_done_callback(lambda _: self._streams.discard(s))
        return s

    @property
    def active_streams(self) -> int:
        """Streams whose task has not ended yet."""
        return sum(1 for s in self._streams if not s._task.done())

    async def aclose(self) -> None:
        """Cancel live streams, stop every task and release resources; idempotent."""
        async with self._close_lock:
            if self._closed and not self._tasks:
                return
            self._closed = True
            for s in list(self._streams):
                s.cancel()
            await self._tasks.aclose(self._close_timeout())
            await self._aclose_resources()

    @abstractmethod
    def _close_timeout(self) -> float:
        """How long closing may wait for the streams' tasks."""

    async def _aclose_resources(self) -> None:
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
