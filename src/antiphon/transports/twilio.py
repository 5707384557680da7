"""A phone call through Twilio Media Streams: ``TwilioBridge`` between the call's
WebSocket and one agent session.

The same bridge speaks the carriers that copy Media Streams (Telnyx, Plivo, Exotel) and
Vonage's WebSocket: ``dialect=`` (:mod:`antiphon.protocols.media_stream`) says how the
carrier spells its messages, its codec and rate; everything below is shared. A
touch-tone reaches the session's listeners as
:class:`~antiphon.agent.events.DTMFReceived`.

The caller's μ-law 8 kHz audio goes to ``session.push_audio`` (the session converts it);
the agent's paced 20 ms frames are converted to 8 kHz, μ-law encoded and sent as
``media`` messages. ``stop`` or a closed socket ends the call; every send has a deadline.

Barge-in on a phone is decided by what the carrier has buffered, so the bridge keeps
that buffer small and knows what was heard:

- **Playout tracking.** A ``mark`` named ``p<epoch>.<n>`` follows every
  ``mark_every``-th frame; Twilio echoes it when the audio before it has played, so the
  bridge knows the last frame the caller heard. It sends at most ``max_ahead`` seconds
  (300 ms) beyond that: the pump waits for the echo before sending more. The echo comes
  a playout buffer and a network round trip after the frame was sent, so the window
  must cover both, or the audio stalls on every mark: 100 ms (the first default) did
  not, with 150 ms of echo delay (``tests/test_phone_calls.py``) nor at 100 calls on one
  machine (``bench/capacity.py --sides phone``). The window costs barge-in nothing: the
  ``clear`` drops whatever the carrier buffered. A peer that
  never echoes marks (``mark_timeout``; five times that once it echoed one) turns tracking
  off for the call (audio is then sent as paced).
- **Pause = clear.** The moment the session pauses its output (speech over the agent,
  :class:`~antiphon.agent.events.AgentPaused`) the bridge sends ``clear`` (queued by a
  synchronous listener, so before any later audio; audio still queued to send is
  taken back, so the clear does not wait behind it) and sends nothing until it resumes
  or is interrupted. The frames sent but not yet played are kept: on
  :class:`~antiphon.agent.events.AgentResumed` (a false interruption) they are sent
  again first, so the caller hears the answer on from where it stopped for them, not
  from where the bridge had got to. On :class:`~antiphon.agent.events.Interrupted` they
  are dropped, and ``clear`` sent unless nothing was sent since the last one (the media
  still queued to send taken back first, as at a pause, and counted in
  ``audio_dropped``).
- Marks echoed because of a ``clear`` carry an older epoch and are ignored. A ``mark``
  named ``turn-<generation>`` after each turn tells when Twilio has played it.
- **A turn ends whole.** The converter holds back the resampler's delay (4 ms to 8 kHz)
  and a partial media frame; at :class:`~antiphon.agent.events.TurnCompleted` they are
  sent (the frame padded with silence) ahead of the turn's mark, after the turn's last
  frame even when the pump still waits for room to send it. ``Interrupted`` drops them.

Recording (optional ``recorder``, a :class:`~antiphon.audio.recording.CallRecorder`): the
caller's frames where they go to ``session.push_audio``, the agent's paced frames where
they are sent (once: frames sent again after a false interruption are not added twice;
the at most ``max_ahead`` seconds that a ``clear`` drops from the carrier's buffer are
in the file). The recorder is closed when the call ends, however it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from antiphon.agent.events import (
    AgentEvent,
    AgentPaused,
    AgentResumed,
    Interrupted,
    TurnCompleted,
)
from antiphon.agent.session import AgentSession
from antiphon.audio.codecs import ulaw_decode, ulaw_encode
from antiphon.audio.frame import AudioFrame
from antiphon.audio.recording import CallRecorder, finish_recording
from antiphon.audio.resample import AudioConverter
from antiphon.errors import StreamClosedError
from antiphon.protocols import twilio as tw
from antiphon.protocols.media_stream import Dialect
from antiphon.transports.base import NORMAL, POLICY, TOO_BIG, CallBridge, CallEnded, WebSocketLike
from antiphon.transports.limits import guard_of
from antiphon.transports.phone_events import deliver_dtmf

__all__ = ["TwilioBridge"]

log = logging.getLogger(__name__)
FRAME = 0.02  # seconds per media message


class TwilioBridge(CallBridge[tuple[bool, str | bytes]]):
    """One phone call: ``await TwilioBridge(session, ws).run()`` until it ends."""

    name = "twilio"

    def __init__(
        self,
        session: AgentSession,
        ws: WebSocketLike,
        *,
        send_timeout: float = 5.0,
        max_ahead: float = 0.3,
        mark_every: int = 2,
        mark_timeout: float = 1.0,
        dialect: Dialect = tw.DIALECT,
        recorder: CallRecorder | None = None,
    ) -> None:
        self.dialect = dialect  # the carrier's spelling (protocols/media_stream.py)
        self.recorder = recorder
        self.name = dialect.name
        super().__init__(session, ws, send_timeout=send_timeout)
        self._limits, self._guard = guard_of(ws)  # a guard checks sizes, rates and deadlines
        self.max_ahead = max_ahead
        self.mark_every = max(1, mark_every)
        self.mark_timeout = mark_timeout
        self._ahead_frames = max(self.mark_every, round(max_ahead / dialect.frame_seconds))
        self._sent = 0  # media frames sent (queued) in this call; the index of the last
        self._played = 0  # the last frame Twilio said it played
        self._epoch = 0  # bumped by every clear: older playout marks are stale
        self._unplayed: deque[tuple[int, bytes]] = deque()  # (index, μ-law) not yet played
        self._held: list[bytes] = []  # cleared at a pause, sent again on resume
        self._paused = False
        self._room = asyncio.Event()
        self._room.set()
        self._tracking = True  # off if the peer never echoes marks
        self.marks_echoed = 0
        self._cleared = True  # nothing sent since the last clear (or ever)
        self.state = dialect.new_state()
        self._started = asyncio.Event()
        self._converter = AudioConverter(dialect.sample_rate, 1)
        self._generation = 0  # of the audio the converter holds
        self._pending = b""  # converted audio short of a whole media frame
        self._holding: int | None = None  # the generation of a frame the pump waits to send
        self._completed: int | None = None  # a turn that completed while it waited
        self.media_sent = 0
        self.media_received = 0
        self.clears = 0
        self.dtmf_received = 0

    async def run(self) -> int:
        """Run the call (see :meth:`CallBridge.run`); the recording is closed after it."""
        try:
            return await super().run()
        finally:
            if self.recorder is not None:
                await finish_recording(self.recorder, self.name)

    def _on_event(self, event: AgentEvent) -> None:
        if self.state.start is None:
            return
        if isinstance(event, AgentPaused):
            self._paused = True
            self._held = [ulaw for _, ulaw in self._unplayed]
            # audio still queued here would only go out ahead of the clear to be dropped
            # by Twilio: the clear goes first (the frames are held, sent again on resume)
            self._discard_queued_media()
            self._clear()
        elif isinstance(event, AgentResumed):
            self._paused = False
            held, self._held = self._held, []
            for ulaw in held:  # what the caller did not hear, first
                self._send_frame(ulaw)
            self._update_room()
        elif isinstance(event, Interrupted):
            self._paused = False
            self._held = []
            self._pending = b""  # barge-in: what the converter holds is dropped too
            self._converter.reset()
            if not self._cleared:
                # as at a pause, the clear goes first; the frames are dropped, not held
                self.audio_dropped += self._discard_queued_media()
                self._clear()
            self._update_room()
        elif isinstance(event, TurnCompleted):
            if self._holding == event.generation:
                self._completed = event.generation  # ended by the pump after that frame
            else:
                self._end_turn(event.generation)

    def _end_turn(self, generation: int) -> None:
        """The turn's last frame went through: send the rest of its audio, then its mark.

        The converter holds the resampler's delay and a partial media frame of the turn's
        end; they are sent, the frame padded with silence (a barge-in dropped them before).
        """
        if generation == self._generation and not self._paused:
            tail = self._converter.flush().data
            self._pending += self._encode(tail)
            if self._pending:
                silence = self._encode(bytes(2))  # one sample
                missing = -len(self._pending) % self.dialect.frame_bytes
                self._pending += silence * (missing // len(silence))
                self._send_pending()
        name = f"turn-{generation}"
        self.state.sent_mark(name)
        self._queue((False, self.dialect.encode_mark(self.state.stream_sid, name)))

    def _discard_queued_media(self) -> int:
        """Take back the media messages still queued to send (marks and every other
        message stay, in order); return how many. They count as sent: :meth:`_clear`
        follows, which counts everything sent as done."""
        return self._out.discard(lambda e: e[1][0])  # (audio?, (media?, message))

    def _clear(self) -> None:
        """Tell Twilio to drop what it buffered; everything sent counts as done."""
        self._queue((False, self.dialect.encode_clear(self.state.stream_sid)))
        self.state.cleared()
        self.clears += 1
        self._epoch += 1
        self._unplayed.clear()
        self._played = self._sent
        self._cleared = True
        self._update_room()

    def _update_room(self) -> None:
        room = not self._paused and (
            not self._tracking or self._sent - self._played < self._ahead_frames
        )
        if room:
            self._room.set()
        else:
            self._room.clear()

    def _played_up_to(self, name: str) -> None:
        """A playout mark came back: frames up to its index were heard."""
        epoch, _, index = name[1:].partition(".")
        if not (epoch.isdigit() and index.isdigit()) or int(epoch) != self._epoch:
            return  # echoed by a clear, or not ours
        n = int(index)
        self.marks_echoed += 1
        if n > self._played:
            self._played = n
            while self._unplayed and self._unplayed[0][0] <= n:
                self._unplayed.popleft()
            self._update_room()

    async def _pump_audio(self) -> None:
        await self._started.wait()  # media needs the stream's id
        output = self.session.output
        async for frame in output:
            self._holding = frame.generation
            try:
                await self._wait_room()
                if frame.generation >= output.generation:  # else interrupted while it waited
                    self._audio_out(frame.data, frame.generation)
            finally:
                self._holding = None
            if self._completed == frame.generation:  # the turn ended while it waited
                self._completed = None
                self._end_turn(frame.generation)
        await asyncio.Future()  # the output closed: the call ends by the reader or end()

    async def _wait_room(self) -> None:
        """Wait until the carrier's buffer has room (or playout tracking is given up)."""
        while not self._room.is_set():
            if self._paused:
                await self._room.wait()
                continue
            # a peer that never echoed a mark may not do marks: give it a short time;
            # one that did is only slow (its echoes come late): give it longer
            timeout = self.mark_timeout * (5 if self.marks_echoed else 1)
            try:
                async with asyncio.timeout(timeout):
                    await self._room.wait()
            except TimeoutError:
                if not self._paused:
                    log.warning(
                        "twilio: no playout mark echoed in %.1fs; sending as paced",
                        timeout,
                    )
                    self._tracking = False
                    self._update_room()

    def _send_frame(self, ulaw: bytes) -> None:
        sid = self.state.stream_sid
        self._sent += 1
        self._unplayed.append((self._sent, ulaw))
        self._cleared = False
        self._queue((True, self.dialect.encode_media(sid, ulaw)))
        if self._tracking and self._sent % self.mark_every == 0:
            name = f"p{self._epoch}.{self._sent}"
            self.state.sent_mark(name)
            self._queue((False, self.dialect.encode_mark(sid, name)))
        self._update_room()

    def _audio_out(self, pcm: bytes, generation: int) -> None:
        if generation != self._generation:  # a new turn: what is left of the old one
            # (ended by neither TurnCompleted nor Interrupted) is not its audio
            self._generation, self._pending = generation, b""
            self._converter.reset()
        frame = AudioFrame.trusted(pcm, self.session.output.sample_rate)  # a frame's data
        if self.recorder is not None:
            self.recorder.agent(frame)
        self._pending += self._encode(self._converter.process(frame).data)
        self._send_pending()

    def _encode(self, pcm: bytes) -> bytes:
        """PCM16 at the carrier's rate in the carrier's codec."""
        return ulaw_encode(pcm) if self.dialect.codec == "mulaw" else pcm

    def _send_pending(self) -> None:
        """Send every whole media frame converted so far; the rest waits for more."""
        size = self.dialect.frame_bytes  # 20 ms per media message (Exotel: 100 ms)
        while len(self._pending) >= size:
            chunk = self._pending[:size]
            self._pending = self._pending[size:]
            self._send_frame(chunk)

    def _send_now(self, item: tuple[bool, str | bytes]) -> bool:
        media, message = item
        if self._direct is None or not self._direct.send_now(message):
            return False
        self.media_sent += media
        return True

    async def _send_one(self, item: tuple[bool, str | bytes]) -> None:
        media, message = item
        if isinstance(message, bytes):  # Vonage's audio frames
            await self.ws.send_bytes(message)
        else:
            await self.ws.send_text(message)
        self.media_sent += media

    takes_direct = True  # every message: the reader's handling is synchronous

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()  # checked by the guard, if ws is one
            if message is None:
                raise CallEnded(NORMAL, f"{self.dialect.name} closed the stream")
            self._handle(message)

    def _takes_now(self, message: bytes | str) -> bool:
        return self._guard is None or not self._guard.pending

    def _handle_now(self, message: bytes | str) -> None:
        if self._guard is not None:
            self._guard.admit(message)
        self._handle(message)

    def _handle(self, message: bytes | str) -> None:
        """One message of the carrier's, checked by the guard; raises :class:`CallEnded`
        when it ends the call."""
        limits, guard = self._limits, self._guard
        if len(message) > limits.max_twilio_message_bytes:
            raise CallEnded(TOO_BIG, "a Media Streams message too large")
        event = self.dialect.parse(message, max_depth=limits.max_json_depth)
        if isinstance(event, tw.Malformed):
            raise CallEnded(POLICY, f"malformed message: {event.reason}")
        try:
            self.state.feed(event)
        except tw.ProtocolViolation as exc:
            raise CallEnded(POLICY, str(exc)) from None
        if isinstance(event, tw.Start):
            self._started.set()
        elif isinstance(event, tw.Mark) and event.name.startswith("p"):
            self._played_up_to(event.name)
        elif isinstance(event, tw.Dtmf):
            self._dtmf(event.digit)
        elif isinstance(event, tw.Media):
            mulaw = self.dialect.codec == "mulaw"
            seconds = len(event.payload) / (self.dialect.sample_rate * (1 if mulaw else 2))
            most = max(
                limits.max_twilio_media_bytes / tw.SAMPLE_RATE, 2 * self.dialect.frame_seconds
            )
            if seconds > most:
                raise CallEnded(TOO_BIG, f"media of {len(event.payload)} bytes ({seconds:.3f} s)")
            if guard is not None:
                guard.spend_audio(seconds)
            self.media_received += 1
            if mulaw:  # two bytes per μ-law byte: whole samples, no checks per frame
                pcm = AudioFrame.trusted(ulaw_decode(event.payload), self.dialect.sample_rate)
            else:  # linear16 from the peer: its length is checked
                pcm = AudioFrame(event.payload, self.dialect.sample_rate, 1)
            try:
                self.session.push_audio(pcm)
            except StreamClosedError as exc:
                raise CallEnded(1011, f"the agent ended: {exc}") from None
            if self.recorder is not None:
                self.recorder.user(pcm)
        elif isinstance(event, tw.Stop):
            raise CallEnded(NORMAL, "the call ended")

    def _dtmf(self, digit: str) -> None:
        """A touch-tone: to the session's listeners as ``DTMFReceived``."""
        try:
            deliver_dtmf(self.session, digit)
        except ValueError as exc:
            raise CallEnded(POLICY, str(exc)) from None
        self.dtmf_received += 1
