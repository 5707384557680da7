"""Tuning of an agent session: turn-taking, interruptions, tools and shutdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from antiphon.agent.turns import BACKCHANNEL
from antiphon.errors import ConfigError
from antiphon.protocols.retry import Backoff
from antiphon.services.turn import EndOfTurn

__all__ = ["AgentOptions", "InterruptionOptions", "Misheard", "TurnOptions"]

#: What the agent does with a fragment of a turn the recogniser lost the rest of.
Misheard = Literal["confirm", "reask", "answer"]


def _seconds(owner: str, name: str, value: object, *, zero_ok: bool = True) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or value < 0 or (not zero_ok and value == 0):  # type: ignore[operator]
        limit = ">= 0" if zero_ok else "> 0"
        raise ConfigError(f"{owner}.{name} must be a number of seconds {limit}, got {value!r}")


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """When the user's turn ends.

    The turn ends when the VAD has heard ``VADOptions.min_silence_duration`` of silence
    after speech *and* the STT has given the final transcript of that speech, on the
    first sufficient evidence: a final that already covers the speech when the silence
    window ends (a cloud STT's end-of-speech final, such as Deepgram's ``speech_final``,
    often comes first) ends the turn at once, and so does a final that comes after it
    (the answer to the session's flush). ``final_timeout`` is only the fallback: if no
    final comes within it, the turn ends with what was recognised so far (or is dropped
    when nothing was).

    ``preemptive``: start the LLM on the last interim transcript as soon as the silence
    is heard, before the final; the reply is kept (and spoken) only if the final says the
    same, and is cancelled if the user goes on speaking.

    An in-process recogniser that is still working on the utterance when the timeout
    fires (the offline default, Whisper, hears each utterance whole: 0.5-2 s on a busy
    2-core machine) extends the wait up to its own ``STTDeadlines.final``, and a final
    that comes after an empty timeout still starts the turn; so the default stays short
    for a streaming cloud STT whose final was lost.

    ``end_of_turn``: a semantic end-of-turn hook (:class:`~antiphon.services.turn.EndOfTurn`,
    a turn model behind silence), or None for silence alone. With one, the VAD's silence
    window is the short *probe* (0.2-0.3 s): at it the session asks the model with the
    user's audio, and ends the turn at once on "complete", or after the verdict's ``hold``
    of further silence (``EndOfTurnOptions.max_silence`` for "not yet",
    ``fallback_silence`` when the model is slow, fails or is absent); speech in the hold
    continues the turn. The session never closes the hook's detector: its owner does.
    """

    final_timeout: float = 1.0
    preemptive: bool = True
    end_of_turn: EndOfTurn | None = None

    def __post_init__(self) -> None:
        _seconds("TurnOptions", "final_timeout", self.final_timeout, zero_ok=False)
        if self.end_of_turn is not None and not isinstance(self.end_of_turn, EndOfTurn):
            raise ConfigError("TurnOptions.end_of_turn must be an EndOfTurn or None")


@dataclass(frozen=True, slots=True)
class InterruptionOptions:
    """When user speech over the agent interrupts it.

    Speech over the agent interrupts once it lasted ``min_duration`` seconds (of audio)
    and its transcript has ``min_words`` words that are not ``backchannel`` — at least
    one while ``backchannel`` is not empty, so "uh-huh", "yeah" or a cough (no words)
    never interrupts; ``backchannel=frozenset()`` and ``min_words=0`` interrupt on
    duration alone. Other speech over the agent is a false interruption, dropped (its
    words join no turn and no history): with ``false_interruption="resume"`` the agent's
    audio is paused while the user might be interrupting and resumes where it stopped;
    with ``"ignore"`` it keeps playing throughout. ``backchannel``: words and phrases
    (matched whole, case and punctuation ignored; default
    :data:`~antiphon.agent.turns.BACKCHANNEL`).

    While the agent is *thinking* (the turn ended, its reply has not spoken yet), speech
    drops the reply (its user text joins the user's next turn) once it lasted
    ``min_duration_thinking`` seconds and has ``min_words_thinking`` words (any words:
    while the agent is silent, "yes" is an answer, not a backchannel). Shorter speech is
    dropped and the reply goes on; its first audio waits for the end of that speech. With
    both 0 (the default) the reply is dropped the moment the user speaks.
    """

    enabled: bool = True
    min_duration: float = 0.5
    min_words: int = 0
    false_interruption: Literal["resume", "ignore"] = "resume"
    backchannel: frozenset[str] = BACKCHANNEL
    min_duration_thinking: float = 0.0
    min_words_thinking: int = 0

    def __post_init__(self) -> None:
        _seconds("InterruptionOptions", "min_duration", self.min_duration)
        _seconds("InterruptionOptions", "min_duration_thinking", self.min_duration_thinking)
        for name in ("min_words", "min_words_thinking"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"InterruptionOptions.{name} must be >= 0, got {value!r}")
        if not isinstance(self.backchannel, frozenset) or not all(
            isinstance(w, str) for w in self.backchannel
        ):
            raise ConfigError("InterruptionOptions.backchannel must be a frozenset of str")
        if self.false_interruption not in ("resume", "ignore"):
            raise ConfigError(
                "InterruptionOptions.false_interruption must be 'resume' or 'ignore', "
                f"got {self.false_interruption!r}"
            )


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """Everything an :class:`~antiphon.agent.AgentSession` can be tuned with.

    ``max_tool_rounds``: LLM calls per turn that may end in tool calls. ``tool_timeout``:
    seconds each tool may run. ``filler_delay`` / ``filler_text``: when tools run longer
    than this, the agent says the filler meanwhile (``""`` disables it).
    ``error_message``: said when the LLM, a tool or the TTS fails mid-turn (``""``: say
    nothing); when the TTS is the one failing it is said with the session's
    ``fallback_tts`` (an offline TTS), or not at all without one.
    ``drain_timeout``: the longest a reply waits for its queued audio to play out, and a
    graceful close for the reply in progress. ``tts_lookahead``: sentences synthesised
    ahead of the one playing.

    Speech recognition failures: a failed STT stream is replaced after ``stt_backoff``
    (bounded exponential backoff with jitter, by consecutive failure); the session goes
    on listening, and closes only on an unrecoverable error (authentication, quota) or
    after ``max_stt_restarts`` consecutive failures (``None``: never). A turn whose
    speech the recogniser could not hear says ``unanswered_message``; a turn of which it
    heard only a fragment (it failed or fell behind mid-turn) is handled by ``misheard``:
    ``"confirm"`` says ``misheard_message`` (``{text}``: the fragment) and keeps the
    fragment in the history, ``"reask"`` says ``unanswered_message`` and drops it,
    ``"answer"`` answers the fragment as if it were the whole turn.
    """

    turn: TurnOptions = field(default_factory=TurnOptions)
    interruption: InterruptionOptions = field(default_factory=InterruptionOptions)
    max_tool_rounds: int = 3
    tool_timeout: float = 10.0
    filler_delay: float = 1.0
    filler_text: str = "One moment."
    error_message: str = "Sorry, something went wrong on my side. Please say that again."
    drain_timeout: float = 5.0
    tts_lookahead: int = 2
    max_stt_restarts: int | None = None
    stt_backoff: Backoff = field(default_factory=Backoff)
    unanswered_message: str = "Sorry, I missed that. Could you say it again?"
    misheard: Misheard = "confirm"
    misheard_message: str = 'Sorry, I only caught "{text}". Could you say the rest again?'

    def __post_init__(self) -> None:
        if not isinstance(self.turn, TurnOptions):
            raise ConfigError("AgentOptions.turn must be TurnOptions")
        if not isinstance(self.interruption, InterruptionOptions):
            raise ConfigError("AgentOptions.interruption must be InterruptionOptions")
        for name in ("max_tool_rounds", "tts_lookahead", "max_stt_restarts"):
            value = getattr(self, name)
            if value is None and name == "max_stt_restarts":
                continue
            low = 1 if name == "tts_lookahead" else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"AgentOptions.{name} must be an int >= {low}, got {value!r}")
        _seconds("AgentOptions", "tool_timeout", self.tool_timeout, zero_ok=False)
        _seconds("AgentOptions", "filler_delay", self.filler_delay)
        _seconds("AgentOptions", "drain_timeout", self.drain_timeout)
        for name in ("filler_text", "error_message", "unanswered_message", "misheard_message"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"AgentOptions.{name} must be a str")
        if not isinstance(self.stt_backoff, Backoff):
            raise ConfigError("AgentOptions.stt_backoff must be a Backoff")
        if self.misheard not in ("confirm", "reask", "answer"):
            raise ConfigError(
                f"AgentOptions.misheard must be 'confirm', 'reask' or 'answer', got "
                f"{self.misheard!r}"
            )
