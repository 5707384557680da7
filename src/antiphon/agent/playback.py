"""Which text of a reply was heard, and when each word of it played.

A reply is spoken one sentence per synthesis stream, so the audio of each sentence is
known exactly: sentence ``k`` occupies ``[start_k, end_k)`` seconds of the reply's audio.
A sentence still being synthesised has no known end yet: its length is estimated from
the speaking rate of the sentences before it (or 15 characters a second).

Words: where the TTS sends word timings (``SynthesisStream.words``, kept by reference, so
timings that arrive after the sentence began are seen), word ``i`` of a sentence plays
at ``start_k + words[i].start``. Without timings, a sentence's words are placed in
proportion to their characters over its audio (``estimated``). Both serve two readers:

- :meth:`Playback.heard` (interruption: "only what was heard"): with timings, the
  sentence cut short keeps the words whose audio played to their end (word precision);
  without, the words in proportion to its characters, up to the last whole word.
- :class:`WordSync` emits :class:`~antiphon.agent.events.AgentWords` as each word starts
  to play, driven by the output track's playout position (``played``, the seconds of the
  reply handed to the transport at its real-time pace), never by when text was made.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from antiphon.agent.events import AgentWords
from antiphon.aio.clock import Clock
from antiphon.services.tts import WordTiming

__all__ = ["DEFAULT_RATE", "Playback", "Segment", "WordSync"]

#: Characters per second of speech, until a whole sentence has been measured.
DEFAULT_RATE = 15.0

_TOKEN = re.compile(r"\S+")


@dataclass(slots=True)
class Segment:
    text: str
    start: float
    end: float
    complete: bool = True
    words: list[WordTiming] | None = None
    """The TTS stream's word timings (sentence-relative), or None: it sends none."""

    @property
    def timed(self) -> bool:
        """Its words are placed by the provider's timings (not estimated)."""
        return bool(self.words) or (self.words is not None and not self.complete)


@dataclass
class Playback:
    """Sentences of one reply and where their audio lies in the reply's audio."""

    segments: list[Segment] = field(default_factory=list)
    written: float = 0.0
    """Seconds of the reply's audio written to the output so far."""
    on_change: Callable[[], None] | None = field(default=None, repr=False)
    """Called when a sentence begins, grows or ends (wakes a :class:`WordSync`)."""
    _spans: list[list[tuple[str, int, int]] | None] = field(
        default_factory=list, init=False, repr=False, compare=False
    )
    """Each sentence's words and where they lie in its text (found once, when first asked)."""

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def add(self, text: str, start: float, end: float) -> None:
        """Record that ``text`` was spoken by the audio ``[start, end)``."""
        self.segments.append(Segment(text, start, max(start, end)))
        self._changed()

    def begin(self, text: str, start: float, words: list[WordTiming] | None = None) -> None:
        """``text`` starts at ``start``; its audio grows with :meth:`grow`.

        ``words``: the synthesis stream's word timings (a live list), if it sends any.
        """
        self.segments.append(Segment(text, start, start, complete=False, words=words))
        self._changed()

    def grow(self, end: float) -> None:
        """The open sentence's audio now reaches ``end``."""
        if self.segments and not self.segments[-1].complete:
            self.segments[-1].end = max(self.segments[-1].start, end)
            self._changed()

    def finish(self) -> None:
        """The open sentence's audio is all written."""
        if self.segments:
            self.segments[-1].complete = True
            self._changed()

    def _rate(self) -> float:
        done = [s for s in self.segments if s.complete and s.end > s.start]
        seconds = sum(s.end - s.start for s in done)
        return sum(len(s.text) for s in done) / seconds if seconds else DEFAULT_RATE

    @property
    def text(self) -> str:
        """All the text written (spoken in full if nothing interrupts)."""
        return " ".join(s.text for s in self.segments if s.text)

    def _length(self, s: Segment) -> float:
        length = s.end - s.start
        if not s.complete:
            length = max(length, len(s.text) / self._rate())
        return length

    def heard(self, played: float) -> str:
        """The text heard once ``played`` seconds of the reply's audio have played."""
        out: list[str] = []
        for s in self.segments:
            if s.complete and played >= s.end:
                out.append(s.text)
                continue
            if s.words and played > s.start:
                n = sum(1 for w in s.words if s.start + w.end <= played)
                out.append(_first_words(s.text, n))
                break
            length = self._length(s)
            if played > s.start and length > 0:
                part = _cut(s.text, (played - s.start) / length)
                if part:
                    out.append(part)
            break
        return " ".join(t for t in out if t)

    def words(self, index: int) -> tuple[list[WordTiming], bool]:
        """Sentence ``index``'s words in reply time, and whether they are estimated.

        Estimated words are spread over the sentence's audio by characters (its length so
        far estimated while it is still being synthesised); timed words are the ones
        whose timings have arrived.
        """
        words, estimated, _ = self._follow(index, 0, math.inf)
        return words, estimated

    def _words_of(self, index: int) -> list[tuple[str, int, int]]:
        """Sentence ``index``'s words and their ``[start, end)`` in its text."""
        spans = self._spans
        if len(spans) < len(self.segments):
            spans.extend([None] * (len(self.segments) - len(spans)))
        found = spans[index]
        if found is None:
            text = self.segments[index].text
            found = spans[index] = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
        return found

    def _follow(
        self, index: int, first: int, played: float
    ) -> tuple[list[WordTiming], bool, float | None]:
        """What :meth:`WordSync.catch_up` reads of sentence ``index`` at ``played``: its
        words from number ``first`` on that have started (none while ``played`` is not
        positive), in reply time as :meth:`words` gives them; whether they are estimated;
        and the start of the word after those (None: no more are known yet).

        The same as filtering :meth:`words` from ``first`` on, without building every
        word of the sentence at each wake-up (a sentence's words came to O(words²)).
        """
        s = self.segments[index]
        start = s.start
        if s.timed:
            timed = s.words
            assert timed is not None
            due: list[WordTiming] = []
            if played > 0:
                due = [w.shifted(start) for w in timed[first:] if start + w.start <= played]
            after = first + len(due)
            return due, False, start + timed[after].start if after < len(timed) else None
        spans = self._words_of(index)
        length = self._length(s)
        n = len(s.text) or 1
        due = []
        # estimated starts grow with the characters: the words due are a prefix
        for i in range(first, len(spans)):
            word, a, b = spans[i]
            at = start + length * a / n
            if played <= 0 or at > played:
                return due, True, at
            due.append(WordTiming(word, at, start + length * b / n))
        return due, True, None


