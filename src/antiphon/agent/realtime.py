"""``RealtimeAgentSession``: the agent session API over a speech-to-speech model.

The same surface as :class:`~antiphon.agent.AgentSession` (``push_audio``, ``output``,
``events()``, ``say``, ``history``, ``state``, ``turns``, ``wait_idle``, ``aclose``),
with the model doing turn detection, understanding and speech. The session adds what
the model's wire protocol leaves to the client:

- agent audio is paced out through an :class:`~antiphon.audio.OutputTrack`; when the
  server hears the user start speaking, queued audio is dropped at once and the model's
  item is truncated at what was actually played (so its memory of the conversation is
  what the user heard);
- tools declared with ``@function_tool`` are run locally and their results sent back;
- states, transcripts and per-turn metrics are the same events as the cascade's.

Audio flows from the model's events to the track through a channel and a writer task,
so a full track (backpressure) never delays the handling of the user's speech.

Failure and close follow :class:`~antiphon.agent.AgentSession` (DESIGN rule 12): a task
that dies, or the model's session ending with an error, fails the session at once —
``AgentError(recoverable=False)``, ``CLOSED`` with the reason, :attr:`error` set,
``events()`` iterators end, ``wait_idle()`` raises the error. Close enters ``CLOSED``
synchronously and finishes in one close task that ``aclose()`` waits for even when
cancelled (then re-raises). Queues are bounded with the ``FAIL`` policy (the audio
channel 8,192 frames, the mailbox 4,096 items): overflowing one fails the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from antiphon.agent.events import (
    AgentError,
    AgentEvent,
    AgentReplied,
    AgentSpeaking,
    AgentState,
    Interrupted,
    StateChanged,
    ToolCalled,
    TurnCompleted,
    TurnMetrics,
    UserTranscribed,
    UserTurnEnded,
)
from antiphon.agent.hub import EventHub, Subscription
from antiphon.agent.playback import Playback
from antiphon.aio.channel import Channel, ChannelClosed, Overflow
from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.aio.tasks import TaskOwner, shielded_wait
from antiphon.audio.frame import AudioFrame
from antiphon.audio.track import OutputTrack
from antiphon.errors import (
    AntiphonError,
    ChannelFull,
    ConfigError,
    InternalError,
    ProviderError,
    StreamClosedError,
)
from antiphon.protocols.realtime import Tool
from antiphon.services.llm import ChatContext
from antiphon.services.realtime import (
    AgentAudio,
    AgentTranscriptDelta,
    AgentTranscriptDone,
    FunctionCall,
    RealtimeError,
    RealtimeModel,
    RealtimeSession,
    Reconnected,
    ResponseDone,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscript,
)
from antiphon.services.tools import FunctionTool, ToolThreads, run_tools

__all__ = ["RealtimeAgentSession"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _ItemEnd:
    item_id: str


@dataclass(frozen=True, slots=True)
class _Drained:
    item_id: str


@dataclass(frozen=True, slots=True)
class _ToolDone:
    event: ToolCalled


@dataclass(frozen=True, slots=True)
class _Ended:
    pass


class RealtimeAgentSession:
    """A voice agent over a :class:`~antiphon.services.realtime.RealtimeModel`.

    ``instructions`` and ``tools`` are sent to the model when the session starts.
    Use ``async with RealtimeAgentSession(model) as session``.
    """

    def __init__(
        self,
        model: RealtimeModel,
        *,
        instructions: str | None = None,
        tools: Sequence[FunctionTool] = (),
        clock: Clock | None = None,
        tool_timeout: float = 10.0,
    ) -> None:
        if not isinstance(model, RealtimeModel):
            raise ConfigError("RealtimeAgentSession needs a RealtimeModel (e.g. OpenAIRealtime)")
        if not all(isinstance(t, FunctionTool) for t in tools):
            raise ConfigError("tools must be decorated with @function_tool")
        self.model = model
        self.instructions = instructions
        self.tools = tuple(tools)
        self.tool_timeout = tool_timeout
        self.clock: Clock = clock or MonotonicClock()
        self.output = OutputTrack(model.output_sample_rate, 1, clock=self.clock)
        self.history = ChatContext()
        if instructions:
            self.history.system(instructions)
        self.turns: deque[TurnMetrics] = deque(maxlen=1000)
        self._rt: RealtimeSession | None = None
        self._tasks = TaskOwner("realtime-agent", on_failure=self._on_task_failed)
        self._tool_threads = ToolThreads(4, name="realtime-tool")
        self._frames: Channel[AudioFrame | _ItemEnd] = Channel(
            8192, Overflow.FAIL, name="realtime agent audio"
        )
        self._mailbox: Channel[object] = Channel(4096, Overflow.FAIL, name="realtime agent mailbox")
        self._hub = EventHub()
        self._state = AgentState.LISTENING
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._drain_timeout = 5.0
        self._error: AntiphonError | None = None
        # the response being heard
        self._item: str | None = None
        self._base: float | None = None  # track position where the item's audio starts
        self._queued = 0.0  # seconds of the item's audio handed to the writer
        self._pending = 0.0  # seconds handed to the writer, not yet in the track
        self._text = ""
        self._metrics: TurnMetrics | None = None
        self._speech_end_at: float | None = None
        self._gen = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def state(self) -> AgentState:
        return self._state

    @property
    def error(self) -> AntiphonError | None:
        """Why the session closed, when the model or a task failed."""
        return self._error

    async def start(self) -> None:
        """Connect to the model and start the conversation (bounded by its deadlines)."""
        if self._rt is not None or self._closing:
            raise StreamClosedError("the session was already started (or closed)")
        rt = self.model.session()
        self._rt = rt
        await rt.start()
        if self.instructions is not None or self.tools:
            rt.update(
                instructions=self.instructions,
                tools=[Tool(t.name, t.description, t.parameters) for t in self.tools] or None,
            )
        self._tasks.spawn(self._pump(rt), name="events")
        self._tasks.spawn(self._controller(rt), name="controller")
        self._tasks.spawn(self._write(), name="writer")

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

    async def aclose(self, *, drain: bool = False, drain_timeout: float = 5.0) -> None:
        """End the session; idempotent and bounded (``drain``: let the reply finish).

        Complete even if the caller is cancelled mid-way (then the cancellation is
        re-raised); never raises the session's own failure (see :attr:`error`).
        """
        if drain and not self._closing:
            with contextlib.suppress(TimeoutError, AntiphonError):
                async with asyncio.timeout(drain_timeout):
                    await self.wait_idle()
        self._begin_close("closed")
        assert self._close_task is not None
        await shielded_wait(self._close_task)

    def _begin_close(self, reason: str) -> None:
        """Enter CLOSED now and start the one close task; idempotent."""
        if self._closing:
            return
        self._closing = True
        self._frames.close()
        self._mailbox.close()
        self.output.interrupt()
        self._set_state(AgentState.CLOSED, reason)
        self._hub.close()
        self._idle.set()
        self._close_task = asyncio.get_running_loop().create_task(
            self._finish_close(), name="realtime-agent:close"
        )

    async def _finish_close(self) -> None:
        try:
            await self.output.aclose()
            if self._rt is not None:
                await self._rt.aclose()
            await self._tasks.aclose(self._drain_timeout)
            await self._tool_threads.aclose(self._drain_timeout)
        except Exception:  # pragma: no cover - each step is bounded and does not raise
            log.exception("realtime agent: closing failed")

    def _on_task_failed(self, task: asyncio.Task[Any], exc: BaseException) -> None:
        stage = task.get_name().rpartition(":")[2] or "session"
        if isinstance(exc, AntiphonError):
            error = exc
        else:
            error = InternalError(
                f"failed unexpectedly: {exc!r}", owner="realtime agent", task=stage
            )
            error.__cause__ = exc
        self._fail(error, stage)

    def _fail(self, error: AntiphonError, stage: str, reason: str | None = None) -> None:
        """Fail for good: emit the error, enter CLOSED with the reason, close everything."""
        if self._closing:
            log.warning("realtime agent: %s failed while closing: %s", stage, error)
            return
        self._error = error
        self._emit(AgentError(stage, error, False, self._gen))
        self._begin_close(reason or f"{stage} failed: {error}")

    def _post(self, item: object) -> bool:
        """Put ``item`` in the controller's mailbox; False once closed (full: fail)."""
        try:
            self._mailbox.send_nowait(item)
        except ChannelClosed:
            return False
        except ChannelFull as exc:
            self._fail(exc, "controller", f"the controller fell behind: {exc}")
            return False
        return True

    async def wait_idle(self) -> None:
        """Wait until no response is in progress and its audio has played.

        Returns once the session is closed; raises :attr:`error` if it failed.
        """
        await self._idle.wait()
        if self._error is not None:
            raise self._error

    # ------------------------------------------------------------------ input

    def push_audio(self, frame: AudioFrame) -> None:
        """The user's audio (any rate; converted by the realtime session)."""
        if self._rt is None or self._closing:
            raise StreamClosedError("push_audio() needs a started, open session")
        self._rt.push_audio(frame)

    def end_input(self) -> None:
        """The user's audio is over; nothing more to do for a realtime model."""

    def say(self, text: str) -> None:
        """Make the agent say ``text`` (the model speaks it as a response)."""
        if self._rt is None or self._closing:
            raise StreamClosedError("say() needs a started, open session")
        self._idle.clear()
        self._rt.say(text)

    def events(self) -> Subscription:
        """Every event from this call on, until the session closes (see
        :meth:`AgentSession.events <antiphon.agent.AgentSession.events>`)."""
        return self._hub.subscribe()

    def on_event(self, fn: Callable[[AgentEvent], None]) -> Callable[[], None]:
        """Call ``fn(event)`` synchronously as each event happens; returns the remover."""
        return self._hub.add_listener(fn)

    # ------------------------------------------------------------------ internals

    def _emit(self, event: AgentEvent) -> None:
        self._hub.emit(event)

    def _set_state(self, new: AgentState, reason: str) -> None:
        if new is not self._state and self._state is not AgentState.CLOSED:
            old, self._state = self._state, new
            self._emit(StateChanged(old, new, reason, self._gen))

    def _played(self) -> float:
        if self._base is None:
            return 0.0
        return max(0.0, min(self._queued, self.output.played - self._base))

    async def _write(self) -> None:
        """Frames → track (backpressure stays here, away from the controller)."""
        async for item in self._frames:
            if isinstance(item, _ItemEnd):
                await self.output.wait_drained(self.output.buffered + 5.0)
                self._post(_Drained(item.item_id))
                continue
            await self.output.write(item)
            self._pending = max(0.0, self._pending - item.duration)

    async def _pump(self, rt: RealtimeSession) -> None:
        """The model's events → the controller's mailbox."""
        try:
            async for ev in rt:
                if not self._post(ev):
                    return
        except ProviderError:
            pass  # the model's session failed: rt.error, reported with _Ended
        finally:
            self._post(_Ended())

    async def _controller(self, rt: RealtimeSession) -> None:
        """Decides everything, one message at a time (no awaits: nothing waits here)."""
        async for msg in self._mailbox:
            if isinstance(msg, _Ended):
                # the model's session is over: so is this one (failed, if it failed)
                if rt.error is not None:
                    self._fail(rt.error, "realtime", f"the model's session failed: {rt.error}")
                else:
                    self._begin_close("the model's session ended")
                return
            elif isinstance(msg, _Drained):
                if msg.item_id == self._item:
                    self._finish_item(interrupted=False)
                    self._set_state(AgentState.LISTENING, "reply played")
                    self._idle.set()
            elif isinstance(msg, _ToolDone):
                self._emit(msg.event)
            else:
                self._handle(rt, msg)

    async def _call_tool(self, rt: RealtimeSession, ev: FunctionCall) -> None:
        [outcome] = await run_tools(
            [(ev.call_id, ev.name, ev.arguments)],
            self.tools,
            timeout=self.tool_timeout,
            threads=self._tool_threads,
        )
        err = None if outcome.error is None else str(outcome.error)
        self._post(_ToolDone(ToolCalled(ev.name, ev.arguments, outcome.output, err, ev.generation)))
        with contextlib.suppress(StreamClosedError):
            rt.send_tool_result(ev.call_id, outcome.output)

    def _handle(self, rt: RealtimeSession, ev: object) -> None:
        now = self.clock.now()
        if isinstance(ev, UserSpeechStarted):
            self._idle.clear()
            if self._item is not None and self._state is AgentState.SPEAKING:
                self._interrupt(rt)
            self._set_state(AgentState.USER_SPEAKING, "speech started")
        elif isinstance(ev, UserSpeechStopped):
            self._speech_end_at = now
            self._set_state(AgentState.THINKING, "speech ended")
        elif isinstance(ev, UserTranscript):
            self._emit(UserTranscribed(ev.text, True, self._gen))
            self._emit(UserTurnEnded(ev.text, self._gen))
            self.history.user(ev.text)
            if self._metrics is not None and not self._metrics.user_text:
                self._metrics.user_text = ev.text
        elif isinstance(ev, AgentAudio):
            self._idle.clear()
            if self._item != ev.item_id:
                self._start_item(ev.item_id, ev.generation, now)
            self._queued += ev.frame.duration
            self._pending += ev.frame.duration
            self._frames.send_nowait(ev.frame.with_generation(ev.generation))
        elif isinstance(ev, AgentTranscriptDelta):
            if ev.item_id == self._item or self._item is None:
                self._text += ev.text
        elif isinstance(ev, AgentTranscriptDone):
            self._text = ev.text
            self._emit(AgentSpeaking(ev.text, ev.generation))
        elif isinstance(ev, FunctionCall):
            if self._metrics is not None:
                self._metrics.tool_calls.append(ev.name)
            self._tasks.spawn(self._call_tool(rt, ev), name=f"tool-{ev.name}")
        elif isinstance(ev, ResponseDone):
            if ev.status == "completed" and self._item is not None:
                self._frames.send_nowait(_ItemEnd(self._item))  # finished once played
            elif self._item is None:
                self._set_state(AgentState.LISTENING, f"response {ev.status}")
                self._idle.set()
        elif isinstance(ev, RealtimeError):
            self._emit(AgentError("realtime", ev.error, not ev.fatal, self._gen))
        elif isinstance(ev, Reconnected):
            log.info("realtime agent: reconnected (%s)", ev.reason)

    def _start_item(self, item_id: str, generation: int, now: float) -> None:
        if self._item is not None:
            self._finish_item(interrupted=False)
        self._gen = generation
        # self._text now holds what transcript deltas of this item said before its audio
        self._item, self._queued = item_id, 0.0
        self._base = self.output.played + self.output.buffered + self._pending
        m = self._metrics = TurnMetrics(generation)
        if self._speech_end_at is not None:
            m.voice_to_voice = now - self._speech_end_at
            self._speech_end_at = None
        self._set_state(AgentState.SPEAKING, "first audio")

    def _interrupt(self, rt: RealtimeSession) -> None:
        played = self._played()
        self._frames.clear()
        self._pending = 0.0
        dropped = self.output.interrupt(rt.generation + 1)
        rt.interrupt(played=played)
        playback = Playback()
        playback.add(self._text, 0.0, self._queued)
        heard = playback.heard(played)
        self._emit(Interrupted(played, dropped, heard, self._gen))
        self._text = heard
        self._finish_item(interrupted=True)

    def _finish_item(self, *, interrupted: bool) -> None:
        m = self._metrics
        text = self._text
        if text:
            self.history.assistant(text)
        self._emit(AgentReplied(text, interrupted, self._gen))
        if m is not None:
            m.agent_text, m.interrupted = text, interrupted
            self.turns.append(m)
            self._emit(TurnCompleted(m, self._gen))
        self._item, self._base, self._metrics, self._text = None, None, None, ""
