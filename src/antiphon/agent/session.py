"""``AgentSession``: the cascading voice pipeline (VAD + STT → LLM + tools → TTS).

A transport feeds the user's audio with :meth:`AgentSession.push_audio` and plays
:attr:`AgentSession.output`, an :class:`~antiphon.audio.OutputTrack` of paced 20 ms
frames. In between, the session listens, decides when the user's turn ended, thinks,
speaks, and yields the floor the moment the user talks over it.

How it is built (DESIGN rules 1, 4, 8, 10):

- **One controller task decides everything.** VAD events (from :meth:`push_audio`, run
  inline: a VAD is a small synchronous state machine), STT transcripts (from one reader
  task), replies' progress and timers all arrive in one mailbox, in order; the controller
  alone owns the conversation's state, so no flag is shared between tasks.
- **A reply is one owned task** (LLM rounds with tools, then speech: the I/O of
  :mod:`antiphon.agent.reply`), cancelled as a whole on interruption: its LLM and TTS
  streams close in its ``finally``. A reply started speculatively (on an interim
  transcript) speaks nothing and shows nothing until the turn is committed. Every reply
  has a generation; the output track drops audio of older generations, so audio already
  on its way when the user interrupted never plays.
- **Each sentence is one synthesis stream**, opened up to ``tts_lookahead`` sentences
  ahead of the one playing; the audio of each sentence is therefore known exactly, and
  when the user interrupts, the history keeps only the text that was heard
  (:mod:`antiphon.agent.playback`).
- **Turn-taking runs on audio time** (the VAD's positions), and the few waits on wall
  time (the STT final, the tool filler, a turn model's hold) run on the session's clock.
  The wait for the final ends on the first sufficient evidence: a final that covers the
  speech, or the STT's answer to the flush (``Transcript.flushed``, even empty).
- **A turn model only advises** (``TurnOptions.end_of_turn``): at the VAD's short probe
  one owned task asks it and posts the verdict, numbered by pause, to the mailbox; a
  verdict of a pause the user has spoken since is dropped, and a hold timer (armed at
  the fallback silence first) ends the pause when the model is slow or silent.
- **A failed task fails the session** (DESIGN rule 12, a trio nursery): the session's
  :class:`~antiphon.aio.tasks.TaskOwner` reports a task that dies with an exception at
  once; the session then emits ``AgentError(recoverable=False)``, enters ``CLOSED`` with
  the reason and keeps the error in :attr:`AgentSession.error` (an ``AntiphonError``; a
  bug is an ``InternalError`` whose ``__cause__`` is the original). ``events()``
  iterators get those two events, then end; ``wait_idle()`` and ``wait_for()`` raise the
  error. A provider's failure is not a task's: a failed STT stream is replaced after a
  backoff and a failed reply ends only its turn, each with a spoken fallback line; only
  an unrecoverable error (authentication, quota) fails the session.
- **Close always completes.** Closing (by :meth:`AgentSession.aclose` or a failure)
  enters ``CLOSED`` and ends the event hub at once, synchronously, then one close task
  closes the output track, stops every task (bounded by ``drain_timeout``) and the STT
  stream. ``aclose()`` waits for that task even if it is itself cancelled mid-way, then
  re-raises the cancellation; a second ``aclose()`` waits for the same task.
- **Every queue is bounded** (rule 13): the mailbox holds ``MAILBOX_SIZE`` items with
  the ``FAIL`` policy (the controller never waits, so a full mailbox means it is stuck:
  the session fails); each ``events()`` subscriber at most 1,024 unread events
  (disconnected beyond: :mod:`antiphon.agent.hub`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from opentelemetry import trace

from antiphon import metrics
from antiphon.agent.events import (
    AgentError,
    AgentEvent,
    AgentPaused,
    AgentReplied,
    AgentResumed,
    AgentState,
    DTMFReceived,
    FalseInterruption,
    Interrupted,
    MachineDetected,
    StateChanged,
    TurnCompleted,
    TurnMetrics,
    TurnUnanswered,
    UserTranscribed,
    UserTurnEnded,
)
from antiphon.agent.hub import EventHub, Subscription
from antiphon.agent.options import AgentOptions
from antiphon.agent.reply import Reply, ReplyNews, ReplyRunner
from antiphon.agent.turns import UserTurn, content_words
from antiphon.aio.channel import Channel, ChannelClosed, Overflow
from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.aio.tasks import TaskOwner, shielded_wait
from antiphon.audio.frame import AudioFrame
from antiphon.audio.track import OutputTrack
from antiphon.errors import (
    AntiphonError,
    AuthError,
    ChannelFull,
    ConfigError,
    InternalError,
    ProviderError,
    StreamClosedError,
)
from antiphon.services.llm import LLM, ChatContext, ChatMessage
from antiphon.services.stt import STT, RecognizeStream, Transcript
from antiphon.services.tools import FunctionTool, ToolThreads
from antiphon.services.tts import TTS
from antiphon.services.turn import TurnAudio, TurnVerdict
from antiphon.services.vad import VAD, SpeechEnd, SpeechGate, SpeechStart, VADEvent

__all__ = ["AgentSession"]

log = logging.getLogger(__name__)
#: The default of ``AgentOptions.unanswered_message``: said when the recogniser lost a turn.
UNANSWERED_FALLBACK = "Sorry, I missed that. Could you say it again?"
tracer = trace.get_tracer("antiphon.agent")

MAILBOX_SIZE = 4096
"""Items the controller's mailbox holds (policy: fail — the session fails)."""

# ------------------------------------------------------------------ mailbox messages


@dataclass(frozen=True, slots=True)
class _Vad:
    event: VADEvent
    lag: float  # seconds of audio between the event's time and the newest audio
    at: float  # clock time the audio was pushed
    # the event's time in seconds of the STT stream's audio, when the stream hears all
    # the audio the VAD hears (a cloud STT); None otherwise
    stt_time: float | None = None
    stream: RecognizeStream | None = None


@dataclass(frozen=True, slots=True)
class _Overlap:
    duration: float  # seconds the current user speech has lasted


