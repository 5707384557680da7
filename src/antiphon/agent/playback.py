"""Which text of a reply was heard: sentences aligned to the audio written for them.

A reply is spoken one sentence per synthesis stream, so the audio of each sentence is
known exactly: sentence ``k`` occupies ``[start_k, end_k)`` seconds of the reply's audio.
When the user interrupts, the seconds played so far give the sentences heard whole, and
the words of the sentence cut short are kept in proportion to its characters, up to the
last whole word. A sentence still being synthesised has no known end yet: its length is
estimated from the speaking rate of the sentences before it (or 15 characters a second).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Characters per second of speech, until a whole sentence has been measured.
DEFAULT_RATE = 15.0


@dataclass(slots=True)
class Segment:
    text: str
    start: float
    end: float
    complete: bool = True


@dataclass
class Playback:
    """Sentences of one reply and where their audio lies in the reply's audio."""

    segments: list[Segment] = field(default_factory=list)
    written: float = 0.0
    """Seconds of the reply's audio written to the output so far."""

    def add(self, text: str, start: float, end: float) -> None:
        """Record that ``text`` was spoken by the audio ``[start, end)``."""
        self.segments.append(Segment(text, start, max(start, end)))

    def begin(self, text: str, start: float) -> None:
        """``text`` starts at ``start``; its audio grows with :meth:`grow`."""
        self.segments.append(Segment(text, start, start, complete=False))

    def grow(self, end: float) -> None:
        """The open sentence's audio now reaches ``end``."""
        if self.segments and not self.segments[-1].complete:
            self.segments[-1].end = max(self.segments[-1].start, end)

    def finish(self) -> None:
        """The open sentence's audio is all written."""
        if self.segments:
            self.segments[-1].complete = True

    def _rate(self) -> float:
        done = [s for s in self.segments if s.complete and s.end > s.start]
        seconds = sum(s.end - s.start for s in done)
        return sum(len(s.text) for s in done) / seconds if seconds else DEFAULT_RATE

    @property
    def text(self) -> str:
        """All the text written (spoken in full if nothing interrupts)."""
        return " ".join(s.text for s in self.segments if s.text)

    def heard(self, played: float) -> str:
        """The text heard once ``played`` seconds of the reply's audio have played."""
        out: list[str] = []
        for s in self.segments:
            if s.complete and played >= s.end:
                out.append(s.text)
                continue
            length = s.end - s.start
            if not s.complete:
                length = max(length, len(s.text) / self._rate())
            if played > s.start and length > 0:
                part = _cut(s.text, (played - s.start) / length)
                if part:
                    out.append(part)
            break
        return " ".join(t for t in out if t)


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
