"""One synthesis over a pooled WebSocket connection: :class:`WebSocketSynthesisStream`.

The stream half of the WebSocket TTS driver (:mod:`antiphon.services.ws_tts` holds the
service, its pool and the clearing after a cancel, and re-exports this class). How it is
built:

- the connection's message handler (:meth:`WsConnection.set_handler
  <antiphon.net.ws.WsConnection.set_handler>`, called from the protocol callback that
  parsed the message, no task) runs the protocol session on each server message and
  puts its audio straight into the stream's bounded output: the one task hop per chunk
  is the consumer's wake-up, as a bare client's is its ``recv()``. Client-side session
  methods update the state before anything is sent, so a reply can never be fed before
  the state knows its request;
- the stream's task reads a mailbox with the caller's text and what the handler hands over
  (done, failed, connection lost), each tagged with its connection so a stale one is
  ignored;
- a connection that drops before any audio of the pending text arrived is replaced and
  the text replayed (``max_reconnects``); a drop after audio fails the stream;
- a cancelled stream hands its connection to the service, which clears it;
- first-audio and idle deadlines bound every wait, with one timer per stream: progress
  only moves a timestamp, and the timer, when it fires early, sets itself again at the
  new due time (no timer per message).
- word timings (:attr:`Action.words <antiphon.protocols.tts_session.Action.words>`,
  segment-relative) are shifted by the stream's audio seconds where the segment began
  and added to :attr:`SynthesisStream.words` in the handler, before the audio of the
  same message is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from antiphon import metrics
from antiphon.audio.codecs import decode_to_pcm
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.net.ws import ConnectionLost, WsConnection
from antiphon.protocols.tts_session import Act, Action
from antiphon.services.tts import (
    EndInput,
    FlushInput,
    StreamState,
    SynthesisStream,
    TextInput,
    metric_child,
)
from antiphon.services.ws_common import ConnDone, ConnLost, send_all

if TYPE_CHECKING:
    from antiphon.services.ws_tts import WebSocketTTS

__all__ = ["WebSocketSynthesisStream"]

# The driver's logger, as before the stream had its own module: one name for the driver.
log = logging.getLogger("antiphon.services.ws_tts")

# Looked up once: the reader's per-chunk branch uses them.
_DELIVER = Act.DELIVER
_RUNNING = StreamState.RUNNING
_trusted = AudioFrame.trusted


@dataclass(frozen=True, slots=True)
class _Failed:
    """The handler failed on connection ``conn_id`` (server error, consumer behind)."""

    conn_id: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class _Timeout:
    """The watchdog found a deadline passed (checked again by the stream task)."""


class WebSocketSynthesisStream(SynthesisStream):
    """One synthesis over a pooled connection of a :class:`WebSocketTTS`.

    One task, the stream's own, takes the caller's text from the mailbox and sends it;
    the connection's handler (no task) feeds each server message to the protocol session
    and emits its audio straight into the output channel, so an audio chunk crosses one
    task hop (into the consumer). The handler hands the stream task only what changes its
    course (done, failed, connection lost), as mailbox items tagged with the connection's
    id.
    """

    def __init__(self, tts: WebSocketTTS, generation: int) -> None:
        self._tts = tts
        self._session = tts.new_session()
        self._conn: WsConnection | None = None
        self._conn_id = -1  # the connection whose messages the handler takes
        self._reading = False  # the handler passes messages on (until done or failed)
        self._carry = b""
        self._reconnects = 0
        self._loop = asyncio.get_running_loop()
        self._clock = _clock_of(self._loop)
        self._progress_at = 0.0
        self._heard = False  # audio of the current flush segment arrived
        self._flush_times: list[float] = []
        self._watchdog: asyncio.TimerHandle | None = None
        self._linear16 = tts.wire_encoding == "linear16"
        super().__init__(
            provider=tts.provider,
            sample_rate=tts.sample_rate,
            channels=1,
            generation=generation,
            owner=tts._tasks,
            close_timeout=tts.deadlines.close,
            word_timings=tts.word_timings,
        )
        self._segment_at = 0.0  # stream audio seconds where the current segment began

    # -- connection handling
    async def _attach(self) -> WsConnection:
        conn = await self._tts.pool.acquire()
        self._conn = conn
        self._conn_id = conn.id
        self._reading = True
        conn.set_handler(self._on_message, partial(self._on_lost, conn.id))
        return conn

    def _on_lost(self, conn_id: int, error: ConnectionLost) -> None:
        """The connection is gone (its handler's second callback)."""
        if self._reading and conn_id == self._conn_id:
            self._reading = False
            self._tell(ConnLost(conn_id, error))

    def _tell(self, item: Any) -> None:
        """Hand the stream task ``item`` (unless the stream is terminal)."""
        if not self._mailbox.closed:
            with contextlib.suppress(StreamClosedError):  # overflowed: the stream failed
                self._mailbox.send_nowait(item)

    def _on_message(self, data: str | bytes) -> None:
        """One server message, from the protocol callback (the connection's handler).

        The common case, a chunk of whole 16-bit samples in the middle of a segment, is
        written out here and does only what it must: feed the session, move the
        watchdog's timestamp, count the seconds, queue a trusted frame. Whatever goes
        wrong (a server error, a consumer behind, a bug) is handed to the stream task
        as ``_Failed``; nothing is raised from here. After the done marker or a failure,
        and once the stream is terminal, messages are dropped as stale.
        """
        if not self._reading or self._state is not _RUNNING:
            self._tts.pool.stats.stale_messages += 1
            return
        try:
            action = self._session.feed(data)
            if action.words:
                self._emit_words(action.words, self._segment_at)
            if action.act is not _DELIVER:
                if not self._receive(action):
                    self._reading = False
                return
            now = self._clock()
            if not self._heard:
                self._heard = True
                if self._flush_times:
                    ttfb = metric_child(metrics.TTS_TTFB, self.provider)
                    ttfb.observe(now - self._flush_times[0])
                self._progress_at = now
                self._watch()  # the idle window may end before the first-audio one
            self._progress_at = now  # the watchdog reads it lazily: no timer per chunk
            audio = action.audio
            n = len(audio)
            if self._linear16 and not self._carry and not n & 1 and type(audio) is bytes:
                # SynthesisStream._emit written out: whole samples, checked just above.
                if n:
                    rate = self.sample_rate
                    self.audio_seconds += (n >> 1) / rate
                    self._out.send_nowait(_trusted(audio, rate, 1, self.generation))
            else:
                self._deliver(audio)
        except Exception as exc:
            self._reading = False
            self._tell(_Failed(self._conn_id, exc))

    def _receive(self, action: Action) -> bool:
        """A server message other than audio; False once the stream's audio is complete."""
        act = action.act
        if act is Act.SEGMENT_DONE or act is Act.STREAM_DONE:
            if action.audio:  # some protocols put audio in the done marker
                self._deliver(action.audio)
            self._heard = False
            self._segment_at = self.audio_seconds
            self._progress_at = self._loop.time()
            self._count_audio()
            if self._flush_times:
                self._flush_times.pop(0)
            if act is Act.STREAM_DONE:
                self._mailbox.send_nowait(ConnDone(self._conn_id))
                return False
        elif act is Act.FAIL:
            raise ProviderError(
                f"the server reported an error: {action.note}",
                provider=self.provider,
                stage="receive",
            )
        elif act is Act.DROP:
            metrics.TTS_DROPPED_MESSAGES.labels(self.provider, "unexpected").inc()
            log.debug("%s: dropped %s", self.provider, action.note)
        elif act is Act.NOTICE:
            self._tts.notice(action)
        return True

    def _detach(self) -> WsConnection | None:
        conn, self._conn = self._conn, None
        self._conn_id = -1
        self._reading = False
        if conn is not None:
            conn.clear_handler()
        return conn

    async def _send(self, msgs: list[str | bytes]) -> None:
        assert self._conn is not None
        if (lost := await send_all(self._conn, msgs)) is not None:
            await self._recover(lost)  # the replay resent everything owed, this one included

    async def _recover(self, exc: ConnectionLost) -> None:
        """Move to a new connection if nothing of the pending text was heard yet."""
        error = self._tts.close_error(exc.close_code, exc.close_reason, stage=exc.stage)
        replay = self._session.replay()
        if not error.retryable or replay is None or self._reconnects >= self._tts.max_reconnects:
            raise error from None
        self._reconnects += 1
        log.info("%s: connection lost (%s); replaying on a new one", self.provider, exc)
        old = self._detach()
        if old is not None:
            self._tts.pool.discard(old)
        self._carry = b""
        if self.words:  # timings of the lost segment (no audio of it came) are sent again
            self.words[:] = [w for w in self.words if w.start < self._segment_at]
        await self._attach()
        await self._send(self._session.reset_for_replay())
        self._progress_at = self._loop.time()
        self._watch()

    # -- the loop
    async def _run(self) -> None:
        await self._attach()
        try:
            await self._loop_inputs()
        except asyncio.CancelledError:
            self._unwatch()
            self._release_after_cancel()
            raise
        except BaseException:
            self._unwatch()
            old = self._detach()
            if old is not None:
                self._tts.pool.discard(old)
            raise
        self._unwatch()
        old = self._detach()
        if old is not None:
            self._tts.pool.release(old, reusable=True)

    async def _loop_inputs(self) -> None:
        """Take text and what the handler hands over from the mailbox until done."""
        session = self._session
        self._progress_at = self._loop.time()
        async for item in self._mailbox:
            if isinstance(item, TextInput):
                await self._send(session.speak(item.text))
            elif isinstance(item, FlushInput | EndInput):
                msgs = session.flush() if isinstance(item, FlushInput) else session.end_input()
                if msgs:
                    now = self._loop.time()
                    if session.pending_flushes == 1:  # the deadline starts now
                        self._progress_at = now
                    self._flush_times.append(now)
                    self._watch()
                await self._send(msgs)
                if session.done:
                    return self._end_audio()
            elif isinstance(item, _Timeout):
                if session.awaiting_audio and self._loop.time() >= self._due():
                    raise self._timeout()
                self._watch()
            elif isinstance(item, ConnDone | _Failed | ConnLost) and item.conn_id != self._conn_id:
                continue  # left over from a connection we moved away from
            elif isinstance(item, ConnDone):
                return self._end_audio()
            elif isinstance(item, _Failed):
                raise item.error
            elif isinstance(item, ConnLost):
                await self._recover(item.error)
                if session.done:  # the replay left nothing owed
                    return self._end_audio()

    # -- the deadline: one timer, re-armed lazily
    def _due(self) -> float:
        d = self._tts.deadlines
        return self._progress_at + (d.idle if self._heard else d.first_audio)

    def _watch(self) -> None:
        """Make sure the watchdog fires no later than the current due time."""
        if not self._session.awaiting_audio or self._state is not StreamState.RUNNING:
            return
        due = self._due()
        timer = self._watchdog
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()
        self._watchdog = self._loop.call_at(due, self._on_watchdog)

    def _on_watchdog(self) -> None:
        """Progress only moves ``_progress_at``; here the due time is checked and, if it
        moved, the timer set again — one timer per deadline window, not per message."""
        self._watchdog = None
        if self._mailbox.closed or not self._session.awaiting_audio:
            return  # re-armed by the next flush
        if self._loop.time() >= self._due():
            with contextlib.suppress(StreamClosedError):  # the mailbox overflowed: failed
                self._mailbox.send_nowait(_Timeout())
        else:
            self._watch()

    def _unwatch(self) -> None:
        timer, self._watchdog = self._watchdog, None
        if timer is not None:
            timer.cancel()

    def _timeout(self) -> ProviderTimeoutError:
        d = self._tts.deadlines
        return ProviderTimeoutError(
            "audio stopped before the done marker" if self._heard else "no audio after flush",
            provider=self.provider,
            stage="receive",
            timeout=d.idle if self._heard else d.first_audio,
            hint="the server went silent; the connection is discarded",
        )

    def _release_after_cancel(self) -> None:
        conn, self._conn = self._conn, None
        self._conn_id = -1
        self._reading = False
        if conn is None:
            return
        tts = self._tts
        if tts._tasks.closing:
            conn.clear_handler()
            tts.pool.discard(conn)
            return
        tts.pool.returning(conn)
        tts._recycle(conn, self._session)  # its handler replaces the stream's at once

    def _deliver(self, data: bytes) -> None:
        if self._linear16:
            if self._carry:
                data = self._carry + data
                self._carry = b""
            if len(data) % 2:
                data, self._carry = data[:-1], data[-1:]
        else:
            data = decode_to_pcm(self._tts.wire_encoding, data)
        if data:
            # Whole int16 samples by construction (carry above, or decoded): no checks.
            if type(data) is not bytes:
                data = bytes(data)
            self._emit(AudioFrame.trusted(data, self.sample_rate, 1, self.generation))

    def _end_audio(self) -> None:
        if self._carry:
            log.warning("%s: dropped a trailing odd byte of 16-bit audio", self.provider)
            self._carry = b""


def _clock_of(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``, or ``time.monotonic`` itself where that is all ``loop.time`` does
    (asyncio's own loops): one Python call less per chunk. A virtual-time loop keeps its
    own clock."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time
