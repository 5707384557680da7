"""Speech-only audio: :class:`SpeechGate` passes a stream's audio on only while its VAD
hears speech.

It holds no model and decides nothing: it is told, frame by frame, what the stream's
:class:`~antiphon.services.vad.VAD` says (``speaking``), and keeps a short ring of the
silence before so the first syllable, heard before the VAD could decide, is not lost. It
stands apart from the VAD contract because only an agent that feeds an in-process
recogniser uses it. Import it from :mod:`antiphon.services.vad`.
"""

from __future__ import annotations

from collections import deque

from antiphon.audio.frame import AudioFrame

__all__ = ["SpeechGate"]


class SpeechGate:
    """Passes audio on only while the user speaks, plus ``preroll`` seconds before.

    ``feed(frame, speaking)`` returns the frames to pass: while ``speaking`` is False
    (the VAD hears silence) frames are held in a ring of the last ``preroll`` seconds;
    when it turns True the ring is released first, then every frame passes. The ring
    covers what the VAD needs to decide speech began (its minimum duration, its padding,
    and the lag of a VAD run on a worker). Disabled (``enabled=False``), everything passes.
    An agent uses it to feed an in-process recogniser only speech: its cost is CPU per
    second of audio, and a phone line streams silence without pause.
    """

    def __init__(self, *, preroll: float = 0.6, enabled: bool = True) -> None:
        self.enabled = enabled
        self.preroll = preroll
        self._ring: deque[AudioFrame] = deque()
        self._held = 0.0

    def feed(self, frame: AudioFrame, speaking: bool) -> list[AudioFrame]:
        if not self.enabled:
            return [frame]
        if speaking:
            out = [*self._ring, frame]
            self._ring.clear()
            self._held = 0.0
            return out
        self._ring.append(frame)
        self._held += frame.duration
        while self._ring and self._held - self._ring[0].duration >= self.preroll:
            self._held -= self._ring.popleft().duration
        return []
