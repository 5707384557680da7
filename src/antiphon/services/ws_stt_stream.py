"""The stream of the WebSocket STT driver: one recognition on its own connection.

Split from :mod:`antiphon.services.ws_stt` (which re-exports it and documents the
driver as a whole): that module holds what a plugin supplies (:class:`WireSession
<antiphon.services.ws_stt.WireSession>`, :class:`WebSocketSTT
<antiphon.services.ws_stt.WebSocketSTT>`), this one the machinery that runs a stream.

How it is built: **one task per stream, and a handler per connection.**

- the connection's handler (:meth:`WsConnection.set_handler
  <antiphon.net.ws.WsConnection.set_handler>`) is called with each server message from
  the protocol callback that parsed it, with no task in between: it feeds the protocol
  machine and delivers the transcripts to the consumer itself, so a transcript's one task
  hop is the consumer's wake-up. It tells the stream's task only what it must act on
  (the recognition is complete, the connection was lost) through the mailbox, tagged with
  the connection's id so a stale one is ignored, and fails the stream itself, once, on a
  server error or a bug (nothing is raised into the protocol). After that, or once the
  stream is terminal, it drops what arrives;
- the stream's task takes the caller's audio, flushes and end from the mailbox and sends
  them (keep-alives while the caller is quiet), replaces a lost connection and replays
  (:meth:`~WebSocketRecognizeStream._recover`), and on the way out closes its
  connection and clears the handler: nothing is left behind;
- the direct path: a frame pushed while the task waits on an empty mailbox is written in
  the caller's ``push_audio`` when the connection takes it without waiting;
- the deadlines read the time of the handler's last message; one timer, re-armed
  lazily, wakes the task when an answer is overdue or a keep-alive is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Generic, TypeVar

from antiphon.aio.channel import ChannelClosed
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import ChannelFull, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.net.ws import ConnectionLost, WsConnection
from antiphon.protocols.retry import retry_delay
from antiphon.protocols.stt_session import Action, Recognized
from antiphon.services.stt import (
    AudioInput,
    EndInput,
    FlushInput,
    RecognizeStream,
    StreamState,
)
from antiphon.services.ws_common import ConnDone, ConnLost, send_all

if TYPE_CHECKING:
    from antiphon.services.ws_stt import Message, WebSocketSTT, WireSession

__all__ = ["WebSocketRecognizeStream"]

log = logging.getLogger(__name__)

S = TypeVar("S", bound="WireSession")
_RUNNING = StreamState.RUNNING  # looked up once: the handler checks it per message


@dataclass(frozen=True, slots=True)
class _Control:
    message: Message


class _Tick:
    """The watchdog's wake-up: a deadline or a keep-alive may be due (checked again)."""


_TICK = _Tick()


