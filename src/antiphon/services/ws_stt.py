"""The driver shared by every WebSocket streaming-STT plugin.

A plugin subclasses :class:`WebSocketSTT` and supplies its protocol: a URL and headers, a
session factory (its protocol module's sans-I/O state machine, which satisfies
:class:`WireSession` and speaks the shared vocabulary of
:mod:`antiphon.protocols.stt_session`), what opens a connection (:meth:`~WebSocketSTT.open_url`
where a session URL is asked for first), what a flush and the end of input send, and how a
close code maps to a typed error. This module does the rest,
once, for all of them.

How it is built:

- one connection per stream (these protocols carry one recognition per connection);
- **two tasks per stream, one hop per server message, none per frame sent.** The stream's
  task takes the caller's audio, flushes and end from the mailbox and sends them (with
  keep-alives while the caller is quiet). A frame pushed while that task waits on an
  empty mailbox, and the connection takes it without waiting (open, its write buffer
  under its limit), is sent in the caller's ``push_audio`` instead (the direct path,
  :meth:`~antiphon.services.stt.RecognizeStream._take_audio_now`): no task wakes for it.
  Else it goes through the mailbox, and its send has the ``process`` deadline. The
  connection's reader task receives each server message, feeds
  it to the protocol machine and delivers the transcripts to the consumer itself: a
  transcript crosses no queue but the stream's output. The reader tells the stream's task
  only what it must act on (the connection was lost, the recognition is complete)
  through the mailbox, and fails the stream directly on a server error. The deadlines
  read the time of the reader's last message (written by the reader alone);
- a connection that drops before every result arrived is replaced and the un-finalized audio
  in the machine's bounded journal replayed (result times are shifted by the machine, so
  the caller sees one continuous stream). A refused first connection is retried the same
  way. Attempts are spaced by :class:`~antiphon.protocols.retry.Backoff` (bounded
  exponential, full jitter: many streams failing together never retry in the same
  millisecond), at most ``max_reconnects`` per stream and within ``reconnect_budget``
  seconds per outage; credentials and quota errors (not ``retryable``), timeouts and lost
  audio are never retried. The stream then fails with the last typed error;
- the transcript that answers the flushes is marked ``flushed``: the server message after
  which the machine owes nothing more (its last final, or an empty final made for an
  answer without one);
- deadlines: ``connect`` per attempt; ``process`` per send; ``final`` from a flush or
  ``end_input`` to the answer; ``idle`` between server messages while an answer is owed
  (restarted when a new connection takes over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar

from antiphon.aio.channel import ChannelClosed
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import (
    ChannelFull,
    ConfigError,
    ProviderError,
    ProviderTimeoutError,
    StreamClosedError,
)
from antiphon.net.ws import ConnectionLost, WsConnection, WsOptions, connect
from antiphon.protocols.retry import Backoff, retry_delay
from antiphon.protocols.stt_session import Act, Action, Phase, Recognized
from antiphon.services.stt import (
    STT,
    AudioInput,
    EndInput,
    FlushInput,
    RecognizeStream,
    StreamState,
    STTDeadlines,
)

__all__ = [
    "WebSocketRecognizeStream",
    "WebSocketSTT",
    "WireSession",
]

log = logging.getLogger(__name__)

Message = str | bytes
S = TypeVar("S", bound="WireSession")


class WireSession(Protocol):
    r"""What the driver needs of a protocol module's session (one recognition).

    ``phase``: audio is taken while ``OPEN``. ``awaiting``: the server owes an answer (a
    deadline runs). ``replay()``: what a new connection needs to recover, or None when
    audio was lost; ``begin_replay()`` switches to it. ``lost_is_harmless()``: a drop now
    loses nothing (input ended, all finalized). ``feed`` answers a server frame with the
    shared :class:`~antiphon.protocols.stt_session.Action`\ s.
    """

    phase: Phase

    @property
    def done(self) -> bool: ...

    @property
    def awaiting(self) -> bool: ...

    def audio(self, pcm: bytes) -> list[Message]: ...

    def keepalive(self) -> list[Message]: ...

    def replay(self) -> list[Message] | None: ...

    def begin_replay(self) -> list[Message]: ...

    def lost_is_harmless(self) -> bool: ...

    def feed(self, frame: str | bytes) -> list[Action]: ...


@dataclass(frozen=True, slots=True)
class _Lost:
    conn_id: int
    error: ConnectionLost


@dataclass(frozen=True, slots=True)
class _Done:
    conn_id: int


@dataclass(frozen=True, slots=True)
class _Control:
    message: Message


class _Tick:
    """The watchdog's wake-up: a deadline or a keep-alive may be due (checked again)."""


