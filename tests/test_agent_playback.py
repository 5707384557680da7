"""Which text of a reply was heard, from the seconds of its audio that played."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from antiphon.agent.playback import Playback


def reply() -> Playback:
    p = Playback()
    p.add("Hello there.", 0.0, 1.0)
    p.add("This is the second sentence.", 1.0, 3.0)
    p.add("And a third.", 3.0, 4.0)
    return p


def test_whole_sentences_heard_are_kept_whole() -> None:
    p = reply()
    assert p.heard(0.0) == ""
    assert p.heard(1.0) == "Hello there."
    assert p.heard(3.0) == "Hello there. This is the second sentence."
    assert p.heard(10.0) == p.text


def test_a_sentence_cut_short_keeps_whole_words_in_proportion() -> None:
    p = reply()
    # half of "This is the second sentence." (28 chars) is 14 chars: "This is the se" → whole words
    assert p.heard(2.0) == "Hello there. This is the"
    assert p.heard(1.01) == "Hello there."  # not even a whole word of the second yet


@given(st.floats(min_value=0, max_value=5), st.floats(min_value=0, max_value=5))
def test_more_audio_never_means_less_text(a: float, b: float) -> None:
    p = reply()
    lo, hi = sorted((a, b))
    assert p.text.startswith(p.heard(hi))
    assert p.heard(hi).startswith(p.heard(lo))


def test_a_sentence_still_being_synthesised_is_cut_at_the_estimated_rate() -> None:
    p = Playback()
    p.add("Twenty characters ok.", 0.0, 1.4)  # 21 chars in 1.4 s: 15 chars a second
    p.begin("A long sentence whose audio is still arriving from the TTS.", 1.4)  # 60 chars
    p.grow(2.4)  # only 1 s written so far
    # 1 s into a sentence of about 4 s: a quarter of its text, not all that was written
    assert p.heard(2.4) == "Twenty characters ok. A long sentence"
    p.grow(5.4)
    p.finish()
    assert p.heard(5.4) == p.text
