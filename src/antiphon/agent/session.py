"""``AgentSession``: the cascading voice pipeline (VAD + STT → LLM + tools → TTS).

A transport feeds the user's audio with :meth:`AgentSession.push_audio` and plays
:attr:`AgentSession.output`, an :class:`~antiphon.audio.OutputTrack` of paced 20 ms
frames. In between, the session listens, decides when the user's turn ended, thinks,
speaks, and yields the floor the moment the user talks over it.

How it is built (DESIGN rules 1, 4, 8, 10):

- **A pure turn machine decides; this session is its I/O shell.** VAD events (from
  :meth:`push_audio`, or from the VAD's inference worker the moment it decides, through
  ``VAD.on_decided``, so a barge-in does not wait for the next frame), STT
  transcripts (from one reader task), replies' progress and timers all arrive in one
  mailbox, in order. The one controller task (:mod:`antiphon.agent.shell`) turns each
  into an event for :class:`~antiphon.agent.machine.TurnMachine` — which holds every
  turn decision as explicit phases, awaits nothing and reads no clock — and executes the
  actions it returns. No flag is shared between tasks. This module is the public face:
  construction, input (:meth:`say`, :meth:`send_text`; the audio's ``push_audio`` is
  :mod:`antiphon.agent.user_audio`'s), events and the lifecycle (start, failure, close).
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
import logging
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from antiphon.agent.events import (
    AgentError,
    AgentEvent,
    AgentState,
    DTMFReceived,
    MachineDetected,
    TurnMetrics,
)
from antiphon.agent.hub import EventHub, Subscription
from antiphon.agent.machine import TurnMachine
from antiphon.agent.options import AgentOptions
from antiphon.agent.reply import Reply, ReplyRunner
from antiphon.agent.shell import SessionShell
from antiphon.agent.turn_events import (
    Close,
    SayRequested,
    TextTyped,
)
from antiphon.agent.user_audio import UserAudio
from antiphon.aio.channel import Channel, ChannelClosed, Overflow
from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.aio.tasks import TaskOwner, shielded_wait
from antiphon.audio.track import OutputTrack
from antiphon.errors import (
    AntiphonError,
    ChannelFull,
    ConfigError,
    InternalError,
    StreamClosedError,
)
from antiphon.services.llm import LLM, ChatContext, ChatMessage
from antiphon.services.stt import STT, RecognizeStream
from antiphon.services.tools import FunctionTool, ToolThreads
from antiphon.services.tts import TTS
from antiphon.services.turn import TurnAudio
from antiphon.services.vad import VAD, SpeechGate

__all__ = ["AgentSession"]

log = logging.getLogger(__name__)
#: The default of ``AgentOptions.unanswered_message``: said when the recogniser lost a turn.
UNANSWERED_FALLBACK = "Sorry, I missed that. Could you say it again?"

MAILBOX_SIZE = 4096
"""Items the controller's mailbox holds (policy: fail — the session fails)."""


class AgentSession(UserAudio, SessionShell):
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
        self._state = AgentState.LISTENING  # the machine's, as last published
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

        # the turn machine decides; the shell (antiphon.agent.shell) executes
        eot = self.options.turn.end_of_turn
        hold = None
        if eot is not None:
            probe = self.vad.options.min_silence_duration
            hold = max(0.0, eot.options.fallback_silence - probe)
        self._machine = TurnMachine(
            self.options, semantic_hold=hold, stt_final_deadline=stt.deadlines.final
        )
        self._replies: dict[int, Reply] = {}  # the replies the machine knows, by generation
        self._timer: asyncio.Task[None] | None = None
        self._input_ended = False

        # semantic end of turn (TurnOptions.end_of_turn): the user's audio for the model
        detector = eot.detector if eot is not None else None
        self._turn_audio = (
            TurnAudio(detector.sample_rate, detector.max_audio) if detector is not None else None
        )
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
        return self._machine.generation

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
        # the machine cancels the timer and the reply, drops the output, enters CLOSED
        for action in self._machine.feed(Close(reason)):
            self._execute(action)
        self._cancel_timer()
        if self._stt_stream is not None:
            self._stt_stream.cancel()
        if self._stt_reopen is not None:
            self._stt_reopen.cancel()
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
            # let go of what holds this session's methods (each a reference cycle that
            # would wait for a full garbage collection): the VAD may outlive the call
            self.vad.on_decided(None)
            self._runner.release()

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
        self._emit(AgentError(stage, error, False, self._machine.generation))
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
    # (push_audio and end_input: the user's audio, antiphon.agent.user_audio)

    def say(
        self, text: str, *, allow_interruptions: bool = True, add_to_history: bool = True
    ) -> None:
        """Speak ``text`` (a greeting, a notice) as a turn of the agent's own."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("say() needs non-empty text")
        if not self._started or self._closing:
            raise StreamClosedError("say() needs a started, open session")
        self._idle.clear()
        self._post(SayRequested(text.strip(), allow_interruptions, add_to_history))

    def update_agent(
        self,
        *,
        instructions: str | None = None,
        tools: Sequence[FunctionTool] | None = None,
        llm: LLM | None = None,
        tts: TTS | None = None,
    ) -> None:
        """Change who answers from the next LLM round on (:mod:`antiphon.agent.handoff`).

        ``instructions`` replace the system prompt (the history's first message; ``""``
        removes it); ``tools``, ``llm`` and ``tts`` replace the session's. ``None`` keeps
        each as it is. A reply already speaking keeps its voice; call it between replies.

        Raises:
            ConfigError: a value of the wrong kind.
        """
        if instructions is not None and not isinstance(instructions, str):
            raise ConfigError("update_agent() instructions must be a str")
        if tools is not None and not all(isinstance(t, FunctionTool) for t in tools):
            raise ConfigError("update_agent() tools must be decorated with @function_tool")
        if llm is not None and not isinstance(llm, LLM):
            raise ConfigError("update_agent() llm= must be an LLM plugin")
        if tts is not None and not isinstance(tts, TTS):
            raise ConfigError("update_agent() tts= must be a TTS plugin")
        if instructions is not None:
            messages = self.history.messages
            prompt = [ChatMessage("system", instructions)] if instructions else []
            has_prompt = bool(messages) and messages[0].role == "system"
            messages[: 1 if has_prompt else 0] = prompt
        if tools is not None:
            self.tools = self._runner.tools = tuple(tools)
        if llm is not None:
            self.llm = self._runner.llm = llm
        if tts is not None:
            self.tts = self._runner.tts = tts

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
        self._post(TextTyped(" ".join(text.split())))

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

    async def wait_for(self, *states: AgentState) -> AgentState:
        """Wait until the session is in one of ``states`` (or closed); return the state.

        Raises :attr:`error` if the session failed (unless ``CLOSED`` is among ``states``).
        """
        while self._state not in states and self._state is not AgentState.CLOSED:
            await self._state_changed.wait()
        if self._error is not None and self._state not in states:
            raise self._error
        return self._state