_TICK = _Tick()


class WebSocketSTT(STT, Generic[S]):
    """Base of streaming STT plugins over one WebSocket per stream.

    Args:
        url: The full WebSocket URL (query included).
        headers: Handshake headers (credentials: never logged).
        auth_hint: What to check when the credentials are refused.
        deadlines: See :class:`~antiphon.services.stt.STTDeadlines`.
        keepalive_interval: Seconds without a send before a keep-alive (where the
            protocol has one).
        max_reconnects: Connection attempts a stream may make after its first one, for a
            refused connection or a drop (0: never retry).
        journal_seconds: Un-finalized audio kept for replay after a drop (0: none).
        backoff: The waits between attempts.
        reconnect_budget: Seconds one outage may spend waiting between attempts; a wait
            that does not fit gives up.

    Raises:
        ConfigError: an option out of range.
    """

    def __init__(
        self,
        *,
        url: str,
        headers: Mapping[str, str],
        auth_hint: str,
        deadlines: STTDeadlines | None = None,
        keepalive_interval: float = 4.0,
        max_reconnects: int = 3,
        journal_seconds: float = 30.0,
        backoff: Backoff | None = None,
        reconnect_budget: float = 5.0,
    ) -> None:
        if (
            isinstance(keepalive_interval, bool)
            or not isinstance(keepalive_interval, int | float)
            or keepalive_interval <= 0
        ):
            raise ConfigError("keepalive_interval must be a positive number of seconds")
        if (
            isinstance(max_reconnects, bool)
            or not isinstance(max_reconnects, int)
            or max_reconnects < 0
        ):
            raise ConfigError("max_reconnects must be an int >= 0 (0: never reconnect)")
        if not isinstance(journal_seconds, int | float) or journal_seconds < 0:
            raise ConfigError("journal_seconds must be >= 0 (0: never replay audio)")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise ConfigError(f"backoff must be a Backoff, got {type(backoff).__name__}")
        if not isinstance(reconnect_budget, int | float) or reconnect_budget < 0:
            raise ConfigError("reconnect_budget must be >= 0 seconds")
        super().__init__(deadlines=deadlines)
        self.url = url
        self._headers = dict(headers)
        self._auth_hint = auth_hint
        self.keepalive_interval = float(keepalive_interval)
        self.max_reconnects = max_reconnects
        self.journal_seconds = float(journal_seconds)
        self.backoff = backoff or Backoff()
        self.reconnect_budget = float(reconnect_budget)
        self._ws_options = WsOptions(
            connect_timeout=self.deadlines.connect,
            send_timeout=self.deadlines.process,
            close_timeout=self.deadlines.close,
        )

    # -- what a plugin supplies
    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """The rate of the audio on the wire (pushed audio is converted to it)."""

    @abstractmethod
    def new_session(self) -> S:
        """A fresh protocol session for one stream."""

    @abstractmethod
    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        """The typed error for a server close (``retryable`` decides about a replay)."""

    #: Said with an error the server reports (what to read, where to look).
    error_hint: ClassVar[str] = "see the provider's error message above"

    def accepts_input(self, session: S) -> bool:
        """Whether the session still takes audio, keep-alives and control messages."""
        return session.phase is Phase.OPEN

    @abstractmethod
    def flush_input(self, session: S) -> tuple[list[Message], list[Action]]:
        """What a flush sends, and actions to apply at once (an utterance the client ends)."""

    @abstractmethod
    def end_input(self, session: S) -> list[Message]:
        """What the end of input sends (the server then finishes and ends the session)."""

    def opening(self, session: S) -> list[Message]:
        """What a stream sends first on its first connection (e.g. a session's configuration;
        a replay resends it as part of ``replay()``)."""
        return []

    def settle(self, session: S) -> list[Action]:
        """Actions that close what is open when a drop completes the stream harmlessly."""
        return []

    def interpret(self, action: Action) -> Recognized | ProviderError | None:
        """A transcript for the caller, the error that fails the stream, or nothing."""
        if action.act is Act.EMIT:
            return action.transcript
        if action.act is Act.FAIL:
            return ProviderError(
                f"the server reported an error: {action.note}",
                provider=self.provider,
                stage="receive",
                hint=self.error_hint,
            )
        if action.act is Act.DROP:
            log.debug(
                "%s: dropped %s (%s)", self.provider, type(action.event).__name__, action.note
            )
        elif action.act is Act.NOTICE:
            log.debug("%s: %s", self.provider, type(action.event).__name__)
        return None

    # -- connections
    async def open_url(self) -> str:
        """The URL of a new connection: :attr:`url`, or, for a protocol that asks an HTTP
        endpoint for a session first, that session's URL (errors typed, stage
        ``connect``, within the ``connect`` deadline)."""
        return self.url

    async def _connect(self) -> WsConnection:
        return await connect(
            await self.open_url(),
            provider=self.provider,
            headers=self._headers,
            options=self._ws_options,
            auth_hint=self._auth_hint,
        )

    @property
    def headers(self) -> Mapping[str, str]:
        """The handshake headers (credentials included: do not log them)."""
        return dict(self._headers)

    def _new_stream(self, generation: int) -> RecognizeStream:
        return WebSocketRecognizeStream(self, generation)