class WebSocketRecognizeStream(RecognizeStream, Generic[S]):
    """One recognition on its own connection of a
    :class:`~antiphon.services.ws_stt.WebSocketSTT`."""

    def __init__(self, stt: WebSocketSTT[S], generation: int) -> None:
        self._stt = stt
        self._session: S = stt.new_session()
        self._conn: WsConnection | None = None
        self._conn_id = -1  # the connection whose messages the handler takes
        self._reading = False  # the handler feeds the session (until done, failed, lost)
        self._time = asyncio.get_running_loop().time
        self._reconnects = 0
        self._last_send = 0.0
        self._heard_at = 0.0  # the handler's last server message (written by it only)
        self._owed_since = 0.0  # when the answer owed now became owed, or a new connection
        self._watchdog: asyncio.TimerHandle | None = None
        self._converter = AudioConverter(stt.sample_rate, 1)  # pushed audio to the wire's
        super().__init__(
            provider=stt.provider,
            generation=generation,
            owner=stt._tasks,
            close_timeout=stt.deadlines.close,
        )

    @property
    def reconnects(self) -> int:
        """Connection attempts made after the first one."""
        return self._reconnects

    def _send_control(self, message: Message) -> None:
        """Queue a protocol control message, sent in order with the audio pushed before."""
        self._check_input("send a control message")
        self._mailbox.send_nowait(_Control(message))

    # -- the handler: one hop from the socket to the consumer, no task
    def _on_message(self, data: str | bytes) -> None:
        """One server message, from the protocol callback (the connection's handler).

        Feeds the protocol machine and delivers its transcripts; hands the task a
        ``ConnDone`` once the session is done. Whatever goes wrong (a server error, a
        consumer behind, a bug) fails the stream here, once; nothing is raised.
        """
        if not self._reading or self._state is not _RUNNING:
            return  # after the last message, a failure or the end: stale
        stt, session = self._stt, self._session
        try:
            self._heard_at = self._time()
            owed = session.awaiting
            actions = session.feed(data)
            # the message that leaves nothing owed answers every flush sent so far
            answered = (
                owed
                and not session.awaiting
                and stt.accepts_input(session)
                and not self._flush_pending
            )
            error = self._apply(actions, answered=answered)
            if error is not None:
                self._reading = False
                self._fail_now(error)
            elif session.done:
                self._reading = False
                self._post(ConnDone(self._conn_id))
        except ChannelFull as exc:  # the consumer fell behind (typed: stage "output")
            self._reading = False
            self._fail_now(self._typed(exc))
        except Exception as exc:  # a bug: it fails the stream at once, typed
            self._reading = False
            log.exception("%s: handling a server message failed unexpectedly", stt.provider)
            self._fail_now(
                ProviderError(f"unexpected error: {exc!r}", provider=stt.provider, stage="receive")
            )

    def _on_lost(self, conn_id: int, error: ConnectionLost) -> None:
        """Connection ``conn_id`` is gone: the task recovers (or completes) if it still
        reads it."""
        if self._reading and conn_id == self._conn_id:
            self._reading = False
            self._post(ConnLost(conn_id, error))

    def _apply(self, actions: Sequence[Action], *, answered: bool = False) -> ProviderError | None:
        """Deliver the transcripts of ``actions``; the first error, if one failed it.

        ``answered``: they answer the flushes, so their last final is marked ``flushed``
        (an empty final is made when they hold none).
        """
        found: list[Recognized] = []
        for action in actions:
            out = self._stt.interpret(action)
            if out is None:
                continue
            if isinstance(out, ProviderError):
                return out
            found.append(out)
        self._deliver(found, answered=answered)
        return None

    def _post(self, item: object) -> None:
        if self._mailbox.closed:
            return
        # A closed or full mailbox: the stream has ended (or failed on the overflow).
        with contextlib.suppress(ChannelClosed, StreamClosedError):
            self._mailbox.send_nowait(item)

    def _fail_now(self, error: ProviderError) -> None:
        if self._finish(StreamState.FAILED, error):
            self._task.cancel()

    # -- connection handling
    def _start_reading(self, conn: WsConnection) -> None:
        """Read ``conn`` with the handler (messages queued before it go first, now)."""
        self._conn = conn
        self._conn_id = conn.id
        self._reading = True
        self._heard_at = self._time()
        conn.set_handler(self._on_message, partial(self._on_lost, conn.id))

    async def _detach(self, *, graceful: bool) -> None:
        """Stop reading and close (or drop) the connection; its handler is cleared."""
        self._reading = False  # what arrives while the socket closes is dropped
        conn, self._conn = self._conn, None
        self._conn_id = -1
        if conn is None:
            return
        try:
            if graceful:
                await conn.aclose()
            else:
                conn.abort()
        finally:
            conn.clear_handler()

    def _retry_wait(self, error: ProviderError, attempt: int, began: float) -> float | None:
        """Seconds before the next attempt of this outage, or None to give up."""
        stt = self._stt
        if self._reconnects >= stt.max_reconnects:
            return None
        spent = self._time() - began
        return retry_delay(
            error,
            delivered=False,  # the journal replays what the server had not answered
            attempt=attempt,
            max_retries=stt.max_reconnects,
            max_wait=stt.backoff.cap,
            backoff=stt.backoff,
            budget=stt.reconnect_budget - spent,
        )

    async def _connect_retrying(self, error: ProviderError | None) -> WsConnection:
        """A connection, retried with backoff after ``error`` (None: a first attempt)."""
        began = self._time()
        attempt = 0
        while True:
            if error is not None:
                wait = self._retry_wait(error, attempt, began)
                if wait is None:
                    raise error
                attempt += 1
                self._reconnects += 1
                log.info(
                    "%s: %s; connecting again in %.3f s (attempt %d of %d)",
                    self.provider,
                    error,
                    wait,
                    self._reconnects,
                    self._stt.max_reconnects,
                )
                await asyncio.sleep(wait)
            try:
                return await self._stt._connect()
            except ProviderError as exc:
                error = exc

    async def _send(self, msgs: list[Message]) -> bool:
        """Send ``msgs``; on a lost connection recover. True when the stream is complete."""
        assert self._conn is not None
        if (lost := await send_all(self._conn, msgs)) is not None:
            return await self._recover(lost)  # the replay resent everything owed
        self._last_send = self._time()
        return False

    async def _recover(self, exc: ConnectionLost) -> bool:
        """After a drop: complete if nothing was owed, else replay on a new connection."""
        stt, session = self._stt, self._session
        if session.lost_is_harmless():
            error = self._apply(stt.settle(session))
            if error is not None:
                raise error
            return True
        error = stt.close_error(exc.close_code, exc.close_reason, stage=exc.stage)
        if session.replay() is None:
            raise error from None  # audio the server never answered is gone
        await self._detach(graceful=False)
        conn = await self._connect_retrying(error)
        msgs = session.begin_replay()
        self._start_reading(conn)
        self._owed_since = self._time()  # the new connection owes it
        log.info("%s: connection lost (%s); replayed on a new one", self.provider, exc)
        return await self._send(msgs)

    # -- the stream's task: the caller's side
    async def _run(self) -> None:
        graceful = False
        try:
            conn = await self._connect_retrying(None)
            self._start_reading(conn)
            self._last_send = self._time()
            if not await self._send(self._stt.opening(self._session)):
                await self._loop()
            graceful = True
        finally:
            await self._detach(graceful=graceful and not self._stt._tasks.closing)

    async def _loop(self) -> None:
        try:
            await self._take_inputs()
        finally:
            self._unwatch()

    async def _take_inputs(self) -> None:
        now_ = self._time
        stt, session, mailbox = self._stt, self._session, self._mailbox
        converter = self._converter
        while True:
            now = now_()
            fail_at, keep_at = self._wake_times()
            if fail_at is not None and now >= fail_at:
                raise self._timeout(self._owed_since, now)
            if mailbox.qsize():
                item = mailbox.recv_nowait()
            else:
                self._watch(fail_at, keep_at)
                item = await mailbox.recv()
            if item is _TICK:  # the watchdog found a deadline or a keep-alive due
                _, keep_at = self._wake_times()
                due = keep_at is not None and now_() >= keep_at
                if due and await self._send(session.keepalive()):
                    return
                continue
            if isinstance(item, AudioInput):
                pcm = converter.process(item.frame).data
                if pcm and await self._send(session.audio(pcm)):
                    return
            elif isinstance(item, FlushInput | EndInput):
                tail = converter.flush().data
                if tail and await self._send(session.audio(tail)):
                    return
                was_awaiting = session.awaiting
                if isinstance(item, FlushInput):
                    self._took_flush()
                    msgs, actions = stt.flush_input(session)
                    error = self._apply(actions)
                    if error is not None:
                        raise error
                else:
                    msgs = stt.end_input(session)
                if not was_awaiting and session.awaiting:
                    self._owed_since = now_()
                if msgs and await self._send(msgs):
                    return
            elif isinstance(item, _Control):
                if stt.accepts_input(session) and await self._send([item.message]):
                    return
            elif isinstance(item, ConnDone | ConnLost):
                if item.conn_id != self._conn_id:
                    continue  # from a connection we moved away from
                if isinstance(item, ConnDone) or await self._recover(item.error):
                    return
            if session.done:
                return

    # -- the direct path: a frame sent in the caller's push_audio
    def _take_audio_now(self, frame: AudioFrame) -> bool:
        """Send ``frame`` now when the connection takes it without waiting (it is open
        and its write buffer under its limit), as the task would; else decline (the
        task sends it, within the ``process`` deadline). Called only while the task
        waits on an empty mailbox: no send, recovery or control message is under way.
        """
        conn = self._conn
        if conn is None or not self._stt.accepts_input(self._session) or not conn.writable:
            return False
        pcm = self._converter.process(frame).data
        if pcm:
            for m in self._session.audio(pcm):
                conn.send_nowait(m)
            self._last_send = self._time()
        return True

    # -- the deadlines and the keep-alive: one timer, re-armed lazily
    def _wake_times(self) -> tuple[float | None, float | None]:
        """When the owed answer fails (None: nothing owed) and when a keep-alive is due
        (None: the session takes no input)."""
        stt, session = self._stt, self._session
        fail_at = None
        if session.awaiting:
            since, dl = self._owed_since, stt.deadlines
            fail_at = min(since + dl.final, max(since, self._heard_at) + dl.idle)
        keep_at = self._last_send + stt.keepalive_interval if stt.accepts_input(session) else None
        return fail_at, keep_at

    def _watch(self, fail_at: float | None, keep_at: float | None) -> None:
        """Make sure the watchdog fires no later than the earlier of the two times.

        Sends and server messages only move timestamps, later: a timer that fires early
        sets itself again at the new time (:meth:`_on_watchdog`). So a stream waiting for
        each 20 ms chunk of audio arms no timer per chunk.
        """
        due = keep_at if fail_at is None else fail_at if keep_at is None else min(fail_at, keep_at)
        if due is None:
            return  # a timer still set finds nothing due and lapses
        timer = self._watchdog
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()
        self._watchdog = asyncio.get_running_loop().call_at(due, self._on_watchdog)

    def _on_watchdog(self) -> None:
        self._watchdog = None
        mailbox = self._mailbox
        if mailbox.closed or mailbox.qsize():
            return  # the task is not waiting: it checks the times before it waits again
        fail_at, keep_at = self._wake_times()
        due = keep_at if fail_at is None else fail_at if keep_at is None else min(fail_at, keep_at)
        if due is None:
            return
        if self._time() >= due:
            self._post(_TICK)
        else:
            self._watch(fail_at, keep_at)

    def _unwatch(self) -> None:
        timer, self._watchdog = self._watchdog, None
        if timer is not None:
            timer.cancel()

    def _timeout(self, owed_since: float, now: float) -> ProviderTimeoutError:
        dl = self._stt.deadlines
        if now >= owed_since + dl.final:
            return ProviderTimeoutError(
                "no final transcript after flush/end_input",
                provider=self.provider,
                stage="final",
                timeout=dl.final,
                hint="the server went silent; the connection is closed",
            )
        return ProviderTimeoutError(
            "the server stopped answering while results were owed",
            provider=self.provider,
            stage="receive",
            timeout=dl.idle,
            hint="the server went silent; the connection is closed",
        )
