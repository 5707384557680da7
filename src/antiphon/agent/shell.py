"""The agent session's I/O shell: its mailbox, its controller, and the actions it executes.

How it is built: the one controller task takes the mailbox's items in order, turns each
into an event of :mod:`antiphon.agent.turn_events` (reading what only I/O knows: the
clock, whether the STT stream is up or behind, which TTS failed) and feeds it to the
:class:`~antiphon.agent.machine.TurnMachine`; then it executes the actions the machine
returns, in order — timers and the turn model as owned tasks, replies through
:class:`~antiphon.agent.reply.ReplyRunner`, flushes on the STT stream, the output track's
pause, resume and drop, the history, the events. It decides nothing about the turns.

:class:`SessionShell` is the base of :class:`~antiphon.agent.session.AgentSession`,
which holds the public face (input, events, lifecycle); its other base,
:class:`~antiphon.agent.stt_feed.SttFeed`, reads the STT stream and replaces it after a
failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import IO, Literal

from antiphon import metrics
from antiphon.agent.events import (
    AgentEvent,
    AgentReplied,
    AgentState,
    Interrupted,
    StateChanged,
    TurnCompleted,
    TurnMetrics,
    TurnUnanswered,
)
from antiphon.agent.hub import EventHub
from antiphon.agent.machine import TurnMachine
from antiphon.agent.options import AgentOptions
from antiphon.agent.reply import Reply, ReplyNews, ReplyRunner
from antiphon.agent.stt_feed import Heard, ReopenStt, SttEnded, SttFeed, unrecoverable
from antiphon.agent.tracing import get_tracer
from antiphon.agent.turn_events import (
    AbandonReply,
    Action,
    ArmTimer,
    AskTurnModel,
    CancelTimer,
    CancelTurnModel,
    ChangeState,
    ClearTurnAudio,
    CommitReply,
    DropOutput,
    Emit,
    EndReply,
    Event,
    Fail,
    FlushStt,
    ForgetUser,
    InterruptReply,
    PauseOutput,
    RecordUser,
    ReplyAudio,
    ReplyDone,
    ReplyFailed,
    ResumeOutput,
    SayRequested,
    SpeechEnded,
    SpeechLasted,
    SpeechStarted,
    StartReply,
    TextTyped,
    TimerFired,
    Transcribed,
    TurnEnded,
    Verdict,
)
from antiphon.aio.channel import Channel
from antiphon.aio.clock import Clock
from antiphon.aio.tasks import TaskOwner
from antiphon.audio.frame import AudioFrame
from antiphon.audio.track import OutputTrack
from antiphon.errors import StreamClosedError
from antiphon.services.llm import LLM, ChatContext
from antiphon.services.stt import STT, RecognizeStream, Transcript
from antiphon.services.tts import TTS
from antiphon.services.turn import TurnAudio, TurnVerdict
from antiphon.services.vad import VAD

__all__ = ["SessionShell"]

log = logging.getLogger("antiphon.agent.session")
tracer = get_tracer("antiphon.agent")

# ------------------------------------------------------------------ mailbox messages


@dataclass(frozen=True, slots=True)
class _Timer:
    kind: str
    token: int


@dataclass(frozen=True, slots=True)
class _Verdict:
    """The end-of-turn model's verdict on the pause numbered ``pause``."""

    pause: int
    verdict: TurnVerdict


@dataclass(frozen=True, slots=True)
class InputEnded:
    pass


# ---------------------------------------------------------------------------- shell