class WebSocketRecognizeStream(RecognizeStream, Generic[S]):
    """One recognition on its own connection of a :class:`WebSocketSTT`."""

    def __init__(self, stt: WebSocketSTT[S], generation: int) -> None:
        self._stt = stt
        self._session: S = stt.new_session()
        self._conn: WsConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnects = 0
        self._last_send = 0.0
        self._heard_at = 0.0  # the reader's last server message (written by the reader only)
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

    # -- the reader: one hop from the socket to the consumer
    async def _read(self, conn: WsConnection) -> None:
        loop = asyncio.get_running_loop()
        stt, session = self._stt, self._session
        try:
            while True:
                data = await conn.recv()
                self._heard_at = loop.time()
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
                    self._fail_now(error)
                    return
                if session.done:
                    self._post(_Done(conn.id))
                    return
        except ConnectionLost as exc:
            self._post(_Lost(conn.id, exc))
        except ChannelFull as exc:
            self._fail_now(
                ProviderError(
                    f"the consumer fell behind: {exc.maxsize} items unread",
                    provider=stt.provider,
                    stage="output",
                    hint="read the stream as it is produced, or cancel it",
                )
            )
        except Exception as exc:  # a bug: the failed child fails its stream at once
            log.exception("%s: the reader failed unexpectedly", stt.provider)
            self._fail_now(
                ProviderError(f"unexpected error: {exc!r}", provider=stt.provider, stage="receive")
            )

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
        self._conn = conn
        self._heard_at = asyncio.get_running_loop().time()
        self._reader = self._stt._tasks.spawn(
            self._read(conn), name=f"{self.provider}-read#{conn.id}"
        )

    async def _detach(self, *, graceful: bool) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if graceful:
            await conn.aclose()
        else:
            conn.abort()

    def _conn_id(self) -> int:
        return self._conn.id if self._conn is not None else -1

    def _retry_wait(self, error: ProviderError, attempt: int, began: float) -> float | None:
        """Seconds before the next attempt of this outage, or None to give up."""
        stt = self._stt
        if self._reconnects >= stt.max_reconnects:
            return None
        spent = asyncio.get_running_loop().time() - began
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
        began = asyncio.get_running_loop().time()
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
        for m in msgs:
            conn = self._conn
            assert conn is not None
            try:
                await conn.send(m)
            except ConnectionLost as exc:
                return await self._recover(exc)  # the replay resent everything owed
        self._last_send = asyncio.get_running_loop().time()
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
        self._owed_since = asyncio.get_running_loop().time()  # the new connection owes it
        log.info("%s: connection lost (%s); replayed on a new one", self.provider, exc)
        return await self._send(msgs)

    # -- the stream's task: the caller's side
    async def _run(self) -> None:
        graceful = False
        try:
            conn = await self._connect_retrying(None)
            self._start_reading(conn)
            self._last_send = asyncio.get_running_loop().time()
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
        loop = asyncio.get_running_loop()
        stt, session, mailbox = self._stt, self._session, self._mailbox
        converter = self._converter
        while True:
            now = loop.time()
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
                due = keep_at is not None and loop.time() >= keep_at
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
                    self._owed_since = loop.time()
                if msgs and await self._send(msgs):
                    return
            elif isinstance(item, _Control):
                if stt.accepts_input(session) and await self._send([item.message]):
                    return
            elif isinstance(item, _Done | _Lost):
                if item.conn_id != self._conn_id():
                    continue  # from a connection we moved away from
                if isinstance(item, _Done) or await self._recover(item.error):
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
            self._last_send = asyncio.get_running_loop().time()
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
        if asyncio.get_running_loop().time() >= due:
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
