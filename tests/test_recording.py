"""CallRecorder: the two sides of a call in one stereo WAV, aligned by their timestamps."""

from __future__ import annotations

import threading
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from antiphon.aio.clock import VirtualClock
from antiphon.audio.frame import AudioFrame
from antiphon.audio.recording import CallRecorder
from antiphon.errors import ConfigError, StreamClosedError
from antiphon.testing.poll import until


def tone(hz: float, rate: int, seconds: float, channels: int = 1) -> AudioFrame:
    t = np.arange(round(rate * seconds)) / rate
    mono = (np.sin(2 * np.pi * hz * t) * 10_000).astype(np.int16)
    return AudioFrame.from_array(np.repeat(mono[:, None], channels, axis=1), rate)


def read(path: Path) -> tuple[int, npt.NDArray[np.int16]]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (2, 2)
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
        return w.getframerate(), data


def loud(x: npt.NDArray[np.int16], rate: int, start: float, end: float) -> float:
    part = x[round(start * rate) : round(end * rate)].astype(np.float64)
    return float(np.sqrt((part**2).mean())) if len(part) else 0.0


def recorder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("recorder-engine")]


async def test_user_left_agent_right_aligned_by_time(tmp_path: Path) -> None:
    clock = VirtualClock()
    rec = CallRecorder(tmp_path / "call.wav", clock=clock, max_lag=0.5)
    # the user speaks 0-1 s (8 kHz phone audio, 20 ms frames); the agent answers
    # 1.5-2.5 s (24 kHz stereo, 40 ms frames, given their play times explicitly)
    for frame in tone(300, 8000, 1.0).split(0.02):
        rec.user(frame)
        await clock.advance(0.02)
    for i, frame in enumerate(tone(1000, 24000, 1.0, channels=2).split(0.04)):
        rec.agent(frame, at=1.5 + 0.04 * i)
    path = await rec.aclose()
    rate, data = read(path)
    assert rate == 16_000
    assert len(data) / rate == pytest.approx(2.5, abs=0.02)
    user, agent = data[:, 0], data[:, 1]
    assert loud(user, rate, 0.05, 0.95) > 5000 and loud(user, rate, 1.05, 2.5) < 50
    assert loud(agent, rate, 0.0, 1.45) < 50 and loud(agent, rate, 1.55, 2.45) > 5000
    # the agent's first sound is where it was played: 1.5 s (within the resampler's delay)
    onset = int(np.argmax(np.abs(agent) > 1000)) / rate
    assert onset == pytest.approx(1.5, abs=0.01)
    assert rec.dropped_seconds == 0
    assert recorder_threads() == []


async def test_jitter_is_seamless_a_real_gap_is_silence_and_a_burst_is_kept(
    tmp_path: Path,
) -> None:
    rec = CallRecorder(tmp_path / "j.wav", clock=VirtualClock(), jitter=0.1)
    frames = tone(200, 16000, 0.2).split(0.02)
    for i, frame in enumerate(frames):  # each 5 ms late: seamless, no inserted silence
        rec.user(frame, at=0.025 * i)
    rec.user(tone(200, 16000, 0.1), at=1.0)  # after a 0.8 s pause
    rec.user(tone(200, 16000, 0.1), at=1.0)  # a burst: appended, never overwritten
    _, data = read(await rec.aclose())
    user = data[:, 0].astype(np.int32)
    nonzero = np.flatnonzero(np.abs(user) > 0)
    assert nonzero[0] < 10 and len(data) == 16_000 + 3_200
    first = user[:3_200]
    assert not np.any(np.convolve(first == 0, np.ones(8), "valid") == 8)  # no hole
    assert np.all(user[3_300:15_900] == 0)  # the pause


async def test_a_silent_side_does_not_hold_the_other_in_memory(tmp_path: Path) -> None:
    clock = VirtualClock()
    rec = CallRecorder(tmp_path / "m.wav", clock=clock, max_lag=1.0)
    for frame in tone(300, 16000, 5.0).split(0.02):  # the agent never speaks
        rec.user(frame)
        await clock.advance(0.02)
    pending = sum(len(p) for ch in rec._channels for p in ch.pending)
    assert pending <= 1.2 * 16_000 * 2  # about max_lag of each side, not 5 s
    await rec.aclose()
    await rec.aclose()  # idempotent
    with pytest.raises(StreamClosedError):
        rec.user(tone(300, 16000, 0.02))


async def test_a_call_without_audio_gives_an_empty_valid_file(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path / "empty.wav", clock=VirtualClock())
    rate, data = read(await rec.aclose())
    assert rate == 16_000 and len(data) == 0
    assert recorder_threads() == []


async def test_an_unwritable_file_is_reported_at_close(tmp_path: Path) -> None:
    target = tmp_path / "dir.wav"
    target.mkdir()  # a directory where the file should be
    rec = CallRecorder(target, clock=VirtualClock())
    rec.user(tone(300, 16000, 0.5))
    with pytest.raises(OSError):
        await rec.aclose()
    assert recorder_threads() == []


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder"):
        CallRecorder(tmp_path / "missing" / "x.wav")
    with pytest.raises(ConfigError, match="sample_rate"):
        CallRecorder(tmp_path / "x.wav", sample_rate=0)
    with pytest.raises(ConfigError, match="max_lag"):
        CallRecorder(tmp_path / "x.wav", max_lag=0)


async def test_the_file_is_a_valid_wav_of_the_call_so_far_before_any_close(
    tmp_path: Path,
) -> None:
    """A process that dies mid-call leaves a readable file: each block written patches
    the WAV header's sizes, so the file holds the call up to its last block."""
    clock = VirtualClock()
    path = tmp_path / "live.wav"
    rec = CallRecorder(path, clock=clock, max_lag=0.5)
    for user, agent in zip(
        tone(300, 8000, 2.0).split(0.02), tone(1000, 16000, 2.0).split(0.02), strict=True
    ):
        rec.user(user)
        rec.agent(agent)
        await clock.advance(0.02)

    def seconds_on_disk() -> float:
        try:
            rate, data = read(path)
        except (OSError, EOFError, wave.Error):
            return 0.0
        return len(data) / rate

    await until(lambda: seconds_on_disk() >= 1.8, 10)  # all but the last block(s)
    rate, data = read(path)  # not closed: still a valid WAV
    assert loud(data[:, 0], rate, 0.05, 1.7) > 5000 and loud(data[:, 1], rate, 0.05, 1.7) > 5000
    await rec.aclose()
    rate, data = read(path)
    assert len(data) / rate == pytest.approx(2.0, abs=0.02)
