"""SentenceSegmenter: sentence boundaries for streaming TTS, independent of token splits."""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.errors import ConfigError
from antiphon.services import segmenter as segmenter_module
from antiphon.services.segmenter import SentenceSegmenter, segment_stream


def run(tokens: list[str], **kw: int | str) -> list[str]:
    """All segments of a token sequence: every push's output, then finish()."""
    seg = SentenceSegmenter(**kw)  # type: ignore[arg-type]
    out: list[str] = []
    for token in tokens:
        out += seg.push(token)
    return out + seg.finish()


def chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    expected: list[str]
    kw: dict[str, int | str] = field(default_factory=lambda: {"min_chars": 0})


CASES = [
    Case("plain", "Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
    Case(
        "titles",
        "Dr. Smith met Mr. and Mrs. Jones. Prof. X agreed.",
        ["Dr. Smith met Mr. and Mrs. Jones.", "Prof. X agreed."],
    ),
    Case(
        "latin abbreviations",
        "Bring fruit, e.g. apples, i.e. something sweet, etc. and cake. Thanks.",
        ["Bring fruit, e.g. apples, i.e. something sweet, etc. and cake.", "Thanks."],
    ),
    Case("times", "We meet at 5 p.m. Then we eat. Ok.", ["We meet at 5 p.m. Then we eat.", "Ok."]),
    Case(
        "companies and months",
        "Acme Inc. and Foo Ltd. signed on Jan. 5 in St. Louis. Done.",
        ["Acme Inc. and Foo Ltd. signed on Jan. 5 in St. Louis.", "Done."],
    ),
    Case("No. before a number", "Call No. 5 now. Yes.", ["Call No. 5 now.", "Yes."]),
    Case("No. as an answer", "No. I won't go. Ok.", ["No.", "I won't go.", "Ok."]),
    Case("decimal", "It costs 3.5 dollars. Cheap.", ["It costs 3.5 dollars.", "Cheap."]),
    Case(
        "thousands and version",
        "Pay 1,000.25 for v2.0.1 at example.com now. Go.",
        ["Pay 1,000.25 for v2.0.1 at example.com now.", "Go."],
    ),
    Case("number ends a sentence", "I have 3. Then I left.", ["I have 3.", "Then I left."]),
    Case(
        "initials",
        "J. R. R. Tolkien lived in the U.K. and wrote. Yes.",
        ["J. R. R. Tolkien lived in the U.K. and wrote.", "Yes."],
    ),
    Case("pronoun I", "So do I. Then we go.", ["So do I.", "Then we go."]),
    Case(
        "closing quote kept",
        'He said "Stop." Then he left.',
        ['He said "Stop."', "Then he left."],
    ),
    Case("closing bracket kept", "(This is it.) Next one.", ["(This is it.)", "Next one."]),
    Case(
        "quoted question before lowercase",
        '"Really?" she asked. Yes.',
        ['"Really?" she asked.', "Yes."],
    ),
    Case("interrobang run", "Really?! Yes.", ["Really?!", "Yes."]),
    Case(
        "ellipsis before lowercase", "Well... maybe later. Fine.", ["Well... maybe later.", "Fine."]
    ),
    Case("ellipsis before capital", "Wait... Then it hit me.", ["Wait...", "Then it hit me."]),
    Case("unicode ellipsis", "Wait… Then… ok.", ["Wait…", "Then… ok."]),
    Case("CJK", "你好。今天天气很好！你呢？", ["你好。", "今天天气很好！", "你呢？"]),
    Case("CJK closing bracket", "他说：「好。」然后走了。", ["他说：「好。」", "然后走了。"]),
    Case("line breaks", "First line\nSecond line\nThird", ["First line", "Second line", "Third"]),
    Case(
        "list markers",
        "Steps:\n1. Open it.\n2. Close it.",
        ["Steps:", "1. Open it.", "2. Close it."],
    ),
    Case(
        "min_chars merges short sentences",
        "Hi. How are you doing today? Good.",
        ["Hi. How are you doing today?", "Good."],
        {"min_chars": 20},
    ),
    Case(
        "min_chars merges short lines",
        "Options:\n- tea\n- coffee\n- hot chocolate with milk\nEnd",
        ["Options:\n- tea\n- coffee", "- hot chocolate with milk", "End"],
        {"min_chars": 20},
    ),
    Case(
        "paragraph break ends a short segment",
        "Title\n\nBody text that is long enough. Yes.",
        ["Title", "Body text that is long enough.", "Yes."],
        {"min_chars": 20},
    ),
    Case(
        "max_chars prefers a clause mark",
        "one two three, four five six seven eight nine ten",
        ["one two three,", "four five six seven", "eight nine ten"],
        {"min_chars": 0, "max_chars": 20},
    ),
    Case(
        "max_chars falls back to a space",
        "alpha beta gamma delta epsilon zeta",
        ["alpha beta gamma", "delta epsilon zeta"],
        {"min_chars": 5, "max_chars": 18},
    ),
    Case(
        "max_chars hard cut",
        "x" * 25,
        ["x" * 10, "x" * 10, "x" * 5],
        {"min_chars": 0, "max_chars": 10},
    ),
    Case(
        "whitespace is kept inside, stripped outside",
        "  Hello   there.  \n",
        ["Hello   there."],
    ),
    Case(
        "non-English has no abbreviation list",
        "Dr. Who.",
        ["Dr.", "Who."],
        {"min_chars": 0, "language": "de"},
    ),
    Case(
        "en-US uses the English list",
        "Dr. Who.",
        ["Dr. Who."],
        {"min_chars": 0, "language": "en-US"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cases_whole_and_char_by_char(case: Case) -> None:
    assert run([case.text], **case.kw) == case.expected
    assert run(list(case.text), **case.kw) == case.expected


def test_decision_waits_for_the_whitespace() -> None:
    seg = SentenceSegmenter(min_chars=0)
    assert seg.push("It is 3.") == []
    assert seg.push("5 now.") == []
    assert seg.push(" Then") == ["It is 3.5 now."]
    assert seg.push("...") == []
    assert seg.push(" maybe.") == []  # ellipsis + lowercase: same sentence
    assert seg.finish() == ["Then... maybe."]


def test_sentence_is_emitted_on_the_next_tokens_leading_space() -> None:
    seg = SentenceSegmenter(min_chars=0)
    assert seg.push("Hello there.") == []
    assert seg.push(" How") == ["Hello there."]
    assert seg.push(" are you?") == []
    assert seg.push("\n") == ["How are you?"]


def test_abbreviation_waits_for_the_next_word_only_when_it_must() -> None:
    seg = SentenceSegmenter(min_chars=0)
    assert seg.push("Room No. ") == []  # "No. 5" or "No. I won't"? Wait for the next word.
    assert seg.push("7 is free. ") == ["Room No. 7 is free."]


def test_short_sentence_is_sent_alone_at_finish() -> None:
    seg = SentenceSegmenter(min_chars=20)
    assert seg.push("Hi. ") == []
    assert seg.finish() == ["Hi."]


def test_finish_resets_for_the_next_response() -> None:
    seg = SentenceSegmenter(min_chars=0)
    assert seg.push("One. Two") == ["One."]
    assert seg.finish() == ["Two"]
    assert seg.finish() == []
    assert seg.push("1. Three. ") == ["1. Three."]  # line start again: "1." is a list marker


def test_empty_and_whitespace_input() -> None:
    assert run([]) == []
    assert run(["", "  ", "\n\n", ""]) == []


def test_max_chars_bounds_every_segment_and_latency() -> None:
    seg = SentenceSegmenter(min_chars=0, max_chars=30)
    out: list[str] = []
    for word in ("lorem ipsum " * 20).split(" "):
        out += seg.push(word + " ")
        # Pending text never exceeds max_chars by more than one token.
        assert len(seg._buf.strip()) <= 30 + len(word) + 1
    out += seg.finish()
    assert out and all(len(s) <= 30 for s in out)
    assert " ".join(out) == " ".join(("lorem ipsum " * 20).split())


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"min_chars": -1}, "min_chars"),
        ({"min_chars": 10, "max_chars": 10}, "max_chars"),
        ({"max_chars": 0, "min_chars": 0}, "max_chars"),
        ({"min_chars": 2.5}, "int"),
        ({"language": None}, "language"),
    ],
)
def test_bad_config_is_refused(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SentenceSegmenter(**kw)  # type: ignore[arg-type]


def test_push_refuses_non_text() -> None:
    with pytest.raises(ConfigError, match="takes str"):
        SentenceSegmenter().push(b"bytes")  # type: ignore[arg-type]


async def test_segment_stream() -> None:
    async def tokens() -> AsyncIterator[str]:
        for t in ["Hi", ".", " How", " are", " you", "?", " I", "'m 3", ".", "5", " today."]:
            yield t

    got = [s async for s in segment_stream(tokens(), min_chars=0)]
    assert got == ["Hi.", "How are you?", "I'm 3.5 today."]
    merged = [s async for s in segment_stream(tokens())]
    assert merged == ["Hi. How are you? I'm 3.5 today."]  # "Hi. How are you?" < 20 chars


async def test_segment_stream_yields_before_the_input_ends() -> None:
    seen: list[str] = []

    async def tokens() -> AsyncIterator[str]:
        yield "First sentence. "
        yield "Second"
        assert seen == ["First sentence."], "the first sentence must come out before the end"
        yield " sentence."

    async for s in segment_stream(tokens(), min_chars=0):
        seen.append(s)
    assert seen == ["First sentence.", "Second sentence."]


# -- properties

WORDS = [
    "hello", "world", "the", "cat", "said", "I", "A", "it's", "ok", "Dr.", "Mr.", "Mrs.",
    "etc.", "e.g.,", "i.e.", "U.S.", "J.", "3.5", "1,000.25", "v2.0.1", "No. 5", "No.",
    "p.m.", "Jan.", '"quoted"', "(aside)", "well...", "wait…", "example.com", "1.", "x,",
]  # fmt: skip
ENDINGS = [".", "!", "?", "...", "?!", "…", '."', "!)", ".'", ""]
SEPARATORS = [" ", "  ", "\n", "\n\n", " \n\n ", "\t", " \n"]

sentences = st.builds(
    lambda words, end: " ".join(words) + end,
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=12),
    st.sampled_from(ENDINGS),
)


