"""``CallBridge``: what every transport's call shares, whatever its wire format.

One call connects one agent session to one socket with two owned tasks: a reader (the
peer's messages, in order) and a sender (everything the peer gets, in order, from one
queue). The session's paced output is moved into that queue by a loop callback, not a
task (:meth:`~antiphon.audio.OutputTrack.poll_each`/``notify``: a timer at each frame's
release time), so an agent frame crosses one task hop from its producer to the socket;
the callback keeps pulling at the pace of the audio while a send is stuck, so the queue's
audio policies below hold. (A subclass that overrides :meth:`CallBridge._pump_audio`
gets it run as a third task instead, as Twilio's playout-mark flow control does.)
Events are queued by a synchronous session listener the moment the session emits them,
so an interruption's notice always precedes any audio of the next turn.

Every send has a deadline of ``send_timeout``, kept by one timer per call re-armed
lazily: each send only moves the due time, and the timer, when it fires, either ends
the call (the send in flight is past due: 1008 "the peer stopped reading"), is set
again for the current due time, or lapses while nothing is being sent.
The first task to end (or :meth:`end`) ends the call; the session is closed and the
socket closed with the call's code, all bounded.

The outgoing queue is bounded and knows audio from messages (DESIGN rules 6, 13):

- audio (what :meth:`CallBridge._audio_out` queues) holds at most
  ``max_queued_audio`` frames, policy **drop oldest** (a slow peer hears the newest
  audio; :attr:`CallBridge.audio_dropped` counts the rest); on ``Interrupted`` every
  queued audio frame is dropped at once, before the subclass queues its notice, so a
  slow peer's backlog never delays the barge-in ``clear``;
- messages (events, ``clear``, marks) keep their order among themselves and with the
  audio; at most ``max_queued_messages`` wait, policy **fail**: the call ends with 1008.

Nursery semantics (rule 12): a task of the call that fails ends it with 1011, and so
does the session failing (``StateChanged`` to ``CLOSED`` with ``session.error`` set):
what was queued for the peer (the error event) is sent within ``send_timeout``, then
the socket is closed with 1011 and the reason. If :meth:`CallBridge.run` is cancelled,
the call still closes (session, then socket with 1001), then the cancellation is
re-raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from antiphon.agent.events import AgentEvent, AgentState, Interrupted, StateChanged
from antiphon.agent.session import AgentSession
from antiphon.aio.channel import Channel, ChannelClosed, Overflow
from antiphon.aio.tasks import reap, shielded_wait
from antiphon.errors import AntiphonError, StreamClosedError

__all__ = [
    "GOING_AWAY",
    "INTERNAL",
    "NORMAL",
    "POLICY",
    "RATE_LIMITED",
    "TOO_BIG",
    "TRY_AGAIN",
    "UNAUTHORIZED",
    "CallBridge",
    "CallEnded",
    "DirectWire",
    "WebSocketLike",
    "close_reason",
]

log = logging.getLogger(__name__)
M = TypeVar("M")

NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008
TOO_BIG = 1009
INTERNAL = 1011
TRY_AGAIN = 1013
UNAUTHORIZED = 4401
RATE_LIMITED = 4429


class WebSocketLike(Protocol):
    """The little of a WebSocket a bridge needs."""

    async def receive(self) -> bytes | str | None:
        """The next message; ``None`` once the peer has gone."""
        ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = NORMAL, reason: str = "") -> None: ...


class DirectWire(Protocol):
    """A socket's way around its server's queues, where the server offers one (the
    ``"antiphon.direct"`` extension of :mod:`antiphon.server.ws_protocol`)."""

    receiver: Callable[[bytes | str], bool] | None
    """Takes a message as it is parsed; False leaves it for ``receive``."""

    def send_now(self, data: bytes | str) -> bool:
        """Write one message now if nothing holds it back; False: send it the usual way."""
        ...


def close_reason(text: str) -> str:
    """``text`` cut to the 123 bytes of UTF-8 a WebSocket close reason may hold."""
    data = text.encode("utf-8")
    if len(data) <= 123:
        return text
    return data[:120].decode("utf-8", "ignore") + "..."


class CallEnded(AntiphonError):
    """Why a call ends: the close code and reason sent to the peer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class CallBridge(ABC, Generic[M]):
    """One call between ``session`` and ``ws``; subclasses speak a wire format.

    Subclasses implement :meth:`_read`, :meth:`_audio_out`, :meth:`_on_event` and
    :meth:`_send_one`, and queue outgoing messages of type ``M`` with :meth:`_queue`.
    ``max_queued_audio``/``max_queued_messages`` bound the outgoing queue (see the
    module docstring).
    """

    name = "call"

    def __init__(
        self,
        session: AgentSession,
        ws: WebSocketLike,
        *,
        send_timeout: float,
        max_queued_audio: int = 250,
        max_queued_messages: int = 1000,
    ) -> None:
        if max_queued_audio < 1 or max_queued_messages < 1:
            raise ValueError("the outgoing queue bounds must be >= 1")
        self.session = session
        self.ws = ws
        self.send_timeout = send_timeout
        self.max_queued_audio = max_queued_audio
        self.max_queued_messages = max_queued_messages
        # (is_audio, message); the two bounds are kept by _queue, so the channel's own
        # bound (their sum) is never reached
        self._out: Channel[tuple[bool, M]] = Channel(
            max_queued_audio + max_queued_messages, Overflow.FAIL, name=f"{self.name} outbox"
        )
        self._audio_queued = 0
        self._in_audio_out = False
        self.audio_dropped = 0
        """Audio frames dropped: by an interruption, or the oldest for a slow peer."""
        self._ended: asyncio.Future[CallEnded] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._pulling = False  # the output callback is live
        self._sending = False  # the sender holds an item (its send may be waiting)
        self._direct: DirectWire | None = getattr(ws, "direct", None)
        self._reader_busy = False  # the reader acts on a message: the direct path waits
        # the send deadline: when the send in flight is due (None: none in flight), the
        # one timer watching it, and whether it fired on a send past due
        self._send_due: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._send_expired = False

    def end(self, code: int, reason: str) -> None:
        """End the call from outside (e.g. a server shutting down)."""
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(CallEnded(code, reason))

    async def run(self) -> int:
        """Run the call until it ends; the session is closed; returns the close code.

        If cancelled, the call is still closed (bounded), then the cancellation raised.
        """
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        remove = self.session.on_event(self._on_session_event)
        self._hello()
        self._sender = loop.create_task(self._send(), name=f"{self.name}-send")
        tasks = [loop.create_task(self._read(), name=f"{self.name}-read"), self._sender]
        if type(self)._pump_audio is not CallBridge._pump_audio:
            tasks.append(loop.create_task(self._pump_audio(), name=f"{self.name}-audio"))
        else:
            self._pulling = True
            self._pull_audio()
        for t in tasks:
            t.add_done_callback(self._task_done)
        if self._direct is not None and self.takes_direct:
            self._direct.receiver = self._take
        if self.session.state is AgentState.CLOSED:  # it ended before the call began
            self._session_closed()
        try:
            ended = await self._ended
        except asyncio.CancelledError:
            ended = CallEnded(GOING_AWAY, "the call was cancelled")
            await shielded_wait(loop.create_task(self._close(tasks, remove, ended)))
            raise
        await shielded_wait(loop.create_task(self._close(tasks, remove, ended)))
        return ended.code

    async def _close(
        self, tasks: list[asyncio.Task[None]], remove: Callable[[], None], ended: CallEnded
    ) -> None:
        """Stop the tasks, close the session, close the socket with the code (bounded)."""
        remove()
        if self._direct is not None:
            self._direct.receiver = None  # what the peer sends now is not read
        self._stop_pulling()
        if self.session.error is not None:
            await self._finish_sending()  # the peer gets the error event first
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=self.send_timeout)
        for t in tasks:
            reap(t)  # its frames hold this bridge, which holds the task: no cycle kept
        await self.session.aclose()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.send_timeout):
                await self.ws.close(ended.code, close_reason(ended.reason))

    def _on_session_event(self, event: AgentEvent) -> None:
        if isinstance(event, Interrupted):
            self._drop_queued_audio()  # before the subclass queues its notice
        try:
            self._on_event(event)
        finally:
            if isinstance(event, StateChanged) and event.new is AgentState.CLOSED:
                self._session_closed()

    def _session_closed(self) -> None:
        error = self.session.error
        if error is not None:
            self.end(INTERNAL, f"the agent failed: {error}")
        else:
            self.end(NORMAL, "the agent ended the call")

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._failed(exc, task.get_name())
        elif task is not self._sender:
            self.end(NORMAL, "")

    def _failed(self, exc: BaseException, what: str) -> None:
        """End the call for ``what``'s error: with its code if it is a
        :class:`CallEnded`, else 1011 (rule 12)."""
        if isinstance(exc, CallEnded):
            self.end(exc.code, exc.reason)
        else:
            log.warning("%s: %s failed: %r", self.name, what, exc)
            self.end(INTERNAL, "internal error")

    def _queue(self, item: M, *, audio: bool | None = None) -> None:
        """Queue ``item`` for the peer, in order.

        ``audio``: whether it is agent audio (dropped on interruption, oldest dropped
        beyond ``max_queued_audio``); by default, what is queued from within
        :meth:`_audio_out` is audio and everything else a message. Beyond
        ``max_queued_messages`` queued messages the call ends (1008).
        """
        if self._out.closed:
            return
        is_audio = self._in_audio_out if audio is None else audio
        if not self._sending and not self._out.qsize() and self._send_now(item):
            return  # nothing before it: written now, without a wake-up of the sender
        if is_audio:
            if self._audio_queued >= self.max_queued_audio:
                self._audio_queued -= self._out.discard(lambda e: e[0], limit=1)
                self.audio_dropped += 1
            self._audio_queued += 1
        elif self._out.qsize() - self._audio_queued >= self.max_queued_messages:
            self.end(POLICY, "the peer stopped reading")
            return
        with contextlib.suppress(ChannelClosed):
            self._out.send_nowait((is_audio, item))

    def _drop_queued_audio(self) -> int:
        """Drop every queued audio frame at once, keeping messages in order; return how
        many were dropped. Called on ``Interrupted`` (subclasses may call it too)."""
        n = self._out.discard(lambda e: e[0])
        self._audio_queued -= n
        self.audio_dropped += n
        return n

    async def _finish_sending(self) -> None:
        """Send what is queued (bounded), then nothing more."""
        self._out.close()
        if self._sender is not None:
            await asyncio.wait([self._sender], timeout=self.send_timeout)

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for is_audio, item in self._out:
                self._sending = True
                if is_audio:
                    self._audio_queued -= 1
                due = self._send_due = loop.time() + self.send_timeout
                timer = self._watchdog
                if timer is None or timer.when() > due:
                    if timer is not None:
                        timer.cancel()
                    self._watchdog = loop.call_at(due, self._on_watchdog)
                try:
                    await self._send_one(item)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._send_expired and task is not None and task.uncancel() == 0:
                        raise CallEnded(POLICY, "the peer stopped reading") from None
                    raise
                except Exception as exc:  # the socket is gone: the call is over
                    raise CallEnded(NORMAL, f"send failed: {exc!r}") from None
                finally:
                    self._send_due = None
                    self._sending = False
        finally:
            timer, self._watchdog = self._watchdog, None
            if timer is not None:
                timer.cancel()

    def _on_watchdog(self) -> None:
        """The send deadline's one timer: end a send past due, else follow the due time."""
        self._watchdog = None
        due = self._send_due
        if due is None or self._sender is None:
            return  # nothing in flight: the next send arms it again
        loop = asyncio.get_running_loop()
        if loop.time() >= due:
            self._send_expired = True
            self._sender.cancel()
        else:
            self._watchdog = loop.call_at(due, self._on_watchdog)

    def _hello(self) -> None:
        """Queue what the peer gets first (nothing by default)."""

    def _take(self, message: bytes | str) -> bool:
        """A message from the socket's direct path, as the reader would take it (see
        :attr:`takes_direct`); False (left for the reader, in order) while the reader
        acts on an earlier message or a message of this kind is the reader's."""
        if self._reader_busy or not self._takes_now(message):
            return False
        ended = self._ended
        if ended is None or ended.done():
            return True  # the call is ending: what the peer sends now is not read
        try:
            self._handle_now(message)
        except Exception as exc:  # as the reader task failing would
            self._failed(exc, "the reader")
        return True

    takes_direct = False
    """Whether the subclass takes messages from a socket's direct path
    (:class:`DirectWire`): it implements :meth:`_takes_now` and :meth:`_handle_now`."""

    def _takes_now(self, message: bytes | str) -> bool:
        """Whether ``message`` may be handled in the socket's callback (by default, none)."""
        return False

    def _handle_now(self, message: bytes | str) -> None:
        """Check and handle one message as the reader would (synchronously; raise
        :class:`CallEnded` to end the call)."""
        raise NotImplementedError

    def _pull_audio(self) -> None:
        """Queue every frame of the session's output that is due, then ask the output to
        call again (a loop callback: at the next release time, or when audio comes)."""
        if not self._pulling:
            return
        output = self.session.output
        try:
            self._in_audio_out = True
            try:
                output.poll_each(self._audio_out)
            finally:
                self._in_audio_out = False
        except StreamClosedError:
            self._pulling = False  # the call ends by the reader or end()
            return
        except Exception as exc:  # as a failed task of the call would (rule 12)
            self._pulling = False
            log.warning("%s: the audio output failed: %r", self.name, exc)
            self.end(INTERNAL, "internal error")
            return
        output.notify(self._pull_audio)

    def _stop_pulling(self) -> None:
        if self._pulling:
            self._pulling = False
            self.session.output.cancel_notify()

    async def _pump_audio(self) -> None:
        """The session's output into the queue, as a task: run only when a subclass
        overrides it (the base class uses :meth:`_pull_audio`, without a task)."""
        async for frame in self.session.output:
            self._in_audio_out = True
            try:
                self._audio_out(frame.data, frame.generation)
            finally:
                self._in_audio_out = False
        await asyncio.Future()  # the output closed: the call ends by the reader or end()

    @abstractmethod
    def _audio_out(self, pcm: bytes, generation: int) -> None:
        """Queue one 20 ms frame of agent audio (PCM16 at the session's output rate)."""

    @abstractmethod
    async def _send_one(self, item: M) -> None:
        """Send one queued message."""

    def _send_now(self, item: M) -> bool:
        """Send ``item`` at once, without waiting, if the socket can (nothing is queued
        or in flight when this is called); False: it is queued for the sender. By
        default nothing is sent this way."""
        return False

    @abstractmethod
    async def _read(self) -> None:
        """Take the peer's messages until the call ends (raise :class:`CallEnded`)."""

    @abstractmethod
    def _on_event(self, event: AgentEvent) -> None:
        """Act on a session event as it happens (queue notices; never block)."""
