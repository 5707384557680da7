"""``agent.turns.UserTurn``: the turn's text and its end-of-turn evidence, in every order.

Hypothesis drives arbitrary interleavings of transcripts (interim and final, from the
current stream or a replaced one), recogniser losses, dropped speech and turn ends
through the pure state, against a plain model of what the turn must hold: no final is
lost or reordered, an interim counts only until the next transcript, the finals cover
the speech only when the recogniser's last word on it was a final reaching its end, and
a turn is a fragment exactly when the recogniser lost or never finished part of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.agent.turns import BACKCHANNEL, COVER_SLACK, UserTurn, content_words

WORDS = st.sampled_from(["what", "can", "you", "do", "hello", "again"])
STREAMS = ("stream-a", "stream-b")


@dataclass(frozen=True)
class Hear:
    text: str
    final: bool
    end: float
    source: str


@dataclass(frozen=True)
class Lose:
    pass


@dataclass(frozen=True)
class DropSpeech:
    pass


@dataclass(frozen=True)
class Take:
    behind: bool


@dataclass(frozen=True)
class Covers:
    speech_end: float
    source: str


EVENTS = st.one_of(
    st.builds(
        Hear,
        WORDS,
        st.booleans(),
        st.floats(0, 10, allow_nan=False),
        st.sampled_from(STREAMS),
    ),
    st.just(Lose()),
    st.just(DropSpeech()),
    st.builds(Take, st.booleans()),
    st.builds(Covers, st.floats(0, 10, allow_nan=False), st.sampled_from(STREAMS)),
)


@dataclass
class Model:
    """What the turn must hold, written the obvious way."""

    finals: list[str] = field(default_factory=list)
    interim: str = ""
    last: Hear | None = None  # the last transcript of this speech
    lost: bool = False

    def text(self) -> str:
        return " ".join([*self.finals, *([self.interim] if self.interim else [])])


@given(st.lists(EVENTS, max_size=40), st.sampled_from(["", "earlier words"]))
def test_the_turn_holds_what_was_heard_in_order(events: list[object], carry: str) -> None:
    turn = UserTurn(carry=carry)
    model = Model()
    carried = carry  # the text of a dropped reply's turn starts this one
    for ev in events:
        if isinstance(ev, Hear):
            turn.hear(ev.text, final=ev.final, end=ev.end, source=ev.source)
            if ev.final:
                model.finals.append(ev.text)
                model.interim = ""
            else:
                model.interim = ev.text
            model.last = ev
        elif isinstance(ev, Lose):
            turn.lost = model.lost = True
        elif isinstance(ev, DropSpeech):
            turn.drop_speech()
            model.finals, model.interim, model.last = [], "", None
        elif isinstance(ev, Covers):
            last = model.last
            expected = (
                last is not None
                and last.final
                and last.source == ev.source
                and last.end >= ev.speech_end - COVER_SLACK
            )
            assert turn.covers(ev.speech_end, ev.source) == expected
        elif isinstance(ev, Take):
            taken = turn.take(behind=ev.behind)
            want = " ".join(p for p in [carried, model.text()] if p).strip()
            assert taken.text == want
            # a fragment: the recogniser lost part of the turn, or the turn ended
            # without its final while an interim was pending
            assert taken.fragment == (model.lost or (ev.behind and bool(model.interim)))
            model, carried = Model(), ""
            assert turn.text() == "" and not turn.lost
            continue
        assert turn.text() == " ".join(p for p in [carried, model.text()] if p).strip()


@given(st.lists(WORDS, min_size=1, max_size=8), st.floats(0.5, 10, allow_nan=False))
def test_an_interim_after_the_final_always_defeats_the_evidence(
    words: list[str], end: float
) -> None:
    turn = UserTurn()
    turn.hear(" ".join(words), final=True, end=end, source="s")
    assert turn.covers(end, "s")
    assert not turn.covers(end, "other")  # times of another stream do not compare
    assert not turn.covers(None, "s")  # no stream time: never covered
    assert not turn.covers(end + COVER_SLACK + 0.01, "s")  # speech went on past it
    turn.hear("more", final=False, end=end + 0.5, source="s")
    assert not turn.covers(end, "s")
    turn.hear("more words", final=True, end=end + 0.6, source="s")
    assert turn.covers(end + 0.6, "s")
    assert turn.take(behind=False).text == f"{' '.join(words)} more words"


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("Uh-huh.", 0),
        ("uh huh, yeah", 0),
        ("Mm-hmm. Got it, OK!", 0),
        ("I see", 0),
        ("I want that", 3),  # "i" alone is no backchannel: only the phrase "i see" is
        ("yeah but wait", 2),
        ("no", 1),
        ("got", 1),
        ("", 0),
    ],
)
def test_content_words_skip_the_backchannel(text: str, count: int) -> None:
    assert content_words(text, BACKCHANNEL) == count


@given(
    st.lists(st.sampled_from(sorted(BACKCHANNEL)), max_size=6), st.sampled_from(["stop", "wait"])
)
def test_one_word_that_is_not_backchannel_always_counts(backchannel: list[str], word: str) -> None:
    assert content_words(" ".join(backchannel)) == 0
    assert content_words(" ".join([*backchannel, word])) == 1
    assert content_words(" ".join(backchannel), frozenset()) == sum(
        len(b.replace("-", " ").split()) for b in backchannel
    )