@st.composite
def grammar_text(draw: st.DrawFn, separators: list[str] = SEPARATORS) -> str:
    parts: list[str] = draw(st.lists(sentences, min_size=1, max_size=8))
    text = parts[0]
    for part in parts[1:]:
        text += draw(st.sampled_from(separators)) + part
    lead = draw(st.sampled_from(["", " ", "\n"]))
    tail = draw(st.sampled_from(["", " ", "\n\n"]))
    return lead + text + tail


@st.composite
def limits(draw: st.DrawFn) -> dict[str, int]:
    # Longest word + ending is < 20 characters, so a space always lies in [min, max].
    min_chars = draw(st.integers(0, 40))
    return {"min_chars": min_chars, "max_chars": draw(st.integers(min_chars + 20, 200))}


cut_lists = st.lists(st.integers(0, 10_000), max_size=40)


@settings(max_examples=300, deadline=None)
@given(text=grammar_text(), kw=limits(), cuts=cut_lists)
def test_split_invariance_and_nothing_lost(text: str, kw: dict[str, int], cuts: list[int]) -> None:
    whole = run([text], **kw)
    assert run(chunks(text, cuts), **kw) == whole
    assert " ".join(" ".join(whole).split()) == " ".join(text.split())
    for segment in whole:
        assert segment and segment == segment.strip()
        assert len(segment) <= kw["max_chars"]