@dataclass(frozen=True, slots=True)
class _Heard:
    transcript: Transcript
    stream: RecognizeStream | None = None


@dataclass(frozen=True, slots=True)
class _SttEnded:
    stream: RecognizeStream
    error: ProviderError | None


@dataclass(frozen=True, slots=True)
class _Timer:
    kind: str
    token: int


@dataclass(frozen=True, slots=True)
class _Say:
    text: str
    allow_interruptions: bool
    add_to_history: bool
    notice: bool = False  # a fallback line of the session's own: never apologised for
    offline: bool = False  # say it with the fallback TTS (the TTS is the one failing)
    user_text: str = ""  # the user's words this line answers (a misheard fragment)


@dataclass(frozen=True, slots=True)
class _ReopenStt:
    pass


@dataclass(frozen=True, slots=True)
class _Verdict:
    """The end-of-turn model's verdict on the pause numbered ``pause``."""

    pause: int
    verdict: TurnVerdict


@dataclass(frozen=True, slots=True)
class _Typed:
    text: str


@dataclass(frozen=True, slots=True)
class _InputEnded:
    pass


# ------------------------------------------------------------------------- session


class AgentSession:
    """A voice agent talking with one user (see the module docstring).

    ``instructions``: the system prompt. ``tools``: functions the LLM may call
    (``@function_tool``). ``output_rate``: the transport's rate (default: the TTS's).
    ``turn_log``: a path or text stream that gets one JSON line per turn.
    ``fallback_tts``: an offline TTS (espeak, Piper) that says ``error_message`` when
    the TTS fails mid-turn.
    Use ``async with AgentSession(...) as session`` (or :meth:`start` / :meth:`aclose`).
    The services are not closed by the session: their owner closes them.
    """

    def __init__(
        self,
        *,
        vad: VAD,
        stt: STT,
        llm: LLM,
        tts: TTS,
        instructions: str = "",
        tools: Sequence[FunctionTool] = (),
        options: AgentOptions | None = None,
        output_rate: int | None = None,
        clock: Clock | None = None,
        chat_context: ChatContext | None = None,
        turn_log: str | Path | IO[str] | None = None,
        fallback_tts: TTS | None = None,
    ) -> None:
        for name, value, kind in (
            ("vad", vad, VAD),
            ("stt", stt, STT),
            ("llm", llm, LLM),
            ("tts", tts, TTS),
        ):
            if not isinstance(value, kind):
                raise ConfigError(f"AgentSession {name}= must be a {kind.__name__} plugin")
        if not isinstance(instructions, str):
            raise ConfigError("AgentSession instructions must be a str")
        if not all(isinstance(t, FunctionTool) for t in tools):
            raise ConfigError("AgentSession tools must be decorated with @function_tool")
        if fallback_tts is not None and not isinstance(fallback_tts, TTS):
            raise ConfigError("AgentSession fallback_tts= must be a TTS plugin")
        self.vad, self.stt, self.llm, self.tts = vad, stt, llm, tts
        self.fallback_tts = fallback_tts
        self.tools = tuple(tools)
        self.options = options or AgentOptions()
        if not isinstance(self.options, AgentOptions):
            raise ConfigError("AgentSession options must be AgentOptions")
        self.clock: Clock = clock or MonotonicClock()
        self.output = OutputTrack(output_rate or tts.sample_rate, 1, clock=self.clock)
        self.history = chat_context.copy() if chat_context is not None else ChatContext()
        if instructions and not (
            self.history.messages and self.history.messages[0].role == "system"
        ):
            self.history.messages.insert(0, ChatMessage("system", instructions))
        self.turns: deque[TurnMetrics] = deque(maxlen=1000)
        """Metrics of the latest turns (the last 1,000)."""
        self._log_file: IO[str] | None = None
        self._own_log = False
        if isinstance(turn_log, str | Path):
            self._log_file = open(turn_log, "a", encoding="utf-8")  # noqa: SIM115
            self._own_log = True
        elif turn_log is not None:
            self._log_file = turn_log

        self._tasks = TaskOwner("agent-session", on_failure=self._on_task_failed)
        self._tool_threads = ToolThreads(4, name="agent-tool")  # sync tools run here
        self._runner = ReplyRunner(
            llm=llm,
            tts=tts,
            tools=self.tools,
            options=self.options,
            clock=self.clock,
            output=self.output,
            tool_threads=self._tool_threads,
            emit=self._emit,
            report=self._post,
        )
        self._mailbox: Channel[object] = Channel(
            MAILBOX_SIZE, Overflow.FAIL, name="agent session mailbox"
        )
        self._hub = EventHub()
        self._state = AgentState.LISTENING
        self._state_changed = asyncio.Event()
        self._started = False
        self._closing = False  # close began (by aclose() or a failure); never reset
        self._close_task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._error: AntiphonError | None = None

        # STT stream (replaced after a failure, after a backoff; None meanwhile)
        self._stt_stream: RecognizeStream | None = None
        self._stt_failures = 0  # consecutive: reset by a transcript
        self._stt_reopen: asyncio.Task[None] | None = None
        # an in-process recogniser hears only speech (and a little before it)
        self._stt_gate = SpeechGate(enabled=stt.speech_only)

        # push_audio side (the event loop's thread only; read by nobody else)
        self._speech_start: float | None = None  # audio time the current speech began
        self._voiced_until = 0.0  # audio time of the last window heard as speech
        # seconds of speech at which the controller hears how long the user spoke (for
        # the interruption thresholds while the agent speaks and while it thinks)
        opts = self.options.interruption
        self._overlap_marks = sorted({opts.min_duration, opts.min_duration_thinking})
        self._overlap_step = 0  # marks passed by the current speech

        # controller state
        self._gen = 0
        self._reply: Reply | None = None
        self._says: list[_Say] = []
        self._turn = UserTurn()  # what the user said in this turn (pure state)
        self._user_speaking = False
        self._awaiting_final = False
        self._final_missed = False  # the turn ended empty before the STT final came
        self._speech_end_at: float | None = None
        self._final_delay: float | None = None
        self._overlap = False  # the user speaks over the agent (not yet an interruption)
        self._overlap_paused = False
        self._overlap_thinking = False  # the overlap began before the reply spoke
        self._overlap_duration = 0.0
        self._timer_token = 0
        self._timer: asyncio.Task[None] | None = None
        self._input_ended = False
        self._typed: list[str] = []  # send_text() turns waiting for an uninterruptible reply

        # semantic end of turn (TurnOptions.end_of_turn): the user's audio for the model,
        # the pause being decided (numbered: a verdict on an older one is dropped)
        eot = self.options.turn.end_of_turn
        detector = eot.detector if eot is not None else None
        self._turn_audio = (
            TurnAudio(detector.sample_rate, detector.max_audio) if detector is not None else None
        )
        self._pause = 0
        self._pause_item: _Vad | None = None  # the SpeechEnd of the pause being decided
        self._eot_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def state(self) -> AgentState:
        return self._state

    @property
    def error(self) -> AntiphonError | None:
        """Why the session closed, when a stage or task failed beyond recovery."""
        return self._error

    @property
    def generation(self) -> int:
        return self._gen

    async def start(self) -> None:
        """Open the STT stream and start listening."""
        if self._started or self._closing:
            raise StreamClosedError("the session was already started (or closed)")
        self._started = True
        self.vad.on_decided(self._vad_decided)  # a worker's VAD events, as they come
        self._open_stt()
        self._tasks.spawn(self._controller(), name="controller")

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

    async def aclose(self, *, drain: bool = False) -> None:
        """End the session; idempotent and bounded, complete even if cancelled mid-way.

        ``drain=True`` first lets the reply in progress finish speaking, for at most
        ``options.drain_timeout`` seconds; then everything is cancelled. If the caller is
        cancelled while closing, the close still finishes (it is bounded), then the
        cancellation is re-raised. Never raises the session's own failure (see
        :attr:`error`).
        """
        if drain and not self._closing and self._started:
            with contextlib.suppress(TimeoutError, AntiphonError):
                async with asyncio.timeout(self.options.drain_timeout):
                    await self.wait_idle()
        self._begin_close("closed")
        assert self._close_task is not None
        await shielded_wait(self._close_task)

    def _begin_close(self, reason: str) -> None:
        """Enter CLOSED now (synchronously) and start the one close task; idempotent."""
        if self._closing:
            return
        self._closing = True
        self._mailbox.close()
        self._cancel_timer()
        reply, self._reply = self._reply, None
        if reply is not None:
            if reply.task is not None:
                reply.task.cancel()
            if reply.span is not None:
                reply.span.end()
        if self._stt_stream is not None:
            self._stt_stream.cancel()
        if self._stt_reopen is not None:
            self._stt_reopen.cancel()
        self.output.interrupt(self._gen + 1)  # O(1): not one more frame of the reply
        self._set_state(AgentState.CLOSED, reason)
        self._hub.close()
        self._idle.set()
        self._close_task = asyncio.get_running_loop().create_task(
            self._finish_close(), name="agent-session:close"
        )

    async def _finish_close(self) -> None:
        """Close the output, stop every task, close the STT stream (all bounded)."""
        try:
            await self.output.aclose()
            await self._tasks.aclose(self.options.drain_timeout)
            if self._stt_stream is not None:
                await self._stt_stream.aclose()
            await self._tool_threads.aclose(self.options.drain_timeout)
        except Exception:  # pragma: no cover - each step is bounded and does not raise
            log.exception("agent session: closing failed")
        finally:
            if self._own_log and self._log_file is not None:
                self._log_file.close()

    def _on_task_failed(self, task: asyncio.Task[Any], exc: BaseException) -> None:
        """A task of the session died: the session fails with the error (rule 12)."""
        stage = task.get_name().rpartition(":")[2] or "session"
        if isinstance(exc, AntiphonError):
            error = exc
        else:
            error = InternalError(
                f"failed unexpectedly: {exc!r}", owner="agent session", task=stage
            )
            error.__cause__ = exc
        self._fail(error, stage)

    def _fail(self, error: AntiphonError, stage: str, reason: str | None = None) -> None:
        """Fail for good: emit the error, enter CLOSED with the reason, close everything."""
        if self._closing:
            log.warning("agent session: %s failed while closing: %s", stage, error)
            return
        self._error = error
        self._emit(AgentError(stage, error, False, self._gen))
        self._begin_close(reason or f"{stage} failed: {error}")

    def _post(self, item: object) -> bool:
        """Put ``item`` in the controller's mailbox; False once closed.

        A full mailbox means the controller is stuck: the session fails.
        """
        try:
            self._mailbox.send_nowait(item)
        except ChannelClosed:
            return False
        except ChannelFull as exc:
            self._fail(exc, "controller", f"the controller fell behind: {exc}")
            return False
        return True

    async def wait_idle(self) -> None:
        """Wait until nobody speaks and no reply is pending (the turn is over).

        Returns once the session is closed; raises :attr:`error` if the session failed.
        """
        while True:
            await self._idle.wait()
            await asyncio.sleep(0)  # let queued mailbox items be taken first
            if self._idle.is_set():
                if self._error is not None:
                    raise self._error
                return

    # ------------------------------------------------------------------ input

    def push_audio(self, frame: AudioFrame) -> None:
        """The user's audio, as it arrives (any rate and channel count)."""
        if not isinstance(frame, AudioFrame):
            raise ConfigError(f"push_audio() takes an AudioFrame, got {type(frame).__name__}")
        if not self._started or self._closing:
            detail = f" (it failed: {self._error})" if self._error else ""
            raise StreamClosedError(f"push_audio() needs a started, open session{detail}")
        if self._input_ended:
            raise StreamClosedError("push_audio() after end_input()")
        events = self.vad.process(frame)
        if self._turn_audio is not None:
            self._turn_audio.push(frame)
        stream = self._stt_stream
        if stream is not None and not stream.done:
            # audio is lost while a failed STT stream is replaced; a stream that fails
            # on this push (its provider fell behind) is reported by its reader
            with contextlib.suppress(StreamClosedError):
                for part in self._stt_gate.feed(frame, self.vad.speaking or bool(events)):
                    stream.push_audio(part)
        self._after_vad(events)

    def end_input(self) -> None:
        """The user's audio is over (a file ended): close an open speech segment."""
        if not self._started or self._closing or self._input_ended:
            return
        self._after_vad(self.vad.flush())
        self._input_ended = True
        self._post(_InputEnded())

    def _vad_decided(self, events: list[VADEvent]) -> None:
        if not self._closing and not self._input_ended:
            self._after_vad(events)

    def _after_vad(self, events: list[VADEvent]) -> None:
        now = self.clock.now()
        position = self.vad.position
        stream = self._stt_stream
        # a stream fed every frame (no speech gate) hears the VAD's audio, so a VAD time
        # maps onto the stream's time; its transcripts' times then say what they cover
        aligned = stream if stream is not None and not self._stt_gate.enabled else None
        for ev in events:
            self._idle.clear()
            lag = max(0.0, position - ev.time)
            stt_time = aligned.audio_seconds - lag if aligned is not None else None
            self._post(_Vad(ev, lag, now, stt_time, aligned))
            if isinstance(ev, SpeechStart):
                self._speech_start = ev.time + min(self.vad.options.padding, ev.time)
                self._voiced_until = position
                self._overlap_step = 0
            else:
                self._speech_start = None
        marks = self._overlap_marks
        if self._speech_start is not None and self._overlap_step < len(marks):
            # how long the user has been talking: the silence before a SpeechEnd is not
            if self.vad.probability >= self.vad.options.activation_threshold:
                self._voiced_until = position
            duration = self._voiced_until - self._speech_start
            if duration >= marks[self._overlap_step]:
                while self._overlap_step < len(marks) and duration >= marks[self._overlap_step]:
                    self._overlap_step += 1
                self._post(_Overlap(duration))

    def say(
        self, text: str, *, allow_interruptions: bool = True, add_to_history: bool = True
    ) -> None:
        """Speak ``text`` (a greeting, a notice) as a turn of the agent's own."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("say() needs non-empty text")
        if not self._started or self._closing:
            raise StreamClosedError("say() needs a started, open session")
        self._idle.clear()
        self._post(_Say(text.strip(), allow_interruptions, add_to_history))

    def send_text(self, text: str) -> None:
        """A user turn typed rather than spoken (a chat box on a voice call).

        It is a whole turn: it interrupts an interruptible reply (as barge-in does), joins
        the text of a reply dropped before it spoke, and is answered by voice like a
        spoken turn. While an uninterruptible reply speaks it waits for its end.
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("send_text() needs non-empty text")
        if not self._started or self._closing:
            raise StreamClosedError("send_text() needs a started, open session")
        self._idle.clear()
        self._post(_Typed(" ".join(text.split())))

    # ------------------------------------------------------------------ events

    def events(self) -> Subscription:
        """Every event from this call on, until the session closes.

        The subscription starts when ``events()`` is called (not at the first
        ``__anext__``). Iteration ends after ``StateChanged(..., CLOSED)``; when the
        session failed, the ``AgentError(recoverable=False)`` before it carries the error
        (also in :attr:`error`). A subscriber more than 1,024 events behind is
        disconnected: its iteration raises ``ChannelFull`` after the queued events.
        """
        return self._hub.subscribe()

    def on_event(self, fn: Callable[[AgentEvent], None]) -> Callable[[], None]:
        """Call ``fn(event)`` synchronously as each event happens; returns the remover."""
        return self._hub.add_listener(fn)

    def notify(self, event: DTMFReceived | MachineDetected) -> None:
        """Deliver an event of the line to the session's listeners (for transports).

        A transport calls it with what the call says besides audio: a key press
        (:class:`~antiphon.agent.events.DTMFReceived`) or who answered an outbound call
        (:class:`~antiphon.agent.events.MachineDetected`). Listeners get it in order with
        the session's own events; after close it is dropped.

        Raises:
            ConfigError: ``event`` is not one of those.
        """
        if not isinstance(event, DTMFReceived | MachineDetected):
            raise ConfigError(
                f"notify() takes DTMFReceived or MachineDetected, got {type(event).__name__}"
            )
        if self._closing:
            return
        self._emit(event)

    def _emit(self, event: AgentEvent) -> None:
        self._hub.emit(event)

    async def wait_for(self, *states: AgentState) -> AgentState:
        """Wait until the session is in one of ``states`` (or closed); return the state.

        Raises :attr:`error` if the session failed (unless ``CLOSED`` is among ``states``).
        """
        while self._state not in states and self._state is not AgentState.CLOSED:
            await self._state_changed.wait()
        if self._error is not None and self._state not in states:
            raise self._error
        return self._state

    def _set_state(self, new: AgentState, reason: str) -> None:
        old = self._state
        if new is old or old is AgentState.CLOSED:
            return
        self._state = new
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        log.debug("agent state %s -> %s (%s)", old.value, new.value, reason)
        self._emit(StateChanged(old, new, reason, self._gen))

    def _settle_state(self, reason: str) -> None:
        """The state that follows from the facts, when no reply speaks."""
        if self._closing:
            return
        if self._reply is not None:
            self._set_state(
                AgentState.SPEAKING if self._reply.speaking else AgentState.THINKING, reason
            )
        elif self._user_speaking:
            self._set_state(AgentState.USER_SPEAKING, reason)
        else:
            self._set_state(AgentState.LISTENING, reason)
        self._update_idle()

    def _update_idle(self) -> None:
        if self._closing:
            self._idle.set()
            return
        idle = (
            self._reply is None
            and not self._user_speaking
            and not self._awaiting_final
            and self._pause_item is None
            and not self._says
            and not self._typed
            and self._mailbox.qsize() == 0
        )
        if idle:
            self._idle.set()
        else:
            self._idle.clear()

    # ------------------------------------------------------------------ STT

    def _open_stt(self) -> None:
        stream = self.stt.stream(generation=self._gen)
        self._stt_stream = stream
        self._tasks.spawn(self._read_stt(stream), name="stt-reader")

    async def _read_stt(self, stream: RecognizeStream) -> None:
        error: ProviderError | None = None
        try:
            async for t in stream:
                if not self._post(_Heard(t, stream)):
                    return
        except ProviderError as exc:
            error = exc
        self._post(_SttEnded(stream, error))

    # ------------------------------------------------------------------ controller

    async def _controller(self) -> None:
        try:
            async for item in self._mailbox:
                self._handle(item)
                self._update_idle()
        except Exception:
            log.exception("agent session controller failed")
            raise

    def _handle(self, item: object) -> None:
        if isinstance(item, _Vad):
            if isinstance(item.event, SpeechStart):
                self._on_speech_start()
            else:
                self._on_speech_end(item)
        elif isinstance(item, _Overlap):
            self._overlap_duration = item.duration
            self._maybe_interrupt()
        elif isinstance(item, _Heard):
            self._on_transcript(item.transcript, item.stream)
        elif isinstance(item, _Timer):
            if item.token == self._timer_token and item.kind == "final":
                self._on_final_timeout()
            elif item.token == self._timer_token and item.kind == "hold":
                self._end_pause()
        elif isinstance(item, _Verdict):
            self._on_verdict(item)
        elif isinstance(item, ReplyNews):
            self._on_reply_news(item)
        elif isinstance(item, _Say):
            self._says.append(item)
            self._next_say()
        elif isinstance(item, _Typed):
            self._typed.append(item.text)
            self._on_typed()
        elif isinstance(item, _SttEnded):
            self._on_stt_ended(item)
        elif isinstance(item, _ReopenStt):
            self._stt_reopen = None
            if self._stt_stream is None and not self._closing:
                self._open_stt()
        elif isinstance(item, _InputEnded):
            stream = self._stt_stream
            if stream is not None and not stream.done:
                with contextlib.suppress(StreamClosedError):
                    stream.end_input()

    # -- user speech

    def _on_speech_start(self) -> None:
        self._user_speaking = True
        self._final_missed = False
        self._drop_pause()
        if self._stt_stream is None:
            self._turn.lost = True  # the recogniser is down: this speech is unheard
        self._cancel_timer()
        reply = self._reply
        if reply is not None and reply.speaking:
            if reply.allow_interruptions and self.options.interruption.enabled:
                # maybe a barge-in: collect this speech on its own until it is decided
                self._overlap, self._overlap_duration = True, 0.0
                self._turn.drop_speech()
                if self.options.interruption.false_interruption == "resume":
                    self.output.pause()
                    self._overlap_paused = True
                    self._emit(AgentPaused(reply.generation))
            return
        if reply is not None and not reply.allow_interruptions:
            return  # an uninterruptible say() about to speak: it goes on
        opts = self.options.interruption
        if (
            reply is not None
            and reply.committed.is_set()
            and opts.enabled
            and (opts.min_duration_thinking > 0 or opts.min_words_thinking > 0)
        ):
            # the agent is thinking: this speech drops the reply only once it passes the
            # thinking thresholds; meanwhile its first audio waits (no event: nothing of
            # it reached the transport, so there is nothing to take back)
            self._overlap, self._overlap_duration = True, 0.0
            self._overlap_thinking = True
            self._turn.drop_speech()
            self.output.pause()
            self._overlap_paused = True
            return
        if reply is not None:
            # the user goes on before the agent said anything: drop the reply, keep the text
            self._abandon_reply(reply, "the user went on speaking")
        self._set_state(AgentState.USER_SPEAKING, "speech started")

    def _on_speech_end(self, item: _Vad) -> None:
        assert isinstance(item.event, SpeechEnd)
        self._user_speaking = False
        if self._overlap:
            self._false_interruption()
            return
        reply = self._reply
        if reply is not None and reply.speaking:
            self._turn.lost = False
            return  # speech over an uninterruptible reply: ignored
        padding = min(self.vad.options.padding, item.event.time)
        self._speech_end_at = item.at - max(0.0, item.lag + padding)
        eot = self.options.turn.end_of_turn
        if eot is not None and not self._turn.lost:
            # the VAD's window was the probe: ask the model (one owned task) whether the
            # turn is over; silence decides if it does not answer (the hold timer)
            self._pause += 1
            self._pause_item = item
            audio = self._turn_audio.snapshot() if self._turn_audio is not None else None
            probe = self.vad.options.min_silence_duration
            self._arm_timer("hold", max(0.0, eot.options.fallback_silence - probe))
            self._eot_task = self._tasks.spawn(
                self._ask_turn_model(self._pause, audio, probe), name="end-of-turn"
            )
            self._set_state(AgentState.LISTENING, "speech paused")
            return
        self._await_final(item)

    def _await_final(self, item: _Vad) -> None:
        """The user's speech is over: finalise what was said and wait (bounded) for the
        final."""
        stream = self._stt_stream
        if stream is not None and not stream.done:
            with contextlib.suppress(StreamClosedError):
                stream.flush()
        self._awaiting_final = True
        self._final_delay = None
        if self._finals_cover(item):
            # the STT's end-of-speech final came before the VAD's silence window ended:
            # both say the turn is over, so it is (the flush's answer adds nothing)
            self._final_delay = 0.0
            self._set_state(AgentState.LISTENING, "speech ended")
            self._end_of_turn()
            return
        self._arm_timer("final", self.options.turn.final_timeout)
        self._set_state(AgentState.LISTENING, "speech ended")
        if self.options.turn.preemptive and self._reply is None and not self._turn.lost:
            text = self._turn.text()
            if text:
                self._start_reply(text, committed=False)

    async def _ask_turn_model(self, pause: int, audio: AudioFrame | None, probe: float) -> None:
        eot = self.options.turn.end_of_turn
        assert eot is not None
        verdict = await eot.decide(audio, silent_for=probe)
        self._post(_Verdict(pause, verdict))

    def _on_verdict(self, item: _Verdict) -> None:
        if item.pause != self._pause or self._pause_item is None or self._user_speaking:
            return  # the user spoke since: the turn went on
        self._eot_task = None
        v = item.verdict
        log.debug("end of turn: %s (%s, hold %.2f s)", v.complete, v.source, v.hold)
        if v.hold <= 0:
            self._end_pause()
        else:
            self._arm_timer("hold", v.hold)

    def _end_pause(self) -> None:
        """The pause is the end of the turn (the model said so, or silence did)."""
        item, self._pause_item = self._pause_item, None
        if item is None or self._user_speaking:
            return
        if self._eot_task is not None:
            self._eot_task.cancel()
            self._eot_task = None
        self._await_final(item)

    def _drop_pause(self) -> None:
        """Speech resumed during a pause: no verdict or hold of it may end the turn."""
        self._pause += 1
        self._pause_item = None
        if self._eot_task is not None:
            self._eot_task.cancel()
            self._eot_task = None

    def _on_typed(self) -> None:
        """Answer the typed turns now, unless an uninterruptible reply holds the floor."""
        if not self._typed or self._closing:
            return
        reply = self._reply
        if reply is not None:
            if not reply.allow_interruptions:
                return  # answered when it ends (_next_say)
            if reply.speaking:
                self._interrupt(reply)
            else:
                self._abandon_reply(reply, "the user typed a turn")  # may answer it
            if self._reply is not None or not self._typed:
                return
        text = " ".join([self._turn.carry, *self._typed]).strip()
        self._typed.clear()
        self._turn.carry = ""
        self._drop_pause()
        self._cancel_timer()
        self._awaiting_final = False
        self._speech_end_at = self._final_delay = None  # no speech: no voice latencies
        self._start_reply(text, committed=True)

    def _finals_cover(self, item: _Vad) -> bool:
        """Do the finals heard so far cover the speech that just ended (``item``)?"""
        if item.stt_time is None:
            return False
        speech_end = item.stt_time - min(self.vad.options.padding, item.event.time)
        return self._turn.covers(speech_end, item.stream)

    def _on_transcript(self, t: Transcript, stream: RecognizeStream | None = None) -> None:
        text = t.text.strip()
        if not text:
            if t.flushed:
                self._on_flush_answered(stream)
            return
        if stream is not None and stream is self._stt_stream:
            self._stt_failures = 0  # the recogniser works again
        self._emit(UserTranscribed(text, t.is_final, self._gen))
        reply = self._reply
        if reply is not None and reply.speaking and not self._overlap:
            return  # speech over an uninterruptible reply
        self._turn.hear(text, final=t.is_final, end=t.end, source=stream)
        if t.is_final:
            late = self._final_missed and self._reply is None and not self._overlap
            if (self._awaiting_final or late) and not self._user_speaking:
                # late: the turn already ended empty at the final's timeout, and the user
                # has not spoken since: this final is the turn's text, answer it now
                self._final_missed = False
                if self._speech_end_at is not None:
                    self._final_delay = self.clock.now() - self._speech_end_at
                self._end_of_turn()
        if self._overlap:
            self._maybe_interrupt()

    def _on_flush_answered(self, stream: RecognizeStream | None) -> None:
        """The STT answered the flush with nothing more: the turn ends now, not at the
        ``final_timeout`` (a final of the stream's own, e.g. ``speech_final``, came first).
        The stream marks an answer only when no later flush waits behind it.
        """
        if stream is None or stream is not self._stt_stream:
            return
        if self._awaiting_final and not self._user_speaking:
            if self._speech_end_at is not None:
                self._final_delay = self.clock.now() - self._speech_end_at
            self._end_of_turn()

    def _on_final_timeout(self) -> None:
        if self._awaiting_final and not self._user_speaking:
            stream = self._stt_stream
            waited = self.clock.now() - (self._speech_end_at or self.clock.now())
            if stream is not None and stream.behind and waited < self.stt.deadlines.final:
                self._arm_timer("final", 0.1)  # the recogniser is behind: wait (bounded)
                return
            behind = (stream is not None and stream.behind) or self._turn.lost
            # a final that comes after this (and no text yet) still starts the turn,
            # unless the fallback already asked the user to say it again
            self._final_missed = not behind and not self._turn.text()
            self._end_of_turn(behind=behind)

    def _end_of_turn(self, *, behind: bool = False) -> None:
        self._cancel_timer()
        self._awaiting_final = False
        if self._turn_audio is not None:
            self._turn_audio.clear()
        behind = behind or self._turn.lost
        # a fragment: the recogniser lost or never finished part of this turn
        taken = self._turn.take(behind=behind)
        text, fragment = taken.text, taken.fragment
        reply = self._reply
        policy = self.options.misheard if text else "reask"
        misheard = behind and (not text or (fragment and policy != "answer"))
        if reply is not None and reply.committed.is_set() and text and not misheard:
            return  # an uninterruptible reply speaks; this speech was over it
        if misheard:
            # never silence, never a confident answer to a fragment
            if reply is not None:
                if reply.committed.is_set():
                    return  # an uninterruptible reply speaks; it goes on
                self._abandon_reply(reply, "the recogniser lost the turn", keep_text=False)
            self._unanswered(text if policy == "confirm" else "")
            return
        if not text:
            if reply is not None and not reply.committed.is_set():
                self._abandon_reply(reply, "nothing was recognised")
            self._settle_state("nothing was recognised")
            return
        if reply is not None and not reply.committed.is_set():
            if reply.user_text == text:
                self._commit(reply)
                return
            self._abandon_reply(reply, "the final transcript differs", keep_text=False)
        if self._reply is not None:
            return  # an uninterruptible reply speaks; this speech was over it
        self._start_reply(text, committed=True)

    def _unanswered(self, fragment: str) -> None:
        """Say the fallback line of a turn the recogniser lost (all or part of it)."""
        opts = self.options
        if fragment:
            line = opts.misheard_message.replace("{text}", fragment)
            reason = "speech recognition lost the rest of the turn"
            self.history.user(fragment)  # what was heard, with the question about it
        else:
            line = opts.unanswered_message
            reason = "speech recognition failed or is behind"
        metrics.AGENT_TURNS.labels(outcome="unanswered").inc()
        self._emit(TurnUnanswered(reason, line, self._gen))
        if line:
            self._says.append(_Say(line, True, bool(fragment), notice=True, user_text=fragment))
        self._next_say()

    # -- interruptions

    def _maybe_interrupt(self) -> None:
        reply = self._reply
        opts = self.options.interruption
        if not self._overlap or reply is None:
            return
        if self._overlap_thinking:
            # began before the reply spoke (its audio, if any, waits unheard): the
            # thinking thresholds decide, and yielding drops the reply as never said
            if self._overlap_duration < opts.min_duration_thinking:
                return
            if content_words(self._turn.text(), frozenset()) < opts.min_words_thinking:
                return
            # the user goes on before the agent said anything: drop the reply, keep the
            # text (it starts the turn, with what was heard of this speech)
            self._overlap = self._overlap_paused = self._overlap_thinking = False
            # unpauses the output; what was heard of this speech stays in the turn
            self._abandon_reply(reply, "the user went on speaking")
            self._set_state(
                AgentState.USER_SPEAKING if self._user_speaking else AgentState.LISTENING,
                "the user went on speaking",
            )
            return
        if self._overlap_duration < opts.min_duration:
            return
        need = max(opts.min_words, 1 if opts.backchannel else 0)
        if need and content_words(self._turn.text(), opts.backchannel) < need:
            return  # too few words yet, or only backchannel ("uh-huh", "yeah")
        self._interrupt(reply)

    def _interrupt(self, reply: Reply) -> None:
        dropped = self.output.interrupt(self._gen + 1)  # O(1): the next frame is silence
        self._overlap = self._overlap_paused = self._overlap_thinking = False
        played = reply.played(self.output)
        heard = reply.playback.heard(played)
        metrics.AGENT_INTERRUPTIONS.inc()
        self._emit(Interrupted(played, dropped, heard, reply.generation))
        self._end_reply(reply, heard, interrupted=True)
        if reply.task is not None:
            reply.task.cancel()
        self._set_state(
            AgentState.USER_SPEAKING if self._user_speaking else AgentState.LISTENING,
            "interrupted",
        )

    def _false_interruption(self) -> None:
        resumed = self._overlap_paused
        if self._overlap_paused:
            self.output.resume()
            if not self._overlap_thinking:  # AgentPaused was emitted
                self._emit(AgentResumed(self._gen))
        self._overlap = self._overlap_paused = self._overlap_thinking = False
        self._turn.lost = False  # the speech is dropped, and what the STT lost of it
        text = self._turn.text()
        self._emit(FalseInterruption(self._overlap_duration, resumed, self._gen, text))
        self._turn.drop_speech()
        self._settle_state("false interruption")

    # -- replies

    def _start_reply(
        self,
        user_text: str,
        *,
        committed: bool,
        fixed_text: str | None = None,
        allow_interruptions: bool = True,
        add_to_history: bool = True,
    ) -> Reply:
        self._gen += 1
        context = self.history.copy()
        if fixed_text is None:
            context.user(user_text)
        reply = Reply(
            generation=self._gen,
            user_text=user_text,
            context=context,
            metrics=TurnMetrics(self._gen, user_text=user_text),
            committed=asyncio.Event(),
            allow_interruptions=allow_interruptions,
            fixed_text=fixed_text,
            add_to_history=add_to_history,
            started_at=self.clock.now(),
            speech_end_at=self._speech_end_at if fixed_text is None else None,
        )
        self._reply = reply
        reply.task = self._tasks.spawn(self._runner.run(reply), name=f"reply-{reply.generation}")
        if committed:
            self._commit(reply)
        return reply

    def _commit(self, reply: Reply) -> None:
        now = self.clock.now()
        reply.metrics.stt_final_delay = self._final_delay
        if reply.speech_end_at is not None:
            reply.metrics.end_of_turn_delay = now - reply.speech_end_at
        if reply.fixed_text is None:
            self.history.user(reply.user_text)
            self._emit(UserTurnEnded(reply.user_text, reply.generation))
            reply.span = tracer.start_span(
                "antiphon.agent.turn", attributes={"antiphon.generation": reply.generation}
            )
        reply.committed.set()
        self._set_state(AgentState.THINKING, "end of turn")
        if reply.held is not None:
            self._on_reply_news(reply.held)

    def _abandon_reply(self, reply: Reply, reason: str, *, keep_text: bool = True) -> None:
        """Cancel a reply that spoke nothing yet; its user text joins the next turn."""
        log.debug("reply %d abandoned: %s", reply.generation, reason)
        self.output.interrupt(self._gen + 1)
        if reply.task is not None:
            reply.task.cancel()
        if reply.committed.is_set() and reply.fixed_text is None:
            last = self.history.messages[-1] if self.history.messages else None
            if last is not None and last.role == "user" and last.content == reply.user_text:
                self.history.messages.pop()
            if keep_text:
                self._turn.carry = reply.user_text
        if reply.span is not None:
            reply.span.set_attribute("antiphon.abandoned", reason)
            reply.span.end()
        self._reply = None
        self._next_say()

    def _next_say(self) -> None:
        if self._reply is None and self._typed and not self._closing:
            self._on_typed()
            return
        if self._reply is not None or not self._says or self._closing:
            return
        say = self._says.pop(0)
        reply = self._start_reply(
            "",
            committed=False,
            fixed_text=say.text,
            allow_interruptions=say.allow_interruptions,
            add_to_history=say.add_to_history,
        )
        reply.notice = say.notice
        reply.metrics.user_text = say.user_text
        if say.offline and self.fallback_tts is not None:
            reply.tts = self.fallback_tts
        self._commit(reply)

    def _on_reply_news(self, news: ReplyNews) -> None:
        reply = news.reply
        if reply is not self._reply:
            return  # an interrupted or abandoned reply, still winding down
        if not reply.committed.is_set() and news.kind in ("done", "failed"):
            # speculation is invisible: a reply started on an interim transcript that
            # ends (fails) before the turn is decided says and shows nothing; the commit
            # reuses its outcome when the final agrees, else it is dropped unheard
            reply.held = news
            return
        if news.kind == "first_audio":
            reply.speaking = True
            if not self._overlap:
                self._set_state(AgentState.SPEAKING, "first audio")
        elif news.kind == "done":
            self._end_reply(reply, reply.playback.text, interrupted=False)
            self._settle_state("reply done")
            self._next_say()
        elif news.kind == "failed":
            error = news.error
            assert error is not None
            reply.metrics.error = str(error)
            if _unrecoverable(error):
                stage = error.stage or "reply"
                self._fail(error, stage, f"{error.provider} failed for good: {error}")
                return
            self._emit(AgentError(error.stage or "reply", error, True, reply.generation))
            played = reply.played(self.output)
            self._end_reply(reply, reply.playback.heard(played), interrupted=False)
            line = self.options.error_message
            tts = reply.tts or self.tts
            if line and not reply.notice:  # a failed fallback line is not apologised for
                if error.provider != tts.provider:
                    self._says.insert(0, _Say(line, True, False, notice=True))
                elif self.fallback_tts is not None and tts is not self.fallback_tts:
                    # the TTS is the one failing: the offline one says it
                    self._says.insert(0, _Say(line, True, False, notice=True, offline=True))
            self._settle_state("reply failed")
            self._next_say()

    def _end_reply(self, reply: Reply, spoken: str, *, interrupted: bool) -> None:
        self._reply = None
        if self._overlap_paused:
            # it ended (failed, or its drain timed out) while speech over it held its
            # audio: what is queued of it is dropped unheard, and the output plays again
            self.output.interrupt(self._gen + 1)
            if not self._overlap_thinking:  # AgentPaused was emitted
                self._emit(AgentResumed(self._gen))
        self._overlap = self._overlap_paused = self._overlap_thinking = False
        if reply.add_to_history and reply.committed.is_set():
            for message in reply.new_messages:
                self.history.add(message)
            if spoken:
                self.history.assistant(spoken)
        m = reply.metrics
        m.agent_text, m.interrupted = spoken, interrupted
        self._emit(AgentReplied(spoken, interrupted, reply.generation))
        if reply.fixed_text is None and reply.committed.is_set():
            self._record(m)
        if reply.span is not None:
            for key, value in m.to_dict().items():
                if value is not None and not isinstance(value, list):
                    reply.span.set_attribute(f"antiphon.{key}", value)
            reply.span.end()
        self._emit(TurnCompleted(m, reply.generation))

    def _record(self, m: TurnMetrics) -> None:
        self.turns.append(m)
        outcome = "error" if m.error else "interrupted" if m.interrupted else "completed"
        metrics.AGENT_TURNS.labels(outcome).inc()
        for hist, value in (
            (metrics.AGENT_END_OF_TURN, m.end_of_turn_delay),
            (metrics.AGENT_LLM_TTFT, m.llm_ttft),
            (metrics.AGENT_TTS_TTFA, m.tts_ttfa),
            (metrics.AGENT_VOICE_TO_VOICE, m.voice_to_voice),
        ):
            if value is not None:
                hist.observe(value)
        if self._log_file is not None:
            try:
                self._log_file.write(json.dumps(m.to_dict()) + "\n")
                self._log_file.flush()
            except (OSError, ValueError) as exc:
                log.warning("turn log write failed: %s", exc)

    # -- STT failures

    def _on_stt_ended(self, item: _SttEnded) -> None:
        if item.stream is not self._stt_stream or self._closing:
            return
        if item.error is None:
            return  # completed after end_input()
        error = item.error
        self._stt_failures += 1
        limit = self.options.max_stt_restarts
        if _unrecoverable(error) or (limit is not None and self._stt_failures > limit):
            self._fail(error, "stt", f"speech recognition failed: {error}")
            return
        self._emit(AgentError("stt", error, True, self._gen))
        self._tasks.spawn(_aclose(item.stream), name="stt-close")
        self._stt_stream = None
        # a new stream after a backoff (never N attempts in the same millisecond); the
        # audio meanwhile is lost, and so is the turn it belonged to
        delay = self.options.stt_backoff.delay(self._stt_failures - 1)
        self._stt_reopen = self._tasks.spawn(self._reopen_stt(delay), name="stt-reopen")
        if self._user_speaking or self._awaiting_final or self._pause_item is not None:
            self._turn.lost = True
        if self._awaiting_final and not self._user_speaking:
            self._end_of_turn(behind=True)  # its final is lost: never silence
        elif self._final_missed and not self._user_speaking and self._reply is None:
            # the turn ended empty at the final's timeout, and now the recogniser failed
            # within its own final deadline: the final was lost, not the words
            since = self.clock.now() - (self._speech_end_at or 0.0)
            if since <= self.stt.deadlines.final + self.options.turn.final_timeout:
                self._final_missed = False
                self._unanswered("")

    async def _reopen_stt(self, delay: float) -> None:
        await self.clock.sleep_until(self.clock.now() + delay)
        self._post(_ReopenStt())

    # -- timers

    def _arm_timer(self, kind: str, seconds: float) -> None:
        self._cancel_timer()
        self._timer_token += 1
        self._timer = self._tasks.spawn(
            self._fire(kind, self._timer_token, self.clock.now() + seconds), name=f"timer-{kind}"
        )

    def _cancel_timer(self) -> None:
        self._timer_token += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _fire(self, kind: str, token: int, when: float) -> None:
        await self.clock.sleep_until(when)
        self._post(_Timer(kind, token))


async def _aclose(stream: RecognizeStream) -> None:
    await stream.aclose()


def _unrecoverable(error: ProviderError) -> bool:
    """An error no retry or new stream can mend: the credentials or the account."""
    if isinstance(error, AuthError):
        return True
    return not error.retryable and "quota" in str(error).lower()