class WordSync:
    """Emits :class:`AgentWords` as the words of one reply start to play.

    ``position()`` is the seconds of the reply's audio played so far (the output track's
    playout position minus where the reply began). :meth:`run` wakes at the next word's
    start on ``clock`` (at least one ``tick``, the track's frame, apart; while no next
    word is known, at the playback's next change instead of on a timer), checks how far
    playback really got — a stalled or paused transport holds the words back — and
    emits every word whose start has played, one event per run of timed or estimated
    words. The reply's runner owns the task and cancels it when the reply ends; a last
    :meth:`catch_up` emits what played since the last wake-up.
    """

    def __init__(
        self,
        playback: Playback,
        *,
        position: Callable[[], float],
        clock: Clock,
        emit: Callable[[AgentWords], None],
        generation: int,
        tick: float = 0.02,
    ) -> None:
        self.playback = playback
        self._position = position
        self._clock = clock
        self._emit = emit
        self.generation = generation
        self.tick = tick
        self._segment = 0  # the sentence being followed
        self._word = 0  # words of it already emitted
        self._wake: asyncio.Future[None] | None = None  # run() waits for a change

    def catch_up(self) -> float | None:
        """Emit the words that have started playing; the reply time of the next word
        (None when not known yet)."""
        return self._catch_up(self._position())

    def _catch_up(self, played: float) -> float | None:
        playback = self.playback
        segments = playback.segments
        while self._segment < len(segments):
            due, estimated, upcoming = playback._follow(self._segment, self._word, played)
            if due:
                self._word += len(due)
                self._emit(AgentWords(tuple(due), played, estimated, self.generation))
            if upcoming is not None:
                return upcoming
            segment = segments[self._segment]
            if not segment.complete or self._segment + 1 >= len(segments):
                return None  # more words (or timings) of it may come
            self._segment += 1
            self._word = 0
        return None

    async def run(self) -> None:
        """Follow playback until cancelled: sleep until the next word's start (at least a
        ``tick``), or, while no next word is known, until the playback changes."""
        clock, loop = self._clock, asyncio.get_running_loop()
        self.playback.on_change = self._nudge
        try:
            while True:
                played = self._position()
                upcoming = self._catch_up(played)
                if upcoming is not None:
                    await clock.sleep_until(clock.now() + max(self.tick, upcoming - played))
                    continue
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
        finally:
            self.playback.on_change = None

    def _nudge(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)


def _first_words(text: str, n: int) -> str:
    """The first ``n`` words of ``text`` (all of it if it has no more)."""
    if n <= 0:
        return ""
    for i, m in enumerate(_TOKEN.finditer(text), 1):
        if i == n:
            return text[: m.end()]
    return text


def _cut(text: str, fraction: float) -> str:
    """The leading ``fraction`` of ``text`` by characters, ending at a whole word."""
    if fraction <= 0:
        return ""
    if fraction >= 1:
        return text
    n = int(len(text) * fraction)
    if n < len(text) and not text[n].isspace():
        n = text.rfind(" ", 0, n + 1)
        if n <= 0:
            return ""
    return text[:n].rstrip()
