"""One conversation with a realtime model: :class:`RealtimeSession`.

How it is built (see the package docstring for the contract): once a connection is
configured, its message handler (:meth:`WsConnection.set_handler
<antiphon.net.ws.WsConnection.set_handler>`, called from the protocol callback that parsed
the message, no task) feeds each server message to
:class:`~antiphon.protocols.realtime.RealtimeState` and emits the resulting events straight
into the bounded output: the one task hop of an audio delta, a transcript, a tool call or
an error is the consumer's own wake-up. What the handler cannot finish itself goes to the
session's main task through its mailbox, tagged with the connection: a lost connection that
may be replaced, a message to send, a move. A lost connection that may not be replaced, and
anything the handler raises, fail the session from the handler at once (a handler never
raises into the protocol). The main task sends the caller's commands and audio
(:mod:`.commands`), in order, and replaces a dropped connection (or moves to a new one when
the server announces the end of this one). Its parts live beside it: :mod:`.handshake` (the
start of every connection, read with ``recv`` in the main task), :mod:`.delivery` (what a
delivered protocol event means to the application, with its metrics), :mod:`.output` (the
bounded queue the caller iterates), :mod:`.watchdog` (the wait for a response: one timer per
session, re-armed lazily) and :mod:`.handover` (when to move).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Self

from antiphon import metrics
from antiphon.aio.channel import Channel
from antiphon.audio.resample import AudioConverter
from antiphon.errors import (
    ProviderConnectionError,
    ProviderError,
    StreamClosedError,
)
from antiphon.net.ws import ConnectionLost, WsConnection
from antiphon.protocols import realtime as rt
from antiphon.protocols.realtime import SessionConfig
from antiphon.services.realtime.commands import AudioIn, Send, SessionCommands
from antiphon.services.realtime.delivery import Delivery
from antiphon.services.realtime.events import (
    RealtimeEvent,
    Reconnected,
    SessionReady,
    SessionState,
)
from antiphon.services.realtime.handover import Handover
from antiphon.services.realtime.handshake import handshake
from antiphon.services.realtime.output import SessionOutput
from antiphon.services.realtime.watchdog import ResponseWatchdog
from antiphon.services.ws_common import ConnLost

if TYPE_CHECKING:
    from antiphon.services.realtime.model import WebSocketRealtimeModel

__all__ = ["RealtimeSession"]

log = logging.getLogger("antiphon.services.realtime")

# --------------------------------------------------------------------------- mailbox items


@dataclass(frozen=True, slots=True)
class _Move:
    """Move away from connection ``conn_id`` (the server announced its end, or a new
    configuration needs a new connection)."""

    conn_id: int


# --------------------------------------------------------------------------- the session


class RealtimeSession(SessionCommands):
    """One conversation with a realtime model (see the module docstring).

    Methods that send (``push_audio``, ``send_text``, ``say``, ``interrupt``, ``update``,
    ``send_tool_result``, ``commit_audio``; :class:`~.commands.SessionCommands`) are
    synchronous: they queue work for the session's task, in order, and raise
    :class:`StreamClosedError` once it ended.
    """

    def __init__(self, model: WebSocketRealtimeModel) -> None:
        self._model = model
        self.provider = model.provider
        self.config = model.config
        self.deadlines = model.deadlines
        self.state = SessionState.CONNECTING
        self.error: ProviderError | None = None
        self.session_id = ""
        self.reconnects = 0
        self._sm = model.protocol_state()
        # bounded in seconds of audio rather than items (policy fail: the session fails):
        # input by max_input_backlog (push_audio), output by max_output_backlog (_emit)
        self._mailbox: Channel[object] = Channel(name="realtime session mailbox")
        self._output = SessionOutput(self.provider, model.max_output_backlog)
        self._converter = AudioConverter(self.config.input_rate, 1)
        self._in_bytes = 0  # input audio queued, not yet sent
        self._in_limit = int(model.max_input_backlog * self.config.input_rate) * 2
        self._delivery = Delivery(self.provider, self.config.output_rate)
        self._watchdog = ResponseWatchdog(self._sm, self.deadlines, self.provider, self._fail)
        self._handover = Handover(self._request_move)
        self.resumptions = 0  # moves to a new connection with the server's resumption handle
        self._conn: WsConnection | None = None
        self._reading = 0  # the id of the connection whose handler feeds the session
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._terminal = asyncio.Event()

    # -- lifecycle
    @property
    def done(self) -> bool:
        return self.state in (SessionState.CLOSED, SessionState.FAILED)

    @property
    def generation(self) -> int:
        """The generation of the newest event delivered so far."""
        return self._output.generation

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect and wait until the session is configured (bounded by the deadlines)."""
        if self._task is not None:
            raise StreamClosedError("the session was already started")
        loop = asyncio.get_running_loop()
        self._watchdog.start(loop)
        self._ready = loop.create_future()
        self._task = self._model._tasks.spawn(self._main(), name=f"{self.provider}-session")
        try:
            await asyncio.shield(self._ready)
        except asyncio.CancelledError:
            await self.aclose()
            raise
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        """End the session (idempotent, bounded); queued events may still be iterated."""
        if self._finish(SessionState.CLOSED) and self._task is not None:
            self._task.cancel()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=self.deadlines.close * 2)

    async def wait(self) -> SessionState:
        await self._terminal.wait()
        return self.state

    # -- output
    def __aiter__(self) -> AsyncIterator[RealtimeEvent]:
        return self

    def __anext__(self) -> Awaitable[RealtimeEvent]:
        return self._output.next()  # its awaitable, not a coroutine around it

    def _emit(self, ev: RealtimeEvent) -> None:
        if not self.done and (error := self._output.put(ev)) is not None:
            self._fail(error)

    # -- terminal states
    def _finish(self, state: SessionState, error: ProviderError | None = None) -> bool:
        if self.done:
            return False
        self.state = state
        self.error = error
        self._reading = 0
        self._watchdog.stop()
        self._handover.close()
        self._output.close(error)
        self._mailbox.close()
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        self._terminal.set()
        return True

    def _fail(self, error: ProviderError) -> None:
        if self._finish(SessionState.FAILED, error) and self._task is not None:
            self._task.cancel()

    async def _main(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            self._finish(SessionState.CLOSED)
            raise
        except ProviderError as exc:
            self._finish(SessionState.FAILED, exc)
        except Exception as exc:
            log.exception("%s realtime session failed unexpectedly", self.provider)
            self._finish(
                SessionState.FAILED,
                ProviderError(
                    f"unexpected error: {exc!r}", provider=self.provider, stage="session"
                ),
            )
        else:
            self._finish(SessionState.CLOSED)
        finally:
            await self._drop_connection()

    # -- connections
    async def _drop_connection(self) -> None:
        self._handover.cancel()
        self._reading = 0  # what it still says is dropped by its handler
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.aclose()
            except asyncio.CancelledError:
                conn.abort()
                raise
            finally:
                conn.clear_handler()  # it held the session (a cycle)

    async def _open(self, first_messages: list[str]) -> None:
        """Connect and configure (:func:`.handshake.handshake`); :meth:`_listen` follows."""
        model = self._model
        conn = await model._connect()
        self._conn = conn
        session_id = await handshake(
            conn,
            self._sm,
            first_messages,
            server_speaks_first=model.server_speaks_first,
            ready_timeout=self.deadlines.ready,
            provider=self.provider,
            close_error=model.close_error,
            on_decision=self._handle,
        )
        if session_id is not None:
            self.session_id = session_id

    def _listen(self) -> None:
        """Read the configured connection with a handler, once the main task waits next
        (after it emitted ``SessionReady`` or ``Reconnected``): what the server said
        meanwhile waits in the connection, in order, and is handed over first."""
        conn = self._conn
        assert conn is not None
        asyncio.get_running_loop().call_soon(self._start_reading, conn)

    def _start_reading(self, conn: WsConnection) -> None:
        if self.done or conn is not self._conn:
            return  # the session ended, or the connection was dropped meanwhile
        self._reading = conn.id
        conn.set_handler(partial(self._on_message, conn.id), partial(self._on_lost, conn.id))

    def _on_message(self, conn_id: int, data: str | bytes) -> None:
        """One server message, from the protocol callback (the connection's handler):
        feed the state machine and emit from here. Raises nothing: a failure fails the
        session. Messages of a connection being dropped, or after the end, are ignored."""
        if conn_id != self._reading:
            return
        try:
            self._watchdog.progress()
            for d in self._sm.feed_all(data):
                if d.act is rt.Act.MOVE and isinstance(d.event, rt.ConnectionEnding):
                    log.info("%s: the server ends the connection: %s", self.provider, d.event)
                    self._handover.announce(conn_id, d.event.time_left / 2)
                self._handle(d)
                if self.done:
                    return
            self._watchdog.track()
            if self._handover.pending and self._sm.quiet:
                self._handover.quiet()
        except Exception as exc:
            self._unexpected(exc)

    def _on_lost(self, conn_id: int, lost: ConnectionLost) -> None:
        """The connection is gone (its handler's second callback). If it may be replaced,
        the main task does it; if not, the session fails here with the close's error."""
        if conn_id != self._reading:
            return
        self._reading = 0
        try:
            error = self._lost(lost)
            if error.retryable and self.reconnects < self._model.max_reconnects:
                self._mailbox.send_nowait(ConnLost(conn_id, lost))
            else:
                self._fail(error)
        except Exception as exc:
            self._unexpected(exc)

    def _unexpected(self, exc: Exception) -> None:
        log.exception("%s: the realtime handler failed unexpectedly", self.provider, exc_info=exc)
        self._fail(
            ProviderError(f"unexpected error: {exc!r}", provider=self.provider, stage="receive")
        )

    def _request_move(self, conn_id: int) -> None:
        if not self._mailbox.closed:
            self._mailbox.send_nowait(_Move(conn_id))

    async def _move(self) -> None:
        """Resume the session on a new connection with the server's handle (nothing is
        replayed: the server kept the conversation); without a handle, or if resuming
        fails, reconnect as after a drop (bounded by ``max_reconnects``: past it, the
        session fails with a typed error, never silently)."""
        notice = ProviderConnectionError(
            "the server ended the connection (it announced it: goAway)",
            provider=self.provider,
            stage="receive",
            code=1001,
            hint="the service limits a connection's duration; the session moves on",
            retryable=True,
        )
        lost_response = self._sm.current is not None and not self._sm.response_pending_unheard
        msgs = self._sm.resume(self.config)
        if msgs is None:
            await self._reconnect(notice)
            return
        requested = self._sm.awaiting  # resume() asked for an unheard response again
        self.resumptions += 1
        metrics.REALTIME_RECONNECTS.labels(self.provider).inc()
        await self._drop_connection()
        try:
            await self._open(msgs)
        except ProviderError as exc:
            await self._drop_connection()
            await self._reconnect(exc)
            return
        reason = "moved to a new connection, resumed with the session handle"
        gen = self._sm.generation
        self._emit(Reconnected(self.reconnects, reason, 0, requested, lost_response, gen))
        self._watchdog.progress()
        self._watchdog.track()
        self._listen()

    def _lost(self, lost: ConnectionLost) -> ProviderError:
        return self._model.close_error(lost.close_code, lost.close_reason, stage=lost.stage)

    async def _reconnect(self, error: ProviderError) -> None:
        """Replace a dropped connection, restoring the session; bounded attempts."""
        model = self._model
        while True:
            if not error.retryable or self.reconnects >= model.max_reconnects:
                raise error from None
            self.reconnects += 1
            metrics.REALTIME_RECONNECTS.labels(self.provider).inc()
            log.info("%s: connection lost (%s); reconnecting", self.provider, error)
            await self._drop_connection()
            lost_response = self._sm.current is not None and not self._sm.response_pending_unheard
            msgs = self._sm.reconnect(self.config)
            requested = self._sm.awaiting  # reconnect() asked for the response again
            replayed = len(msgs) - 1 - int(requested)
            try:
                await self._open(msgs)
            except ProviderError as exc:
                error = exc
                await self._drop_connection()
                continue
            self._emit(
                Reconnected(
                    self.reconnects,
                    str(error),
                    replayed,
                    requested,
                    lost_response,
                    self._sm.generation,
                )
            )
            self._watchdog.progress()
            self._watchdog.track()
            self._listen()
            return

    async def _send(self, msgs: Sequence[str]) -> None:
        for m in msgs:
            conn = self._conn
            assert conn is not None
            try:
                await conn.send(m)
            except ConnectionLost as exc:
                # The reconnect restores the session; what this message was for is either
                # in the journal (text) or re-requested (an unheard response).
                await self._reconnect(self._lost(exc))
                return

    # -- the loop
    async def _run(self) -> None:
        await self._open(self._model.setup_messages(self.config))
        self.state = SessionState.RUNNING
        self._emit(SessionReady(self.session_id, self._sm.generation))
        assert self._ready is not None
        if not self._ready.done():
            self._ready.set_result(None)
        self._watchdog.progress()
        self._watchdog.track()
        self._listen()
        async for item in self._mailbox:
            if isinstance(item, AudioIn):
                self._in_bytes -= len(item.pcm)
                await self._send(self._sm.audio(item.pcm))
            elif isinstance(item, ConnLost):
                if self._conn is not None and item.conn_id == self._conn.id:
                    await self._reconnect(self._lost(item.error))
            elif isinstance(item, _Move):
                if self._conn is not None and item.conn_id == self._conn.id:
                    await self._move()
            elif isinstance(item, Send):
                await self._send(item.call())
                self._watchdog.track()

    def _apply_update(self, cfg: SessionConfig) -> list[str]:
        msgs = self._model.update_messages(cfg)
        if msgs is not None:
            return msgs
        # only a new connection applies it: move at a quiet moment (if it can resume)
        if self._sm.can_resume and self._conn is not None:
            self._handover.announce(self._conn.id, self._model.move_within)
            if self._sm.quiet:
                self._handover.quiet()
        return []

    def _interrupt_now(self, target: int, played_ms: int, played_item: str | None) -> list[str]:
        self._delivery.interrupted()
        return self._sm.interrupt(target, played_ms, played_item)

    def _handle(self, d: rt.Decision) -> None:
        if d.send:
            # Only response.cancel of a response interrupted before it existed.
            self._mailbox.send_nowait(Send(partial(list, d.send)))
        if d.act is rt.Act.DROP:
            log.debug("%s: dropped %s", self.provider, d.note)
            return
        if d.act is not rt.Act.DELIVER:
            return
        loop_time = asyncio.get_running_loop().time()
        events, fatal = self._delivery.events(d.event, d.generation, loop_time)
        for ev in events:
            self._emit(ev)
        if fatal is not None:
            self._fail(fatal)
