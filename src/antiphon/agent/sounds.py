"""A thinking sound and a looped background bed, mixed into the agent's outbound audio.

::

    sounds = BackgroundAudio(
        ambient=Sound.from_wav("office.wav"), ambient_gain=0.08,   # or Sound.ambient_tone()
        thinking=Sound.thinking_tone(), thinking_delay=0.3,
    )
    sounds.attach(session)  # before the transport reads session.output

How it is built, and why:

- **Mixed at the reader, never queued.** :meth:`BackgroundAudio.attach` sets the
  session's :class:`~antiphon.audio.OutputTrack` to release a frame every 20 ms (silence
  when the agent is quiet) and installs a mixer that adds the bed and the cue to each
  frame as the transport takes it. Nothing of the sounds enters the track's queue, so an
  interruption still drops the agent's queued audio in O(1) on the next frame, and the
  sounds cannot delay a reply by a sample. The mixer is a few numpy operations on 320
  samples, on the transport's reading task; the input side (VAD, STT) is untouched.
- **The cue follows the session's events, and the audio itself.** It starts when the
  session enters ``THINKING`` or tools start running (``ToolsStarted``), after
  ``thinking_delay`` seconds of output audio time, and loops while the agent waits. It
  stops at once on the first frame that carries the reply's audio (``voiced``; the
  ``SPEAKING`` event may come a frame later) and on every frame where the session's VAD
  hears the user (it runs inline in ``push_audio``, so this is the user's speech as of
  this frame); it ends with the wait (the last ``ToolCalled``, a state other than
  ``THINKING``). While tools run, a filler line's frames mute it and its gaps do not.
- **The bed loops seamlessly** under everything at ``ambient_gain`` (linear, 0-1), from
  a WAV file of the user's (resampled once, at attach) or a generated tone; no asset is
  downloaded. The mix is clipped to int16.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import numpy.typing as npt

from antiphon.agent.events import AgentEvent, AgentState, StateChanged, ToolCalled, ToolsStarted
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter, to_mono
from antiphon.audio.track import OutputTrack
from antiphon.audio.wav import read_wav
from antiphon.errors import ConfigError

__all__ = ["BackgroundAudio", "Sound"]

DEFAULT_RATE = 16000


@dataclass(frozen=True, slots=True, eq=False)
class Sound:
    """A mono int16 clip at ``sample_rate`` (looped where it is used)."""

    pcm: npt.NDArray[np.int16]
    sample_rate: int

    def __post_init__(self) -> None:
        if self.pcm.dtype != np.int16 or self.pcm.ndim != 1 or not self.pcm.size:
            raise ConfigError("Sound.pcm must be a non-empty 1-D int16 array")
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise ConfigError(f"Sound.sample_rate must be a positive int, got {self.sample_rate!r}")

    @property
    def duration(self) -> float:
        return self.pcm.size / self.sample_rate

    @classmethod
    def from_wav(cls, path: str | Path | BinaryIO) -> Sound:
        """A 16-bit PCM WAV file (any rate; stereo is mixed down).

        Raises:
            ConfigError: not a 16-bit PCM WAV file, or an empty one.
        """
        frame = read_wav(path)
        if frame.channels != 1:
            frame = to_mono(frame)
        return cls(frame.as_array().copy(), frame.sample_rate)

    @classmethod
    def thinking_tone(cls, sample_rate: int = DEFAULT_RATE, *, period: float = 1.2) -> Sound:
        """A soft cue: two short, rounded blips (660 and 880 Hz), then a pause."""
        n = round(period * sample_rate)
        t = np.arange(n) / sample_rate
        out = np.zeros(n)
        for start, freq in ((0.0, 660.0), (0.16, 880.0)):
            length = 0.12
            inside = (t >= start) & (t < start + length)
            phase = (t[inside] - start) / length
            envelope = np.sin(np.pi * phase) ** 2  # raised cosine: no click
            out[inside] += envelope * np.sin(2 * np.pi * freq * (t[inside] - start))
        return cls(_pcm(0.3 * out), sample_rate)

    @classmethod
    def ambient_tone(cls, sample_rate: int = DEFAULT_RATE, *, period: float = 4.0) -> Sound:
        """A soft, slowly breathing low chord that loops without a seam.

        Every partial makes whole cycles in ``period`` seconds, so the end meets the start.
        """
        n = round(period * sample_rate)
        t = np.arange(n) / sample_rate
        out = np.zeros(n)
        for freq, level in ((110.0, 1.0), (165.0, 0.6), (220.0, 0.35)):
            cycles = max(1, round(freq * period))
            out += level * np.sin(2 * np.pi * cycles / period * t)
        swell = 0.75 + 0.25 * np.sin(2 * np.pi * t / period)
        return cls(_pcm(0.15 * out * swell / 1.95), sample_rate)

    def resampled(self, sample_rate: int) -> Sound:
        """This sound at ``sample_rate`` (streaming resampler, run once)."""
        if sample_rate == self.sample_rate:
            return self
        converter = AudioConverter(sample_rate, 1)
        frame = AudioFrame.from_array(self.pcm, self.sample_rate)
        parts = [converter.process(frame), converter.flush()]
        pcm = np.concatenate([p.as_array() for p in parts if p.samples_per_channel])
        return Sound(pcm.astype(np.int16), sample_rate)


def _pcm(x: npt.NDArray[np.float64]) -> npt.NDArray[np.int16]:
    return np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


def _gain(owner: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"BackgroundAudio.{owner} must be a number from 0 to 1, got {value!r}")
    return float(value)


class _Session(Protocol):
    """What :class:`BackgroundAudio` needs of a session (cascade or realtime)."""

    @property
    def output(self) -> OutputTrack: ...

    def on_event(self, fn: Callable[[AgentEvent], None]) -> Callable[[], None]: ...


class _Loop:
    """A sound scaled by its gain, read in consecutive slices that wrap around."""

    def __init__(self, sound: Sound, gain: float, frame: int) -> None:
        scaled = np.round(sound.pcm.astype(np.float64) * gain).astype(np.int32)
        self.length = scaled.size
        # one frame more than the loop: a slice never needs to wrap
        self._samples = np.resize(scaled, self.length + frame)
        self.position = 0

    def take(self, n: int) -> npt.NDArray[np.int32]:
        out = self._samples[self.position : self.position + n]
        self.position = (self.position + n) % self.length
        return out


class BackgroundAudio:
    """A thinking cue and an ambient bed for one session (see the module docstring).

    Args:
        ambient: the looped bed (None: none).
        ambient_gain: its level, linear from 0 to 1.
        thinking: the cue looped while the agent thinks (None: none).
        thinking_gain: its level, linear from 0 to 1.
        thinking_delay: seconds of thinking before the cue starts (a quick reply then
            comes with no cue at all).

    Raises:
        ConfigError: a gain out of 0-1, a negative delay, or a sound that is not a Sound.
    """

    def __init__(
        self,
        *,
        ambient: Sound | None = None,
        ambient_gain: float = 0.1,
        thinking: Sound | None = None,
        thinking_gain: float = 0.5,
        thinking_delay: float = 0.0,
    ) -> None:
        for name, sound in (("ambient", ambient), ("thinking", thinking)):
            if sound is not None and not isinstance(sound, Sound):
                raise ConfigError(f"BackgroundAudio {name}= must be a Sound or None")
        if (
            isinstance(thinking_delay, bool)
            or not isinstance(thinking_delay, int | float)
            or thinking_delay < 0
        ):
            raise ConfigError(
                f"BackgroundAudio.thinking_delay must be >= 0, got {thinking_delay!r}"
            )
        self.ambient, self.thinking = ambient, thinking
        self.ambient_gain = _gain("ambient_gain", ambient_gain)
        self.thinking_gain = _gain("thinking_gain", thinking_gain)
        self.thinking_delay = float(thinking_delay)
        self._track: OutputTrack | None = None
        self._listening: Callable[[], bool] = lambda: False
        self._remove: Callable[[], None] | None = None
        self._bed: _Loop | None = None
        self._cue: _Loop | None = None
        self._thinking = False  # the session thinks and its reply has not sounded yet
        self._tools = 0  # tool calls running (ToolsStarted, until their ToolCalled)
        self._thought = 0  # samples of output since thinking began
        self._delay = 0  # thinking_delay in samples
        self._was_filling = False

    def attach(self, session: _Session) -> None:
        """Mix into ``session.output`` from now on (attach before the transport reads it).

        Raises:
            ConfigError: already attached, the track has another mixer, or it is not mono.
        """
        if self._track is not None:
            raise ConfigError("this BackgroundAudio is already attached to a session")
        track = session.output
        if track.mixer is not None:
            raise ConfigError("the session's output track already has a mixer")
        if track.channels != 1:
            raise ConfigError(f"BackgroundAudio mixes into mono output, not {track.channels} ch")
        rate = track.sample_rate
        frame = round(track.frame_duration * rate)
        if self.ambient is not None:
            self._bed = _Loop(self.ambient.resampled(rate), self.ambient_gain, frame)
        if self.thinking is not None:
            self._cue = _Loop(self.thinking.resampled(rate), self.thinking_gain, frame)
        self._delay = round(self.thinking_delay * rate)
        vad = getattr(session, "vad", None)
        if vad is not None:
            self._listening = lambda: bool(vad.speaking)
        self._track = track
        self._was_filling = track.fill_silence
        track.fill_silence = True  # a frame every tick: the bed and the cue play in silence
        track.mixer = self._mix
        self._remove = session.on_event(self._on_event)

    def detach(self) -> None:
        """Stop mixing (the track goes back to how it was)."""
        if self._remove is not None:
            self._remove()
        self._remove = None
        track, self._track = self._track, None
        if track is not None:
            track.mixer = None
            track.fill_silence = self._was_filling
        self._thinking = False
        self._tools = 0

    @property
    def cue_playing(self) -> bool:
        """Whether the thinking cue sounds in the next frame (if the user stays silent)."""
        waiting = self._thinking or self._tools > 0
        return self._cue is not None and waiting and self._thought >= self._delay

    def _begin(self) -> None:
        """A new spell of waiting (none was under way): the cue starts afresh."""
        if not self._thinking and not self._tools and self._cue is not None:
            self._cue.position = 0
            self._thought = 0

    def _on_event(self, event: AgentEvent) -> None:
        match event:
            case StateChanged(new=AgentState.THINKING):
                self._begin()
                self._thinking = True
            case StateChanged(new=new):
                self._thinking = False
                if new is not AgentState.SPEAKING:  # interrupted, dropped or done
                    self._tools = 0
            case ToolsStarted(names=names):
                self._begin()
                self._tools = len(names)
            case ToolCalled():
                self._tools = max(0, self._tools - 1)
            case _:
                pass

    def _mix(self, frame: AudioFrame, voiced: bool) -> AudioFrame:
        n = frame.samples_per_channel
        if voiced:
            self._thinking = False  # the reply sounds: the cue ends on this very frame
        cue: npt.NDArray[np.int32] | None = None
        if (self._thinking or self._tools) and self._cue is not None:
            # while tools run, the filler line's frames mute the cue, its gaps do not
            if not voiced and self._thought >= self._delay and not self._listening():
                cue = self._cue.take(n)
            self._thought += n
        if self._bed is None and cue is None:
            return frame
        mix = frame.as_array().astype(np.int32)
        if self._bed is not None:
            mix += self._bed.take(n)
        if cue is not None:
            mix += cue
        out = np.clip(mix, -32768, 32767).astype(np.int16)
        return AudioFrame.trusted(out.tobytes(), frame.sample_rate, 1, frame.generation)