@settings(max_examples=200, deadline=None)
@given(text=grammar_text(separators=[" "]), kw=limits(), cuts=cut_lists)
def test_only_the_last_segment_may_be_short(text: str, kw: dict[str, int], cuts: list[int]) -> None:
    out = run(chunks(text, cuts), **kw)
    assert all(len(s) >= kw["min_chars"] for s in out[:-1])
    assert " ".join(out) == " ".join(text.split())


ANY_CHAR = st.one_of(
    st.sampled_from(list("ab AZ5.,;:!?…。！？、\"')」「\n\t")),
    st.characters(codec="utf-8"),
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(ANY_CHAR, max_size=300),
    min_chars=st.integers(0, 30),
    extra=st.integers(1, 60),
    cuts=cut_lists,
)
def test_any_text_split_invariant_and_lossless(
    text: str, min_chars: int, extra: int, cuts: list[int]
) -> None:
    kw = {"min_chars": min_chars, "max_chars": min_chars + extra}
    whole = run([text], **kw)
    assert run(chunks(text, cuts), **kw) == whole
    assert "".join("".join(whole).split()) == "".join(text.split())
    assert all(s and s == s.strip() and len(s) <= kw["max_chars"] for s in whole)


# ------------------------------------------------------------------ linear time


class _CountingPattern:
    """Stands in for the candidate regex and counts the characters each search scans."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.scanned = 0

    def search(self, text: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        match = self.pattern.search(text, pos, endpos)
        self.scanned += (match.start() if match else min(endpos, len(text))) - pos
        return match


def _work(text: str, token_size: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """(characters scanned + copied, segments) to segment ``text`` in tokens of that size."""
    counter = _CountingPattern(segmenter_module._CANDIDATE)
    copied = 0
    append = SentenceSegmenter._append

    def counting_append(self: SentenceSegmenter, token: str) -> None:
        nonlocal copied
        copied += len(self._buf) - self._start + len(token)
        append(self, token)

    with monkeypatch.context() as m:
        m.setattr(segmenter_module, "_CANDIDATE", counter)
        m.setattr(SentenceSegmenter, "_append", counting_append)
        seg = SentenceSegmenter()
        segments = 0
        for at in range(0, len(text), token_size):
            segments += len(seg.push(text[at : at + token_size]))
        segments += len(seg.finish())
    return counter.scanned + copied, segments


@pytest.mark.parametrize(
    "unit",
    ["word ", "Hello there, how are you. ", "x", ".", "Wait... ", '"Really?" ', "\n", "3.5 "],
)
@pytest.mark.parametrize("token_size", [1_000_000_000, 7])
def test_segmenting_is_linear_in_the_text_length(
    unit: str, token_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1 MB text is scanned and copied a bounded number of times per character.

    Each push may copy and rescan what is pending (at most ``max_chars``), so many small
    tokens cost up to ``max_chars`` per token; never the whole text per segment.
    """
    small = unit * (125_000 // len(unit))
    large = small * 8  # 1 MB
    work_small, n_small = _work(small, token_size, monkeypatch)
    work_large, n_large = _work(large, token_size, monkeypatch)
    assert n_large >= 8 * n_small - 8  # it did segment the whole text
    token = min(token_size, len(large))
    per_push = 2 * (SentenceSegmenter().max_chars + token) if token < len(large) else 0
    pushes = -(-len(large) // token)
    assert work_large <= 4 * len(large) + pushes * per_push
    assert work_large / work_small < 8 * 1.1  # growth ratio: linear, not quadratic
