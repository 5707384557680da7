"""The turn machine's agent side: replies, said lines, typed turns and the interruption policy.

:class:`ReplySide` is the half of :class:`~antiphon.agent.machine.TurnMachine` that
starts, commits, abandons, interrupts and ends replies, queues ``say()`` lines, answers
typed turns and decides when speech over the agent takes the floor
(``InterruptionOptions``). It is a base class that declares the state it reads (the
machine's dataclass holds it all), split out so each half reads in one sitting; like the
machine it awaits nothing and reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from antiphon.agent.events import (
    AgentError,
    AgentEvent,
    AgentResumed,
    AgentState,
    FalseInterruption,
    UserTurnEnded,
)
from antiphon.agent.options import AgentOptions
from antiphon.agent.turn_events import (
    AbandonReply,
    Action,
    ChangeState,
    CommitReply,
    DropOutput,
    Emit,
    EndReply,
    Fail,
    ForgetUser,
    InterruptReply,
    RecordUser,
    ReplyAudio,
    ReplyDone,
    ReplyFailed,
    ResumeOutput,
    SpeechEnded,
    StartReply,
    TurnEnded,
)
from antiphon.agent.turns import AgentPhase, Outcome, Overlap, UserPhase, UserTurn, content_words

__all__ = ["QueuedSay", "ReplySide", "ReplyState"]


@dataclass(slots=True)
class ReplyState:
    generation: int
    user_text: str
    fixed: bool
    allow_interruptions: bool
    notice: bool
    held: ReplyDone | ReplyFailed | None = None  # its end, while speculative


@dataclass(frozen=True, slots=True)
class QueuedSay:
    text: str
    allow_interruptions: bool
    add_to_history: bool
    notice: bool = False
    offline: bool = False
    user_text: str = ""


class ReplySide:
    """The agent's side of the turn machine: replies and the interruption policy."""

    options: AgentOptions
    user: UserPhase
    agent: AgentPhase
    overlap: Overlap
    state: AgentState
    generation: int
    turn: UserTurn
    reply: ReplyState | None
    says: list[QueuedSay]
    typed: list[str]
    open_turn: int | None
    speech_end_at: float | None
    final_delay: float | None
    spoken_for: float
    _out: list[Action]

    turns: int

    # the machine's (antiphon.agent.machine): its timer and its turn model's pause
    def _cancel_timer(self) -> None:
        raise NotImplementedError

    def _leave_pause(self) -> None:
        raise NotImplementedError

    def _committed(self) -> bool:
        return self.agent in (AgentPhase.THINKING, AgentPhase.SPEAKING)

    def _paused(self) -> bool:
        """Is the output held by speech over the agent?"""
        if self.overlap is Overlap.THINKING:
            return True
        resume = self.options.interruption.false_interruption == "resume"
        return self.overlap is Overlap.SPEECH and resume

    # ------------------------------------------------------------------ helpers

    def _do(self, action: Action) -> None:
        self._out.append(action)

    def _emit(self, event: AgentEvent) -> None:
        self._out.append(Emit(event))

    def _set_state(self, new: AgentState, reason: str) -> None:
        old = self.state
        if new is old or old is AgentState.CLOSED:
            return
        self.state = new
        self._do(ChangeState(old, new, reason, self.generation))

    def _settle_state(self, reason: str) -> None:
        """The state that follows from the phases."""
        if self.agent is AgentPhase.SPEAKING:
            self._set_state(AgentState.SPEAKING, reason)
        elif self.agent is AgentPhase.THINKING:
            self._set_state(AgentState.THINKING, reason)  # (a speculative reply shows nothing)
        elif self.user is UserPhase.SPEAKING:
            self._set_state(AgentState.USER_SPEAKING, reason)
        else:
            self._set_state(AgentState.LISTENING, reason)

    def _end_turn(self, outcome: Outcome, text: str = "", generation: int | None = None) -> None:
        if self.open_turn is not None:
            self._do(TurnEnded(self.open_turn, outcome, text, generation))
            self.open_turn = None

    # ------------------------------------------------------------------ interruptions

    def _maybe_interrupt(self) -> bool:
        """Let speech over the agent take the floor if it passed the thresholds (True)."""
        reply = self.reply
        opts = self.options.interruption
        if self.overlap is Overlap.NONE or reply is None:
            return False
        if self.overlap is Overlap.THINKING:
            # began before the reply spoke (its audio, if any, waits unheard): the
            # thinking thresholds decide, and yielding drops the reply as never said
            if self.spoken_for < opts.min_duration_thinking:
                return False
            if content_words(self.turn.text(), frozenset()) < opts.min_words_thinking:
                return False
            # the user goes on before the agent said anything: drop the reply, keep the
            # text (it starts the turn, with what was heard of this speech)
            self.overlap = Overlap.NONE
            self._abandon(reply, "the user went on speaking")  # unpauses the output
            self._settle_state("the user went on speaking")
            return True
        if self.spoken_for < opts.min_duration:
            return False
        need = max(opts.min_words, 1 if opts.backchannel else 0)
        if need and content_words(self.turn.text(), opts.backchannel) < need:
            return False  # too few words yet, or only backchannel ("uh-huh", "yeah")
        self._interrupt(reply)
        return True

    def _overlap_needs_final(self, end: SpeechEnded) -> bool:
        """Does speech over the agent, just ended undecided, wait for its final?

        Yes when it lasted long enough to interrupt but has too few words yet, and the
        recogniser still owes them: no final covers its end (an STT that gives words
        only once flushed, such as Whisper or a batch STT, has given none) and the
        recogniser is not down. Otherwise it is a false interruption now.
        """
        opts = self.options.interruption
        if self.overlap is Overlap.THINKING:
            long_enough = self.spoken_for >= opts.min_duration_thinking
            need = opts.min_words_thinking
        else:
            long_enough = self.spoken_for >= opts.min_duration
            need = max(opts.min_words, 1 if opts.backchannel else 0)
        if not long_enough or not need or self.turn.lost:
            return False
        return not self.turn.covers(end.stt_end, end.source)

    def _interrupt(self, reply: ReplyState) -> None:
        self.overlap = Overlap.NONE
        self._do(InterruptReply(reply.generation))
        self.reply, self.agent = None, AgentPhase.IDLE
        self._settle_state("interrupted")

    def _false_interruption(self) -> None:
        paused = self._paused()
        if paused:
            self._do(ResumeOutput())
            if self.overlap is Overlap.SPEECH:  # AgentPaused was emitted
                self._emit(AgentResumed(self.generation))
        self.overlap = Overlap.NONE
        self.turn.lost = False  # the speech is dropped, and what the STT lost of it
        text = self.turn.text()
        self._emit(FalseInterruption(self.spoken_for, paused, self.generation, text))
        self.turn.drop_speech()
        self._end_turn(Outcome.IGNORED, text)
        self._settle_state("false interruption")

    # ------------------------------------------------------------------ typed turns

    def _typed_turn(self) -> None:
        """Answer the typed turns now, unless an uninterruptible reply holds the floor."""
        if not self.typed:
            return
        reply = self.reply
        if reply is not None:
            if not reply.allow_interruptions:
                return  # answered when it ends (_next_say)
            if self.agent is AgentPhase.SPEAKING:
                self._interrupt(reply)
            else:
                self._abandon(reply, "the user typed a turn")  # may answer it
            if self.reply is not None or not self.typed:
                return
        parts = [self.turn.carry]
        if self.user is not UserPhase.SPEAKING:
            # a spoken turn still being decided joins the typed one
            self._leave_pause()
            self._cancel_timer()
            spoken = self.turn.take(behind=False).text
            self.overlap = Overlap.NONE  # the reply it was over is gone (output unpaused)
            if self.user is UserPhase.MISSED or not spoken:
                self._end_turn(Outcome.EMPTY)
            else:
                self._end_turn(Outcome.JOINED, spoken)
            self.user = UserPhase.QUIET
            parts = [spoken]
        text = " ".join([*parts, *self.typed]).strip()
        self.typed.clear()
        self.turn.carry = ""
        self.speech_end_at = self.final_delay = None  # no speech: no voice latencies
        self.turns += 1
        self._do(TurnEnded(self.turns, Outcome.ANSWERED, text, self.generation + 1))
        self._start_reply(text, committed=True, typed=True)

    # ------------------------------------------------------------------ replies

    def _start_reply(
        self,
        user_text: str,
        *,
        committed: bool,
        say: QueuedSay | None = None,
        typed: bool = False,
    ) -> None:
        self.generation += 1
        reply = ReplyState(
            self.generation,
            user_text,
            fixed=say is not None,
            allow_interruptions=say.allow_interruptions if say is not None else True,
            notice=say.notice if say is not None else False,
        )
        self.reply, self.agent = reply, AgentPhase.SPECULATING
        if say is not None:
            self._do(
                StartReply(
                    reply.generation,
                    "",
                    fixed_text=say.text,
                    allow_interruptions=say.allow_interruptions,
                    add_to_history=say.add_to_history,
                    notice=say.notice,
                    offline=say.offline,
                    shown_text=say.user_text,
                )
            )
        else:
            end_at = None if typed else self.speech_end_at
            start = StartReply(
                reply.generation, user_text, shown_text=user_text, speech_end_at=end_at
            )
            self._do(start)
        if committed:
            if say is None and not typed:
                self._end_turn(Outcome.ANSWERED, user_text, reply.generation)
            self._commit(reply)

    def _commit(self, reply: ReplyState) -> None:
        if not reply.fixed:
            self._do(RecordUser(reply.user_text))
            self._emit(UserTurnEnded(reply.user_text, reply.generation))
        self._do(CommitReply(reply.generation, self.final_delay))
        self.agent = AgentPhase.THINKING
        self._set_state(AgentState.THINKING, "end of turn")
        if reply.held is not None:
            self._reply_news(reply.held)

    def _abandon(
        self, reply: ReplyState, reason: str, *, keep_text: bool = True, then: bool = True
    ) -> None:
        """Cancel a reply that spoke nothing yet; its user text joins the next turn."""
        self._do(DropOutput(self.generation + 1))
        self._do(AbandonReply(reply.generation, reason))
        if self._committed() and not reply.fixed:
            self._do(ForgetUser(reply.user_text))
            if keep_text:
                self.turn.carry = reply.user_text
        self.reply, self.agent = None, AgentPhase.IDLE
        if then:
            self._next_say()

    def _next_say(self) -> None:
        if self.reply is None and self.typed:
            self._typed_turn()
            return
        if self.reply is not None or not self.says:
            return
        say = self.says.pop(0)
        self._start_reply("", committed=True, say=say)

    def _reply_news(self, news: ReplyAudio | ReplyDone | ReplyFailed) -> None:
        reply = self.reply
        if reply is None or news.generation != reply.generation:
            return  # an interrupted or abandoned reply, still winding down
        if self.agent is AgentPhase.SPECULATING:
            # speculation is invisible: a reply started on an interim transcript that
            # ends (fails) before the turn is decided says and shows nothing; the commit
            # reuses its outcome when the final agrees, else it is dropped unheard
            assert not isinstance(news, ReplyAudio)  # refused by _check
            reply.held = news
            return
        match news:
            case ReplyAudio():
                self.agent = AgentPhase.SPEAKING
                if self.overlap is Overlap.NONE:
                    self._set_state(AgentState.SPEAKING, "first audio")
            case ReplyDone():
                self._end_reply(reply, "done")
                self._settle_state("reply done")
                self._next_say()
            case ReplyFailed():
                error, apology = news.error, news.apology
                if news.fatal:
                    self._do(Fail(error))  # the session closes (Close follows)
                    return
                self._emit(AgentError(error.stage or "reply", error, True, reply.generation))
                self._end_reply(reply, "failed")
                line = self.options.error_message
                if line and not reply.notice and apology is not None:
                    # a failed fallback line is not apologised for
                    say = QueuedSay(line, True, False, notice=True, offline=apology == "offline")
                    self.says.insert(0, say)
                self._settle_state("reply failed")
                self._next_say()

    def _end_reply(self, reply: ReplyState, how: Literal["done", "failed"]) -> None:
        if self._paused():
            # it ended (failed, or its drain timed out) while speech over it held its
            # audio: what is queued of it is dropped unheard, and the output plays again
            self._do(DropOutput(self.generation + 1))
            if self.overlap is Overlap.SPEECH:  # AgentPaused was emitted
                self._emit(AgentResumed(self.generation))
        self.overlap = Overlap.NONE
        self._do(EndReply(reply.generation, how))
        self.reply, self.agent = None, AgentPhase.IDLE
