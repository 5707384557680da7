"""Sentence segmentation of an LLM token stream, for streaming TTS.

A streaming TTS speaks best when it gets whole sentences: too little text per request
and the prosody suffers, too much and the first audio comes late. :class:`SentenceSegmenter`
takes tokens as they arrive and hands back each sentence as soon as its end is certain.

Rules, in short:

* A sentence ends after ``.``, ``!``, ``?`` or ``…`` (a run such as ``?!`` or ``...``
  counts as one) plus any closing quotes/brackets, **once the following whitespace has
  been seen** — a token ending in ``3.`` may be continued by ``5``. CJK ``。！？`` end a
  sentence even without whitespace (after their closing brackets, e.g. ``。」``).
* No end inside numbers and versions (``3.5``, ``1,000.25``, ``v2.0.1``, ``example.com``:
  no whitespace follows the dot), after common English abbreviations (``Dr.``, ``etc.``,
  ``Jan.``, ``No.`` before a digit, ...), after initials and initialisms (``J.``,
  ``U.S.``, ``e.g.``, ``a.m.``), or after a list marker (``1.`` at the start of a line).
  Abbreviations win even at a real sentence end (``... in the U.S. Then``): a missed
  split only makes a request longer, a wrong one breaks the prosody.
* An ellipsis (``...``/``…``) ends a sentence only before a capital letter; a quoted
  sentence followed by a lowercase word (``"Really?" she asked.``) does not end.
* A line break ends a segment; a paragraph break (a blank line) ends it even when short.
* A sentence shorter than ``min_chars`` is merged with the next one (``"Hi."`` is not
  sent alone), except before a paragraph break and at :meth:`SentenceSegmenter.finish`.
* Without a boundary within ``max_chars``, the text is cut at the last clause mark
  (``,;:``) or space before ``max_chars`` (and hard at ``max_chars`` if there is none),
  so latency stays bounded.

The decision at each point depends only on the text, never on how it was split into
tokens: pushing ``"Hello there. How"`` in one piece or character by character gives the
same segments. Text is passed through as is (markdown such as ``**`` or backticks stays;
cleaning TTS input is a separate concern); segments are stripped, non-empty and at most
``max_chars`` long, and no character is lost or added between them.

Send segments with ``push_text`` and flush sparingly: a flush per sentence can exceed a
provider's flush limit (Deepgram: 20 per minute, see ``docs/deepgram-tts.md``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncIterable, AsyncIterator

from antiphon.errors import ConfigError

__all__ = ["SentenceSegmenter", "segment_stream"]

_TERMINATORS = frozenset(".!?…。！？")
_CJK_TERMINATORS = frozenset("。！？")
_CLOSERS = frozenset("\"')]}”’»」』）】〕》〉")
_QUOTES = frozenset("\"'”’»」』")
_OPENERS = "\"'“‘«([{「『（【〔《〈"
_CLAUSE = frozenset(",;:")
_CJK_CLAUSE = frozenset("、，；：")
_CANDIDATE = re.compile(r"[.!?…。！？\n]")
_SPACE = re.compile(r"\s*")
# Letters separated by dots, each part one letter: "U.S", "e.g", "a.m", "z.B".
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")

_ABBREVIATIONS: dict[str, frozenset[str]] = {
    "en": frozenset(
        {
            # titles
            "dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "rev", "hon", "gen", "col",
            "lt", "sgt", "capt", "mt", "ft",
            # companies and the like
            "inc", "ltd", "co", "corp", "dept", "vs", "etc", "approx", "fig", "ph.d",
            # months
            "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
            "dec",
        }
    ),
}  # fmt: skip


class _Kind(enum.Enum):
    NEED = "need more text"
    NO = "no boundary"
    SOFT = "boundary, merged when short"
    HARD = "boundary"


class SentenceSegmenter:
    """Turn a token stream into flushable sentences (see the module docstring for rules).

    Call :meth:`push` with each token and send what it returns; call :meth:`finish` at
    the end of the response for the rest. ``finish`` resets the segmenter, so one
    instance can serve consecutive responses. Abbreviation lists exist for English
    (``language`` ``"en"``, ``"en-US"``, ...); other languages get the
    language-neutral rules only.
    """

    def __init__(self, min_chars: int = 20, max_chars: int = 400, language: str = "en") -> None:
        for name, value in (("min_chars", min_chars), ("max_chars", max_chars)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"SentenceSegmenter {name} must be an int, got {value!r}")
        if min_chars < 0:
            raise ConfigError(f"SentenceSegmenter min_chars must be >= 0, got {min_chars}")
        if max_chars < 1 or max_chars <= min_chars:
            raise ConfigError(
                f"SentenceSegmenter max_chars must be >= 1 and greater than min_chars "
                f"(got max_chars={max_chars}, min_chars={min_chars})"
            )
        if not isinstance(language, str):
            raise ConfigError(f"SentenceSegmenter language must be a str, got {language!r}")
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.language = language
        base = re.split(r"[-_]", language.lower(), maxsplit=1)[0]
        self._abbreviations = _ABBREVIATIONS.get(base, frozenset())
        self._reset()

    def _reset(self) -> None:
        # _buf[_start:] is the text not yet emitted; the consumed prefix is dropped on the
        # next push, so emitting a segment never copies the rest of the buffer.
        self._buf = ""
        self._start = 0
        self._pos = 0  # candidates before this index of _buf are decided and passed
        self._line_blank = True  # only whitespace since the last line break before _start

    # -- public API
    def push(self, token: str) -> list[str]:
        """Add a token; return the sentences that are now complete (maybe none)."""
        if not isinstance(token, str):
            raise ConfigError(f"SentenceSegmenter.push() takes str, got {type(token).__name__}")
        if not token:
            return []
        self._append(token)
        return self._scan(final=False)

    def finish(self) -> list[str]:
        """End of input: return the remaining segments (the last may be short); reset."""
        out = self._scan(final=True)
        rest = self._buf[self._start :].strip()
        if rest:
            out.append(rest)
        self._reset()
        return out

    # -- scanning
    def _append(self, token: str) -> None:
        """Drop the consumed prefix and add ``token``: one copy of what is pending."""
        start = self._start
        self._buf = self._buf[start:] + token
        self._pos -= start
        self._start = 0

    def _scan(self, final: bool) -> list[str]:
        out: list[str] = []
        while (segment := self._next_segment(final)) is not None:
            out.append(segment)
        return out

    def _consume(self, end: int) -> None:
        """Mark ``_buf[_start:end]`` as emitted, keeping line-start context."""
        buf, start = self._buf, self._start
        newline = buf.rfind("\n", start, end)
        if newline >= 0:
            self._line_blank = _blank(buf, newline + 1, end)
        else:
            self._line_blank = self._line_blank and _blank(buf, start, end)
        self._start = end
        self._pos = end

    def _next_segment(self, final: bool) -> str | None:
        """Emit and consume the next segment, or return None until more text arrives.

        All work is bounded by ``max_chars`` past the segment's start (searches stop at
        the limit, look-aheads at one past it), so a text of any length is segmented in
        linear time.
        """
        buf = self._buf
        lead = _skip_space(buf, self._start, len(buf))
        if lead > self._start:
            pos = max(lead, self._pos)
            self._consume(lead)
            self._pos = pos
        start = self._start
        limit = start + self.max_chars
        pos = max(self._pos, start)
        while (match := _CANDIDATE.search(buf, pos, limit + 1)) is not None:
            i = match.start()
            kind, end, resume = self._decide(buf, i, final, limit)
            if end > limit:
                break  # this boundary would make the segment too long
            if kind is _Kind.NEED:
                self._pos = i
                return None
            if kind is _Kind.NO:
                pos = resume
                continue
            segment = buf[start:end].rstrip()
            if kind is _Kind.HARD or len(segment) >= self.min_chars:
                self._consume(end)
                return segment
            pos = resume  # too short: merge with the next sentence
        if len(buf) > limit:
            return self._force_split()
        self._pos = pos
        return None

    def _decide(self, buf: str, i: int, final: bool, limit: int) -> tuple[_Kind, int, int]:
        """Classify the candidate at ``i``: (kind, segment end, where to scan on).

        Look-aheads stop at ``limit + 1``: a boundary past the limit is never taken.
        """
        n = len(buf)
        cap = min(n, limit + 1)
        start = self._start
        if buf[i] == "\n":
            if len(buf[start:i].rstrip()) >= self.min_chars:
                return _Kind.SOFT, i, i + 1
            j = i + 1
            while j < cap and buf[j].isspace():
                if buf[j] == "\n":
                    return _Kind.HARD, i, i + 1  # paragraph break
                j += 1
            if j == n and not final:
                return _Kind.NEED, i, i
            return _Kind.SOFT, i, i + 1

        j = i
        while j < cap and buf[j] in _TERMINATORS:
            j += 1
        k = j
        while k < cap and buf[k] in _CLOSERS:
            k += 1
        if k == n:
            return (_Kind.SOFT if final else _Kind.NEED), k, k
        if k > limit:
            return _Kind.NO, k, k  # the caller stops here: the segment would be too long
        run = buf[i:j]
        cjk = any(ch in _CJK_TERMINATORS for ch in run)
        if not buf[k].isspace():
            return (_Kind.SOFT if cjk else _Kind.NO), k, k

        m = _skip_space(buf, k, cap)
        # past the limit, a run of whitespace counts as the following text
        following: str | None = buf[m] if m < cap else " "
        if m == n:
            following = "" if final else None

        if any(ch in _QUOTES for ch in buf[j:k]):
            # '"Really?" she asked.' continues the sentence.
            if following is None:
                return _Kind.NEED, k, i
            if following.islower():
                return _Kind.NO, k, k
        if cjk or "!" in run or "?" in run:
            return _Kind.SOFT, k, k
        if len(run) > 1 or run == "…":
            # An ellipsis ends a sentence only before a capital letter.
            if following is None:
                return _Kind.NEED, k, i
            ends = following == "" or following.isupper()
            return (_Kind.SOFT if ends else _Kind.NO), k, k

        # A single period: abbreviation, initial, list marker or a sentence end.
        w = i
        while w > start and not buf[w - 1].isspace():
            w -= 1
        word = buf[w:i].lstrip(_OPENERS)
        lower = word.lower()
        if lower in self._abbreviations:
            return _Kind.NO, k, k
        if lower == "no" and self._abbreviations:
            # "No. 5" is an abbreviation, "No. I won't." a sentence.
            if following is None:
                return _Kind.NEED, k, i
            if following.isdigit():
                return _Kind.NO, k, k
            return _Kind.SOFT, k, k
        if _INITIALISM.fullmatch(word) or (
            len(word) == 1 and word.isalpha() and word.isupper() and word != "I"
        ):
            return _Kind.NO, k, k
        if word.isascii() and word.isdigit() and len(word) <= 3 and self._at_line_start(w):
            return _Kind.NO, k, k  # "1. First step"
        return _Kind.SOFT, k, k

    def _at_line_start(self, w: int) -> bool:
        buf, start = self._buf, self._start
        newline = buf.rfind("\n", start, w)
        if newline >= 0:
            return _blank(buf, newline + 1, w)
        return self._line_blank and _blank(buf, start, w)

    def _force_split(self) -> str:
        """Cut an over-long buffer at a clause mark, a space, or hard at ``max_chars``."""
        buf, start = self._buf, self._start
        lo, hi = start + self.min_chars, start + self.max_chars
        cut = hi
        for j in range(hi - 1, max(lo - 1, start) - 1, -1):
            c = buf[j]
            if (c in _CLAUSE and buf[j + 1].isspace()) or c in _CJK_CLAUSE:
                cut = j + 1
                break
        else:
            for j in range(hi, max(lo, start + 1) - 1, -1):
                if buf[j].isspace():
                    cut = j
                    break
        segment = buf[start:cut].rstrip()
        self._consume(cut)
        return segment


def _skip_space(text: str, start: int, end: int) -> int:
    """The index of the first non-space of ``text[start:end]`` (``end`` if none)."""
    match = _SPACE.match(text, start, end)
    return match.end() if match is not None else start


def _blank(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is only whitespace (without copying it)."""
    return _skip_space(text, start, end) >= end


async def segment_stream(
    tokens: AsyncIterable[str],
    *,
    min_chars: int = 20,
    max_chars: int = 400,
    language: str = "en",
) -> AsyncIterator[str]:
    """Yield the sentences of an async token stream as soon as each is complete.

    The caller owns ``tokens``: it is iterated, not closed, if the consumer stops early.
    """
    segmenter = SentenceSegmenter(min_chars=min_chars, max_chars=max_chars, language=language)
    async for token in tokens:
        for segment in segmenter.push(token):
            yield segment
    for segment in segmenter.finish():
        yield segment
