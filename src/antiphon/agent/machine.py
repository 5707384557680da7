"""The turn machine: who has the floor, as a pure state machine (``feed(event) -> actions``).

Everything that decides the conversation's turns lives here, in the style of h11's
``_state.py``: the session (:mod:`antiphon.agent.session`) feeds it what happened — the
VAD's speech edges, the STT's transcripts, a reply's progress, a timer that fired, a
turn model's verdict, a typed turn — as small frozen events, and executes the actions it
returns (arm a timer, flush the STT, start / commit / abandon / interrupt a reply, pause
or resume the output, record the history, emit an event). :class:`TurnMachine` awaits
nothing, reads no clock (times come in the events) and owns no task, so hypothesis drives
it through every interleaving of events (``tests/test_turn_machine.py``). Its events and
actions are in :mod:`antiphon.agent.turn_events`, its phases in :mod:`antiphon.agent.turns`,
its agent side (replies, ``say()`` lines, typed turns, the interruption policy) in
:mod:`antiphon.agent.machine_replies`; this module holds the state and the user's side.

How it is built:

- **Two phases, like h11's two roles.** The user's side is a :class:`UserPhase` (quiet,
  speaking, paused while a turn model decides, awaiting the STT's final, or "missed": the
  turn ended empty at the final's timeout and a late final still answers it); the
  agent's side is a :class:`AgentPhase` (idle, speculating on an interim, thinking,
  speaking, closed). Speech over the agent is an :class:`Overlap` (over its speech, or
  over its thinking), not yet an interruption; one that ends long enough but short of
  words while the STT still owes them (Whisper gives words only once flushed) awaits
  its final, which decides: an interruption and a turn, or a false interruption. The published
  :class:`~antiphon.agent.events.AgentState` follows from these (``ChangeState``).
- **Every user turn ends once, with a typed outcome** (:class:`TurnEnded`): answered,
  unanswered (a fallback line), empty, ignored (speech over an uninterruptible reply, or
  a false interruption), joined (its words went into a typed turn) or abandoned (the
  session closed). **Every reply ends once**: ``EndReply`` (done or failed),
  ``InterruptReply`` or ``AbandonReply``; a generation is never started twice.
- **The history holds what was heard**: ``RecordUser`` when a turn is committed (or a
  fragment is asked about), ``ForgetUser`` when a committed reply is dropped before it
  spoke (its words join the next turn), and the agent's words through ``EndReply`` /
  ``InterruptReply``, whose heard text the shell measures on the output track.
- **Illegal events are refused**: speech edges out of order, a first audio of a reply
  not yet committed, anything after :class:`Close` raise
  :class:`~antiphon.errors.ProtocolStateError` and change nothing. Stale news (a reply or
  timer of an older generation or token, a verdict on an older pause) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from antiphon.agent.events import (
    AgentPaused,
    AgentState,
    TurnUnanswered,
    UserTranscribed,
)
from antiphon.agent.machine_replies import QueuedSay, ReplySide, ReplyState
from antiphon.agent.options import AgentOptions
from antiphon.agent.turn_events import (
    AbandonReply,
    Action,
    ArmTimer,
    AskTurnModel,
    CancelTimer,
    CancelTurnModel,
    ClearTurnAudio,
    Close,
    DropOutput,
    Event,
    FlushStt,
    PauseOutput,
    RecordUser,
    ReplyAudio,
    ReplyDone,
    ReplyFailed,
    SayRequested,
    SpeechEnded,
    SpeechLasted,
    SpeechStarted,
    SttFailed,
    TextTyped,
    TimerFired,
    Transcribed,
    Verdict,
)
from antiphon.agent.turns import AgentPhase, Outcome, Overlap, UserPhase, UserTurn
from antiphon.errors import ProtocolStateError

__all__ = ["TurnMachine"]


# ---------------------------------------------------------------------------- machine


@dataclass(slots=True)
class TurnMachine(ReplySide):
    """The conversation's turn state (see the module docstring).

    ``semantic_hold``: the seconds of silence after the VAD's probe at which a pause ends
    the turn when the end-of-turn model is silent (None: no turn model).
    ``stt_final_deadline``: how long a recogniser that says it is behind is waited for.
    """

    options: AgentOptions = field(default_factory=AgentOptions)
    semantic_hold: float | None = None
    stt_final_deadline: float = 5.0

    user: UserPhase = UserPhase.QUIET
    agent: AgentPhase = AgentPhase.IDLE
    overlap: Overlap = Overlap.NONE
    state: AgentState = AgentState.LISTENING
    generation: int = 0
    turn: UserTurn = field(default_factory=UserTurn)
    reply: ReplyState | None = None
    says: list[QueuedSay] = field(default_factory=list)
    typed: list[str] = field(default_factory=list)
    pause: int = 0  # numbers the pauses: a verdict on an older one is stale
    timer: int = 0  # the armed timer's token (a firing of an older one is stale)
    turns: int = 0  # user turns opened so far
    open_turn: int | None = None
    speech_end_at: float | None = None
    final_delay: float | None = None
    spoken_for: float = 0.0  # seconds the current speech (or overlap) has lasted
    _spoken_before: float = 0.0  # of the overlap, before its speech resumed
    _pause_end: SpeechEnded | None = None
    _out: list[Action] = field(default_factory=list)

    # ------------------------------------------------------------------ queries

    @property
    def closed(self) -> bool:
        return self.agent is AgentPhase.CLOSED

    @property
    def idle(self) -> bool:
        """Nobody speaks, no reply runs, nothing is queued (``wait_idle``)."""
        return (
            self.reply is None
            and self.user in (UserPhase.QUIET, UserPhase.MISSED)
            and not self.says
            and not self.typed
        )

    # ------------------------------------------------------------------ feed

    def feed(self, event: Event) -> list[Action]:
        """Take one event; return what to do, in order.

        Raises:
            ProtocolStateError: the event is illegal in the current phase (nothing
                changed).
        """
        self._check(event)
        self._out = []
        match event:
            case SpeechStarted():
                self._speech_started(event)
            case SpeechLasted():
                self.spoken_for = self._spoken_before + event.duration
                self._maybe_interrupt()
            case SpeechEnded():
                self._speech_ended(event)
            case Transcribed():
                self._transcribed(event)
            case TimerFired():
                if event.token == self.timer:
                    if event.kind == "final":
                        self._final_timeout(event)
                    else:
                        self._end_pause()
            case Verdict():
                self._verdict(event)
            case ReplyAudio() | ReplyDone() | ReplyFailed():
                self._reply_news(event)
            case SayRequested():
                say = QueuedSay(event.text, event.allow_interruptions, event.add_to_history)
                self.says.append(say)
                self._next_say()
            case TextTyped():
                self.typed.append(event.text)
                self._typed_turn()
            case SttFailed():
                self._stt_failed(event)
            case Close():
                self._close(event.reason)
        out, self._out = self._out, []
        return out

    def _check(self, event: Event) -> None:
        if self.closed:
            raise ProtocolStateError(f"turn machine: {type(event).__name__} after close")
        speaking = self.user is UserPhase.SPEAKING
        if isinstance(event, SpeechStarted) and speaking:
            raise ProtocolStateError("turn machine: speech started twice")
        if isinstance(event, SpeechEnded | SpeechLasted) and not speaking:
            raise ProtocolStateError(f"turn machine: {type(event).__name__} with no speech")
        reply = self.reply
        if (
            isinstance(event, ReplyAudio)
            and reply is not None
            and event.generation == reply.generation
            and self.agent is AgentPhase.SPECULATING
        ):
            raise ProtocolStateError("turn machine: audio of a reply not committed")

    # ------------------------------------------------------------------ helpers

    def _arm(self, kind: Literal["final", "hold"], seconds: float) -> None:
        self.timer += 1
        self._do(ArmTimer(kind, seconds, self.timer))

    def _cancel_timer(self) -> None:
        self.timer += 1
        self._do(CancelTimer())

    def _leave_pause(self) -> None:
        """Speech resumed, or the turn ended otherwise: no verdict or hold of the pause
        may end it."""
        self.pause += 1
        if self.user is UserPhase.PAUSED:
            self._pause_end = None
            self._do(CancelTurnModel())

    # ------------------------------------------------------------------ user speech

    def _speech_started(self, event: SpeechStarted) -> None:
        if self.user is UserPhase.MISSED:
            self._end_turn(Outcome.EMPTY)  # no late final came: it was empty
        self._leave_pause()
        self.user = UserPhase.SPEAKING
        if self.open_turn is None:
            self.turns += 1
            self.open_turn = self.turns
        if not event.heard:
            self.turn.lost = True  # the recogniser is down: this speech is unheard
        self._cancel_timer()
        if self.overlap is not Overlap.NONE:
            # speech over the agent resumed while its final was awaited: the same
            # overlap goes on, and its duration counts what was said before
            self._spoken_before = self.spoken_for
            return
        self._spoken_before = 0.0
        opts = self.options.interruption
        reply = self.reply
        if reply is not None and self.agent is AgentPhase.SPEAKING:
            if reply.allow_interruptions and opts.enabled:
                # maybe a barge-in: collect this speech on its own until it is decided
                self.overlap, self.spoken_for = Overlap.SPEECH, 0.0
                self.turn.drop_speech()
                if opts.false_interruption == "resume":
                    self._do(PauseOutput())
                    self._emit(AgentPaused(reply.generation))
            return
        if reply is not None and not reply.allow_interruptions:
            return  # an uninterruptible say() about to speak: it goes on
        if (
            reply is not None
            and self._committed()
            and opts.enabled
            and (opts.min_duration_thinking > 0 or opts.min_words_thinking > 0)
        ):
            # the agent is thinking: this speech drops the reply only once it passes the
            # thinking thresholds; meanwhile its first audio waits (no event: nothing of
            # it reached the transport, so there is nothing to take back)
            self.overlap, self.spoken_for = Overlap.THINKING, 0.0
            self.turn.drop_speech()
            self._do(PauseOutput())
            return
        if reply is not None:
            # the user goes on before the agent said anything: drop the reply, keep the text
            self._abandon(reply, "the user went on speaking")
        self._set_state(AgentState.USER_SPEAKING, "speech started")

    def _speech_ended(self, event: SpeechEnded) -> None:
        self.user = UserPhase.QUIET
        if self.overlap is not Overlap.NONE:
            if self._overlap_needs_final(event):
                # long enough, and its words are still owed (an STT that gives words
                # only once flushed): its final decides, an interruption or not
                self.speech_end_at = event.at
                self._do(FlushStt())
                self.user = UserPhase.AWAITING_FINAL
                self.final_delay = None
                self._arm("final", self.options.turn.final_timeout)
            else:
                self._false_interruption()
            return
        if self.agent is AgentPhase.SPEAKING:
            self.turn.lost = False
            self.turn.drop_speech()
            self._end_turn(Outcome.IGNORED)  # speech over an uninterruptible reply
            return
        self.speech_end_at = event.at
        if self.semantic_hold is not None and not self.turn.lost:
            # the VAD's window was the probe: ask the model whether the turn is over;
            # silence decides if it does not answer (the hold timer)
            self.pause += 1
            self.user = UserPhase.PAUSED
            self._pause_end = event
            self._arm("hold", self.semantic_hold)
            self._do(AskTurnModel(self.pause))
            self._settle_state("speech paused")
            return
        self._await_final(event)

    def _await_final(self, event: SpeechEnded) -> None:
        """Finalise what was said and wait (bounded) for the final."""
        self._do(FlushStt())
        self.user = UserPhase.AWAITING_FINAL
        self.final_delay = None
        if self.turn.covers(event.stt_end, event.source):
            # the STT's end-of-speech final came before the VAD's silence window ended:
            # both say the turn is over, so it is (the flush's answer adds nothing)
            self.final_delay = 0.0
            self._settle_state("speech ended")
            self._end_of_turn()
            return
        self._arm("final", self.options.turn.final_timeout)
        self._settle_state("speech ended")
        if self.options.turn.preemptive and self.reply is None and not self.turn.lost:
            text = self.turn.text()
            if text:
                self._start_reply(text, committed=False)

    def _verdict(self, event: Verdict) -> None:
        if event.pause != self.pause or self.user is not UserPhase.PAUSED:
            return  # the user spoke since: the turn went on
        if event.hold <= 0:
            self._end_pause()
        else:
            self._arm("hold", event.hold)

    def _overlap_dropped(self) -> None:
        """The final awaited for speech over the agent did not make it an interruption
        (only backchannel, nothing, no final in time, or the recogniser failed)."""
        self._cancel_timer()
        self.user = UserPhase.QUIET
        self._false_interruption()

    def _end_pause(self) -> None:
        """The pause is the end of the turn (the model said so, or silence did)."""
        end = self._pause_end
        if self.user is not UserPhase.PAUSED or end is None:
            return
        self._leave_pause()
        self._await_final(end)

    def _transcribed(self, t: Transcribed) -> None:
        text = t.text.strip()
        awaited = self.user is UserPhase.AWAITING_FINAL
        if not text:
            if t.flushed and t.current and awaited:
                # the STT answered the flush with nothing more: the turn ends now
                if self.speech_end_at is not None:
                    self.final_delay = t.at - self.speech_end_at
                if self.overlap is not Overlap.NONE:
                    self._overlap_dropped()  # nothing more was said over the agent
                else:
                    self._end_of_turn()
            return
        self._emit(UserTranscribed(text, t.final, self.generation))
        if self.agent is AgentPhase.SPEAKING and self.overlap is Overlap.NONE:
            return  # speech over an uninterruptible reply
        self.turn.hear(text, final=t.final, end=t.end, source=t.source)
        if t.final and awaited and self.overlap is not Overlap.NONE:
            # the final of speech over the agent: its words interrupt, or it was not a turn
            if self.speech_end_at is not None:
                self.final_delay = t.at - self.speech_end_at
            if self._maybe_interrupt():
                self._end_of_turn()
            else:
                self._overlap_dropped()
            return
        if t.final:
            late = (
                self.user is UserPhase.MISSED
                and self.reply is None
                and self.overlap is Overlap.NONE
            )
            if self.user is UserPhase.AWAITING_FINAL or late:
                # late: the turn already ended empty at the final's timeout, and the user
                # has not spoken since: this final is the turn's text, answer it now
                if self.speech_end_at is not None:
                    self.final_delay = t.at - self.speech_end_at
                self._end_of_turn()
        if self.overlap is not Overlap.NONE:
            self._maybe_interrupt()

    def _final_timeout(self, event: TimerFired) -> None:
        if self.user is not UserPhase.AWAITING_FINAL:
            return
        waited = event.at - (self.speech_end_at if self.speech_end_at is not None else event.at)
        if event.behind and waited < self.stt_final_deadline:
            self._arm("final", 0.1)  # the recogniser is behind: wait (bounded)
            return
        if self.overlap is not Overlap.NONE:
            self._overlap_dropped()  # no words came for the speech over the agent
            return
        behind = event.behind or self.turn.lost
        # a final that comes after this (and no text yet) still starts the turn, unless
        # the fallback already asked the user to say it again
        missed = not behind and not self.turn.text()
        self._end_of_turn(behind=behind, missed=missed)

    def _end_of_turn(self, *, behind: bool = False, missed: bool = False) -> None:
        self._cancel_timer()
        self.user = UserPhase.QUIET
        self._do(ClearTurnAudio())
        behind = behind or self.turn.lost
        # a fragment: the recogniser lost or never finished part of this turn
        taken = self.turn.take(behind=behind)
        text, fragment = taken.text, taken.fragment
        reply = self.reply
        policy = self.options.misheard if text else "reask"
        misheard = behind and (not text or (fragment and policy != "answer"))
        committed = reply is not None and self._committed()
        if committed and (text or misheard):
            self._end_turn(Outcome.IGNORED, text)  # an uninterruptible reply speaks
            return
        if misheard:
            # never silence, never a confident answer to a fragment
            if reply is not None:
                self._abandon(reply, "the recogniser lost the turn", keep_text=False)
            self._unanswered(text if policy == "confirm" else "")
            return
        if not text:
            if reply is not None and not committed:
                self._abandon(reply, "nothing was recognised")
            self._settle_state("nothing was recognised")
            if missed:
                self.user = UserPhase.MISSED  # its outcome waits for a late final
            else:
                self._end_turn(Outcome.EMPTY)
            return
        if reply is not None and not committed:
            if reply.user_text == text:
                self._end_turn(Outcome.ANSWERED, text, reply.generation)
                self._commit(reply)
                return
            # the user's turn comes before any say() queued behind the dropped reply
            self._abandon(reply, "the final transcript differs", keep_text=False, then=False)
        self._start_reply(text, committed=True)

    def _unanswered(self, fragment: str) -> None:
        """Say the fallback line of a turn the recogniser lost (all or part of it)."""
        opts = self.options
        if fragment:
            line = opts.misheard_message.replace("{text}", fragment)
            reason = "speech recognition lost the rest of the turn"
            self._do(RecordUser(fragment))  # what was heard, with the question about it
        else:
            line = opts.unanswered_message
            reason = "speech recognition failed or is behind"
        self._end_turn(Outcome.UNANSWERED, fragment)
        self._emit(TurnUnanswered(reason, line, self.generation))
        if line:
            self.says.append(QueuedSay(line, True, bool(fragment), notice=True, user_text=fragment))
        self._next_say()

    # ------------------------------------------------------------------ failures, close

    def _stt_failed(self, event: SttFailed) -> None:
        user = self.user
        if user is UserPhase.AWAITING_FINAL and self.overlap is not Overlap.NONE:
            self._overlap_dropped()  # its words are lost with the stream: the reply goes on
            return
        if user in (UserPhase.SPEAKING, UserPhase.PAUSED, UserPhase.AWAITING_FINAL):
            self.turn.lost = True
        if user is UserPhase.AWAITING_FINAL:
            self._end_of_turn(behind=True)  # its final is lost: never silence
        elif user is UserPhase.MISSED and self.reply is None:
            # the turn ended empty at the final's timeout, and now the recogniser failed
            # within its own final deadline: the final was lost, not the words
            since = event.at - (self.speech_end_at or 0.0)
            if since <= self.stt_final_deadline + self.options.turn.final_timeout:
                self.user = UserPhase.QUIET
                self._unanswered("")

    def _close(self, reason: str) -> None:
        self._cancel_timer()
        if self.user is UserPhase.PAUSED:
            self._do(CancelTurnModel())
        reply = self.reply
        if reply is not None:
            self._do(AbandonReply(reply.generation, reason))
        self._do(DropOutput(self.generation + 1))  # not one more frame of the reply
        self._end_turn(Outcome.ABANDONED)
        self._set_state(AgentState.CLOSED, reason)
        self.reply, self.agent, self.user = None, AgentPhase.CLOSED, UserPhase.QUIET
        self.overlap = Overlap.NONE
        self.says.clear()
        self.typed.clear()