class SessionShell(SttFeed):
    """The controller and the executor of the turn machine's actions (module docstring)."""

    vad: VAD
    stt: STT
    llm: LLM
    tts: TTS
    fallback_tts: TTS | None
    options: AgentOptions
    clock: Clock
    output: OutputTrack
    history: ChatContext
    turns: deque[TurnMetrics]
    _log_file: IO[str] | None
    _tasks: TaskOwner
    _runner: ReplyRunner
    _mailbox: Channel[object]
    _hub: EventHub
    _machine: TurnMachine
    _state: AgentState
    _state_changed: asyncio.Event
    _closing: bool
    _idle: asyncio.Event
    _replies: dict[int, Reply]
    _stt_stream: RecognizeStream | None
    _stt_failures: int
    _stt_reopen: asyncio.Task[None] | None
    _timer: asyncio.Task[None] | None
    _turn_audio: TurnAudio | None
    _eot_task: asyncio.Task[None] | None

    def _emit(self, event: AgentEvent) -> None:
        self._hub.emit(event)

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
        """Turn a mailbox item into the machine's event (or act on it: STT, input)."""
        if self._closing:
            return
        now = self.clock.now()
        match item:
            case SpeechStarted():
                self._run(SpeechStarted(heard=self._stt_stream is not None))
            case Heard():
                self._on_transcript(item.transcript, item.stream, now)
            case _Timer():
                behind = self._stt_stream is not None and self._stt_stream.behind
                kind: Literal["final", "hold"] = "final" if item.kind == "final" else "hold"
                self._run(TimerFired(kind, item.token, now, behind))
            case _Verdict():
                v = item.verdict
                log.debug("end of turn: %s (%s, hold %.2f s)", v.complete, v.source, v.hold)
                self._run(Verdict(item.pause, v.hold))
            case ReplyNews():
                self._on_reply_news(item)
            case SttEnded():
                self._on_stt_ended(item, now)
            case ReopenStt():
                self._stt_reopen = None
                if self._stt_stream is None:
                    self._open_stt()
            case InputEnded():
                live = self._stt_stream
                if live is not None and not live.done:
                    with contextlib.suppress(StreamClosedError):
                        live.end_input()
            case SpeechLasted() | SpeechEnded() | SayRequested() | TextTyped():
                self._run(item)  # posted as the machine's own event

    def _run(self, event: Event) -> None:
        """Feed the machine; execute its actions (unless the session closes meanwhile)."""
        for action in self._machine.feed(event):
            if self._closing:
                break
            self._execute(action)

    def _on_transcript(self, t: Transcript, stream: RecognizeStream, now: float) -> None:
        current = stream is self._stt_stream
        if t.text.strip() and current:
            self._stt_failures = 0  # the recogniser works again
        self._run(Transcribed(t.text, t.is_final, now, t.end, stream, t.flushed, current))

    def _on_reply_news(self, news: ReplyNews) -> None:
        reply = news.reply
        gen = reply.generation
        if self._replies.get(gen) is not reply:
            return  # an interrupted or abandoned reply, still winding down
        if news.kind == "first_audio":
            self._run(ReplyAudio(gen))
        elif news.kind == "done":
            self._run(ReplyDone(gen))
        else:
            error = news.error
            assert error is not None
            reply.metrics.error = str(error)
            tts = reply.tts or self.tts
            apology: Literal["online", "offline"] | None = None
            if error.provider != tts.provider:
                apology = "online"
            elif self.fallback_tts is not None and tts is not self.fallback_tts:
                apology = "offline"  # the TTS is the one failing: the offline one says it
            fatal = unrecoverable(error)
            self._run(ReplyFailed(gen, error, apology, fatal))

    def _update_idle(self) -> None:
        if self._closing or (self._machine.idle and self._mailbox.qsize() == 0):
            self._idle.set()
        else:
            self._idle.clear()

    # ------------------------------------------------------------------ actions

    def _execute(self, action: Action) -> None:
        match action:
            case ChangeState():
                old, new = action.old, action.new
                self._state = new
                self._state_changed.set()
                self._state_changed = asyncio.Event()
                log.debug("agent state %s -> %s (%s)", old.value, new.value, action.reason)
                self._emit(StateChanged(old, new, action.reason, action.generation))
            case Emit():
                if isinstance(action.event, TurnUnanswered):
                    metrics.AGENT_TURNS.labels(outcome="unanswered").inc()
                self._emit(action.event)
            case ArmTimer():
                self._cancel_timer()
                kind, token = action.kind, action.token
                when = self.clock.now() + action.seconds
                self._timer = self._tasks.spawn(self._fire(kind, token, when), name=f"timer-{kind}")
            case CancelTimer():
                self._cancel_timer()
            case FlushStt():
                stream = self._stt_stream
                if stream is not None and not stream.done:
                    with contextlib.suppress(StreamClosedError):
                        stream.flush()
            case AskTurnModel():
                pause = action.pause
                audio = self._turn_audio.snapshot() if self._turn_audio is not None else None
                probe = self.vad.options.min_silence_duration
                self._eot_task = self._tasks.spawn(
                    self._ask_turn_model(pause, audio, probe), name="end-of-turn"
                )
            case CancelTurnModel():
                if self._eot_task is not None:
                    self._eot_task.cancel()
                    self._eot_task = None
            case ClearTurnAudio():
                if self._turn_audio is not None:
                    self._turn_audio.clear()
            case StartReply():
                self._start_reply(action)
            case CommitReply():
                self._commit(self._replies[action.generation], action.final_delay)
            case AbandonReply():
                self._abandon(self._replies.pop(action.generation), action.reason)
            case InterruptReply():
                self._interrupt(self._replies.pop(action.generation))
            case EndReply():
                reply = self._replies.pop(action.generation)
                if action.how == "done":
                    spoken = reply.playback.text
                else:
                    spoken = reply.playback.heard(reply.played(self.output))
                self._end_reply(reply, spoken, interrupted=False)
            case RecordUser():
                self.history.user(action.text)
            case ForgetUser():
                last = self.history.messages[-1] if self.history.messages else None
                if last is not None and last.role == "user" and last.content == action.text:
                    self.history.messages.pop()
            case PauseOutput():
                self.output.pause()
            case ResumeOutput():
                self.output.resume()
            case DropOutput():
                self.output.interrupt(action.below)
            case TurnEnded():
                log.debug(
                    "user turn %d: %s (reply %s)",
                    action.turn,
                    action.outcome.value,
                    action.generation,
                )
            case Fail():
                error = action.error
                self._fail(
                    error, error.stage or "reply", f"{error.provider} failed for good: {error}"
                )

    # -- replies

    def _start_reply(self, a: StartReply) -> None:
        context = self.history.copy()
        if a.fixed_text is None:
            context.user(a.user_text)
        reply = Reply(
            generation=a.generation,
            user_text=a.user_text,
            context=context,
            metrics=TurnMetrics(a.generation, user_text=a.shown_text),
            committed=asyncio.Event(),
            allow_interruptions=a.allow_interruptions,
            fixed_text=a.fixed_text,
            add_to_history=a.add_to_history,
            notice=a.notice,
            started_at=self.clock.now(),
            speech_end_at=a.speech_end_at,
        )
        if a.offline and self.fallback_tts is not None:
            reply.tts = self.fallback_tts
        self._replies[a.generation] = reply
        reply.task = self._tasks.spawn(self._runner.run(reply), name=f"reply-{a.generation}")

    def _commit(self, reply: Reply, final_delay: float | None) -> None:
        now = self.clock.now()
        reply.metrics.stt_final_delay = final_delay
        if reply.speech_end_at is not None:
            reply.metrics.end_of_turn_delay = now - reply.speech_end_at
        if reply.fixed_text is None:
            reply.span = tracer.start_span(
                "antiphon.agent.turn", attributes={"antiphon.generation": reply.generation}
            )
        reply.committed.set()

    def _abandon(self, reply: Reply, reason: str) -> None:
        """Cancel a reply that spoke nothing (the machine took its text back)."""
        log.debug("reply %d abandoned: %s", reply.generation, reason)
        if reply.task is not None:
            reply.task.cancel()
        if reply.span is not None:
            reply.span.set_attribute("antiphon.abandoned", reason)
            reply.span.end()

    def _interrupt(self, reply: Reply) -> None:
        dropped = self.output.interrupt(reply.generation + 1)  # O(1): the next frame is silence
        played = reply.played(self.output)
        heard = reply.playback.heard(played)
        metrics.AGENT_INTERRUPTIONS.inc()
        self._emit(Interrupted(played, dropped, heard, reply.generation))
        self._end_reply(reply, heard, interrupted=True)
        if reply.task is not None:
            reply.task.cancel()

    def _end_reply(self, reply: Reply, spoken: str, *, interrupted: bool) -> None:
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
                # no user or agent text, nor error text, in a span (tracing.py opts in)
                if value is not None and not isinstance(value, list | str):
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

    # -- timers and the turn model

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _fire(self, kind: str, token: int, when: float) -> None:
        await self.clock.sleep_until(when)
        self._post(_Timer(kind, token))

    async def _ask_turn_model(self, pause: int, audio: AudioFrame | None, probe: float) -> None:
        eot = self.options.turn.end_of_turn
        assert eot is not None
        verdict = await eot.decide(audio, silent_for=probe)
        self._post(_Verdict(pause, verdict))
