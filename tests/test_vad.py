"""The VAD contract's state machine (scripted probabilities, checked against an independent
model), then Silero and WebRTC on tones, noise and speech made by the offline espeak TTS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError
from antiphon.services.vad import VAD, SpeechEnd, SpeechStart, VADEvent, VADOptions, VADState

RATE = 16000
W = 160  # the scripted model's window: 10 ms
WD = W / RATE
LEVELS = 1000  # a window's constant sample value is round(p * LEVELS)


def t(windows: int) -> float:
    """The time of a window boundary, computed as the VAD does (exactly)."""
    return windows * W / RATE


class ScriptedVAD(VAD):
    """The probability of a window is written in its samples: ``p = mean(|x|) / 1000``."""

    name = "scripted"
    sample_rate: ClassVar[int] = RATE
    window: ClassVar[int] = W

    def __init__(self, options: VADOptions | None = None) -> None:
        super().__init__(options)
        self.resets = 0

    def _probability(self, window: npt.NDArray[np.int16]) -> float:
        return float(np.abs(window.astype(np.float64)).mean()) / LEVELS

    def _reset_model(self) -> None:
        self.resets += 1


class EnergyVAD(VAD):
    """Probability 1 for a window whose RMS is over 1000, else 0: exact for tones."""

    name = "energy"
    sample_rate: ClassVar[int] = RATE
    window: ClassVar[int] = W

    def _probability(self, window: npt.NDArray[np.int16]) -> float:
        rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))
        return 1.0 if rms > 1000 else 0.0


def script(probs: list[float], tail: int = 0) -> npt.NDArray[np.int16]:
    """Audio whose windows have probabilities ``probs`` (+ ``tail`` samples of silence)."""
    levels = np.repeat(np.rint(np.asarray(probs, dtype=np.float64) * LEVELS), W)
    return np.concatenate([levels, np.zeros(tail)]).astype(np.int16)


def tone(seconds: float, rate: int = RATE, freq: float = 440.0) -> npt.NDArray[np.int16]:
    t = np.arange(round(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def silence(seconds: float, rate: int = RATE) -> npt.NDArray[np.int16]:
    return np.zeros(round(seconds * rate), dtype=np.int16)


def cut(samples: npt.NDArray[np.int16], sizes: list[int]) -> Iterator[npt.NDArray[np.int16]]:
    """``samples`` in chunks of the given sizes (cycled), the last one shorter."""
    i, k = 0, 0
    while i < samples.shape[0]:
        n = sizes[k % len(sizes)]
        yield samples[i : i + n]
        i, k = i + n, k + 1


def run(
    vad: VAD,
    samples: npt.NDArray[np.int16],
    rate: int = RATE,
    chunk: float = 0.02,
    *,
    flush: bool = True,
) -> list[VADEvent]:
    events: list[VADEvent] = []
    for f in AudioFrame.from_array(samples, rate).split(chunk):
        events += vad.process(f)
    return events + (vad.flush() if flush else [])


def kinds(events: list[VADEvent]) -> list[type]:
    return [type(e) for e in events]


def opts(
    speech: float = 0.05, silence_: float = 0.3, padding: float = 0.0, **kw: float
) -> VADOptions:
    return VADOptions(
        min_speech_duration=speech, min_silence_duration=silence_, padding=padding, **kw
    )


# ----------------------------------------------------------------- the state machine


def test_events_are_exact_to_the_window() -> None:
    vad = ScriptedVAD(opts(speech=0.05, silence_=0.3))
    events = run(vad, script([0.0] * 47 + [1.0] * 33 + [0.0] * 61))
    assert events == [
        SpeechStart(time=t(47), at=t(52)),  # decided after 5 windows of speech
        SpeechEnd(time=t(80), start=t(47), at=t(110)),  # after 30 of silence
    ]
    assert vad.position == pytest.approx(t(141))


def test_minimum_durations_count_whole_windows() -> None:
    """0.05 s at 10 ms windows is 5 windows wherever the run begins (no float drift)."""
    for lead in range(0, 40, 3):
        vad = ScriptedVAD(opts(speech=0.05, silence_=0.03))
        four = run(vad, script([0.0] * lead + [1.0] * 4 + [0.0] * 10))
        assert four == [], lead
        vad.reset()
        five = run(vad, script([0.0] * lead + [1.0] * 5 + [0.0] * 10))
        assert five == [
            SpeechStart(time=t(lead), at=t(lead + 5)),
            SpeechEnd(time=t(lead + 5), start=t(lead), at=t(lead + 8)),
        ], lead
    # a duration between windows rounds up; zero means one window
    vad = ScriptedVAD(opts(speech=0.041, silence_=0.0))
    assert run(vad, script([1.0] * 4 + [0.0] * 2)) == []
    vad = ScriptedVAD(opts(speech=0.0, silence_=0.0))
    assert run(vad, script([0.0, 1.0, 0.0, 0.0])) == [
        SpeechStart(time=WD, at=t(2)),
        SpeechEnd(time=t(2), start=WD, at=t(3)),
    ]


def test_short_blip_is_not_speech_and_short_gap_does_not_end_it() -> None:
    vad = ScriptedVAD(opts(speech=0.1, silence_=0.4))
    probs = [0.0] * 50 + [1.0] * 5 + [0.0] * 50 + [1.0] * 60 + [0.0] * 20 + [1.0] * 60
    events = run(vad, script(probs + [0.0] * 100))
    assert events == [
        SpeechStart(time=t(105), at=t(115)),
        SpeechEnd(time=t(245), start=t(105), at=t(285)),
    ]


def test_hysteresis_between_the_thresholds() -> None:
    # activation 0.5, deactivation 0.35 by default: 0.4 neither starts nor breaks a run
    vad = ScriptedVAD(opts(speech=0.05, silence_=0.05))
    assert vad.options.off_threshold == pytest.approx(0.35)
    assert run(vad, script([0.4] * 50)) == []  # in between: never starts speech
    vad.reset()
    # a candidate run that wavers to 0.4 goes on; below 0.35 it breaks
    events = run(vad, script([0.6, 0.4, 0.4, 0.4, 0.4] + [0.0] * 10))
    assert kinds(events) == [SpeechStart, SpeechEnd] and events[0].time == 0.0
    vad.reset()
    assert run(vad, script([0.6, 0.4, 0.3, 0.6, 0.4, 0.4] + [0.0] * 10)) == []
    vad.reset()
    # in speech, a silence run goes on through 0.4 and is broken only at 0.5
    probs = [1.0] * 10 + [0.1] + [0.4] * 5 + [1.0] * 10 + [0.1, 0.4, 0.4, 0.5] + [1.0] * 10
    events = run(vad, script(probs + [0.0] * 10))
    assert events == [
        SpeechStart(time=0.0, at=t(5)),
        SpeechEnd(time=t(10), start=0.0, at=t(15)),
        SpeechStart(time=t(16), at=t(21)),
        SpeechEnd(time=t(40), start=t(16), at=t(45)),
    ]


def test_explicit_thresholds() -> None:
    strict = VADOptions(
        activation_threshold=0.9,
        deactivation_threshold=0.8,
        min_speech_duration=0.02,
        min_silence_duration=0.02,
        padding=0.0,
    )
    probs = [0.85] * 10 + [0.95] * 5 + [0.85] * 5 + [0.7] * 5
    assert run(ScriptedVAD(strict), script(probs)) == [
        SpeechStart(time=t(10), at=t(12)),
        SpeechEnd(time=t(20), start=t(10), at=t(22)),
    ]
    # a low activation threshold hears the same quiet windows as speech
    low = VADOptions(activation_threshold=0.2, min_speech_duration=0.02, padding=0.0)
    assert kinds(run(ScriptedVAD(low), script([0.25] * 10))) == [SpeechStart, SpeechEnd]


def test_padding_widens_and_never_overlaps_or_passes_the_audio() -> None:
    vad = ScriptedVAD(opts(speech=0.05, silence_=0.3, padding=0.2))
    probs = [0.0] * 10 + [1.0] * 50 + [0.0] * 35 + [1.0] * 50 + [0.0] * 100
    s1, e1, s2, e2 = run(vad, script(probs))
    assert s1 == SpeechStart(time=0.0, at=t(15))  # 0.1 - 0.2 is clamped at 0
    assert e1 == SpeechEnd(time=t(80), start=0.0, at=t(90))  # 0.6 + 0.2
    assert s2 == SpeechStart(time=t(80), at=t(100))  # 0.95 - 0.2 would overlap e1
    assert e2 == SpeechEnd(time=t(165), start=t(80), at=t(175))
    # padding longer than the silence seen is cut at the audio seen
    vad = ScriptedVAD(opts(speech=0.05, silence_=0.05, padding=0.5))
    events = run(vad, script([1.0] * 20 + [0.0] * 5))
    assert events[-1] == SpeechEnd(time=t(25), start=0.0, at=t(25))


def test_flush_closes_open_speech_at_the_real_end_of_the_audio() -> None:
    vad = ScriptedVAD(opts())
    # 20.5 windows of speech: the partial window is analysed, padded, but not counted
    events = run(vad, script([0.0] * 10 + [1.0] * 10, tail=0)[:-80], flush=False)
    assert kinds(events) == [SpeechStart] and vad.speaking
    tail = vad.flush()
    end = (20 * W - 80) / RATE
    assert tail == [SpeechEnd(time=end, start=t(10), at=end)]
    assert not vad.speaking and vad.state is VADState.SILENCE
    assert vad.position == pytest.approx(end)
    # flushing again is harmless; time runs on exactly from the real end
    assert vad.flush() == []
    more = run(vad, script([0.0] * 5 + [1.0] * 10))
    assert more[0] == SpeechStart(time=(25 * W - 80) / RATE, at=(30 * W - 80) / RATE)


def test_flush_in_a_silence_run_ends_where_the_silence_began() -> None:
    vad = ScriptedVAD(opts(speech=0.05, silence_=0.5, padding=0.05))
    events = run(vad, script([1.0] * 20 + [0.0] * 20))
    assert events[-1] == SpeechEnd(time=t(25), start=0.0, at=t(40))


def test_reset_restarts_time_and_the_model() -> None:
    vad = ScriptedVAD(opts())
    run(vad, script([1.0] * 30), flush=False)
    assert vad.speaking and vad.position > 0
    vad.reset()
    assert vad.resets == 1 and not vad.speaking and vad.position == 0.0
    assert vad.probability == 0.0
    # nothing of the old speech leaks into the new audio: a fresh start, at time 0 + 5 w
    assert run(vad, script([0.0] * 5 + [1.0] * 10 + [0.0] * 40))[0] == SpeechStart(
        time=t(5), at=t(10)
    )


def reference(probs: list[float], o: VADOptions) -> list[VADEvent]:
    """An independent model of the documented rules, on whole windows (audio ends at a
    window boundary)."""
    need_speech = max(1, round(o.min_speech_duration / WD + 0.4999999))
    need_silence = max(1, round(o.min_silence_duration / WD + 0.4999999))
    pad = round(o.padding / WD)
    on, off = o.activation_threshold, o.off_threshold
    out: list[VADEvent] = []
    speaking, run_start, last_end, start = False, None, 0, 0
    for i, p in enumerate(probs):
        if not speaking:
            if run_start is None and p >= on:
                run_start = i
            elif run_start is not None and p < off:
                run_start = None
            if run_start is not None and i + 1 - run_start >= need_speech:
                start = max(0, last_end, run_start - pad)
                out.append(SpeechStart(time=start * WD, at=t(i + 1)))
                speaking, run_start = True, None
        else:
            if run_start is None and p < off:
                run_start = i
            elif run_start is not None and p >= on:
                run_start = None
            if run_start is not None and i + 1 - run_start >= need_silence:
                last_end = min(i + 1, run_start + pad)
                out.append(SpeechEnd(time=last_end * WD, start=start * WD, at=t(i + 1)))
                speaking, run_start = False, None
    if speaking:
        n = len(probs)
        last_end = n if run_start is None else min(n, run_start + pad)
        out.append(SpeechEnd(time=last_end * WD, start=start * WD, at=n * WD))
    return out


def same(a: list[VADEvent], b: list[VADEvent]) -> bool:
    if kinds(a) != kinds(b):
        return False
    fields = ("time", "at", "start")
    return all(
        getattr(x, f) == pytest.approx(getattr(y, f), abs=1e-9)
        for x, y in zip(a, b, strict=True)
        for f in fields
        if hasattr(x, f)
    )


@settings(max_examples=150, deadline=None)
@given(
    probs=st.lists(st.sampled_from([0.0, 0.2, 0.4, 0.5, 0.7, 1.0]), max_size=300),
    speech=st.integers(0, 8),
    silence_=st.integers(0, 12),
    padding=st.integers(0, 10),
    on=st.sampled_from([0.3, 0.5, 0.7]),
    sizes=st.lists(st.integers(1, 1000), min_size=1, max_size=6),
)
def test_events_follow_the_rules_whatever_the_chunking(
    probs: list[float], speech: int, silence_: int, padding: int, on: float, sizes: list[int]
) -> None:
    o = VADOptions(
        activation_threshold=on,
        min_speech_duration=speech * WD,
        min_silence_duration=silence_ * WD,
        padding=padding * WD,
    )
    audio = script(probs)
    vad = ScriptedVAD(o)
    events: list[VADEvent] = []
    for part in cut(audio, sizes):
        events += vad.process(AudioFrame.from_array(part, RATE))
    events += vad.flush()
    assert same(events, reference(probs, o))
    # and the invariants, stated directly
    assert kinds(events) == [SpeechStart, SpeechEnd] * (len(events) // 2)
    times = [e.time for e in events]
    assert times == sorted(times)
    ats = [e.at for e in events]
    assert ats == sorted(ats)
    assert all(e.time <= e.at + 1e-9 for e in events)
    assert all(e.at <= t(len(probs)) + 1e-9 for e in events)
    # the same audio in 20 ms frames gives the same events
    assert same(run(ScriptedVAD(o), audio), events)


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (24000, 1), (48000, 1), (48000, 2)])
def test_any_rate_and_channels_give_the_same_events(rate: int, channels: int) -> None:
    ref = run(EnergyVAD(opts()), np.concatenate([silence(0.7), tone(0.6), silence(0.9)]))
    assert kinds(ref) == [SpeechStart, SpeechEnd]
    mono = np.concatenate([silence(0.7, rate), tone(0.6, rate), silence(0.9, rate)])
    samples = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    for chunk in (0.02, 0.033):
        events = run(EnergyVAD(opts()), samples, rate, chunk)
        assert kinds(events) == kinds(ref)
        for a, b in zip(events, ref, strict=True):
            assert a.time == pytest.approx(b.time, abs=t(2))


BAD_OPTIONS: list[tuple[dict[str, object], str]] = [
    ({"activation_threshold": 0.0}, "activation_threshold must be a number in \\(0, 1\\]"),
    ({"activation_threshold": 1.5}, "activation_threshold"),
    ({"activation_threshold": float("nan")}, "activation_threshold"),
    ({"activation_threshold": "0.5"}, "activation_threshold"),
    ({"deactivation_threshold": 0.7}, "deactivation_threshold must be a number in \\[0, activ"),
    ({"deactivation_threshold": -0.1}, "deactivation_threshold"),
    ({"min_silence_duration": -1}, "min_silence_duration must be a finite number"),
    ({"min_speech_duration": float("nan")}, "min_speech_duration"),
    ({"min_speech_duration": float("inf")}, "min_speech_duration"),
    ({"padding": True}, "padding"),
    ({"padding": "0.1"}, "padding"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_OPTIONS)
def test_bad_options_are_refused_with_what_to_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VADOptions(**kwargs)  # type: ignore[arg-type]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="AudioFrame"):
        ScriptedVAD().process(b"\x00\x00")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="VADOptions"):
        ScriptedVAD({"padding": 0.1})  # type: ignore[arg-type]


# ----------------------------------------------------------------- real models


PLUGINS = ["silero", "webrtc"]


def make(plugin: str, options: VADOptions) -> VAD:
    from antiphon.plugins.silero import SileroVAD
    from antiphon.plugins.webrtc import WebRtcVAD

    return SileroVAD(options) if plugin == "silero" else WebRtcVAD(options)


def hangover(vad: VAD) -> float:
    """How late the model itself may notice the end of speech."""
    from antiphon.plugins.webrtc import WebRtcVAD

    return vad.hangover if isinstance(vad, WebRtcVAD) else 0.0


@cache
def espeak_at(text: str, rate: int) -> tuple[npt.NDArray[np.int16], float, float]:
    """``text`` spoken by espeak at ``rate``, and where its sound starts and ends (s)."""
    from antiphon.plugins.espeak.engine import sample_rate, synthesize_pcm

    native = sample_rate()
    pcm = np.frombuffer(synthesize_pcm(text), dtype=np.int16)
    loud = np.flatnonzero(np.abs(pcm) > 300)
    first, last = loud[0] / native, loud[-1] / native
    if rate == native:
        return pcm, first, last
    conv = AudioConverter(rate, 1)
    frame = AudioFrame.from_array(pcm, native)
    out = np.frombuffer(conv.process(frame).data + conv.flush().data, dtype=np.int16)
    return out, first, last


UTTERANCES = ["Hello there, how are you today?", "I would like a cup of coffee please."]


def conversation(
    rate: int, gap: float = 1.0, texts: tuple[str, ...] = tuple(UTTERANCES)
) -> tuple[npt.NDArray[np.int16], list[tuple[float, float]]]:
    """Utterances with ``gap`` seconds of silence around each, and their true extents."""
    parts: list[npt.NDArray[np.int16]] = [silence(gap, rate)]
    truth: list[tuple[float, float]] = []
    pos = parts[0].size / rate
    for text in texts:
        pcm, first, last = espeak_at(text, rate)
        truth.append((pos + first, pos + last))
        parts += [pcm, silence(gap, rate)]
        pos += (pcm.size + parts[-1].size) / rate
    return np.concatenate(parts), truth


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 1), (24000, 1), (48000, 2)])
def test_speech_segments_match_the_audio(plugin: str, rate: int, channels: int) -> None:
    mono, truth = conversation(rate)
    samples = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    vad = make(plugin, opts(speech=0.1, silence_=0.5))
    events = run(vad, samples, rate)
    assert kinds(events) == [SpeechStart, SpeechEnd] * 2, events
    tol = 2 * vad.window_duration
    # measured: Silero hears the end of telephone-band (8 kHz) speech up to 2.6 windows late
    end_tol = 3 * vad.window_duration if (plugin, rate) == ("silero", 8000) else tol
    late = hangover(vad)
    for (start, end), ev_start, ev_end in zip(truth, events[::2], events[1::2], strict=True):
        assert ev_start.time == pytest.approx(start, abs=tol)
        assert end - tol <= ev_end.time <= end + end_tol + late
        assert ev_start.at >= ev_start.time + 0.1 - 1e-9  # decided after min speech
        assert ev_end.at >= ev_end.time + 0.5 - 1e-9  # and after min silence


@pytest.mark.parametrize("plugin", PLUGINS)
def test_min_silence_joins_or_splits_utterances(plugin: str) -> None:
    samples, truth = conversation(RATE, gap=0.35)
    joined = run(make(plugin, opts(speech=0.1, silence_=0.8)), samples)
    assert kinds(joined) == [SpeechStart, SpeechEnd]
    split = run(make(plugin, opts(speech=0.1, silence_=0.2)), samples)
    ends = [e for e in split if isinstance(e, SpeechEnd)]
    assert len(ends) >= 2  # at least the real gap ends a segment (words may split more)
    assert any(abs(e.time - truth[0][1]) < 0.2 for e in ends)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_padding_on_real_speech(plugin: str) -> None:
    samples, _ = conversation(RATE)
    bare = run(make(plugin, opts(speech=0.1, silence_=0.5)), samples)
    padded = run(make(plugin, opts(speech=0.1, silence_=0.5, padding=0.2)), samples)
    assert kinds(padded) == kinds(bare)
    for a, b in zip(padded, bare, strict=True):
        shift = -0.2 if isinstance(a, SpeechStart) else 0.2
        assert a.time == pytest.approx(b.time + shift, abs=1e-9)
        assert a.at == b.at  # padding moves times, not decisions


@pytest.mark.parametrize("plugin", PLUGINS)
def test_flush_closes_speech_cut_mid_utterance(plugin: str) -> None:
    pcm, first, _ = espeak_at(UTTERANCES[1], RATE)
    samples = np.concatenate([silence(0.5), pcm[: RATE * 1]])  # cut 1 s into the speech
    vad = make(plugin, opts(speech=0.1, silence_=0.5))
    events = run(vad, samples, flush=False)
    assert kinds(events) == [SpeechStart] and vad.speaking
    (end,) = vad.flush()
    assert isinstance(end, SpeechEnd)
    assert end.time == pytest.approx(samples.size / RATE, abs=1e-9)
    assert end.start == events[0].time == pytest.approx(0.5 + first, abs=2 * vad.window_duration)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_silence_gives_no_events_and_reset_repeats_exactly(plugin: str) -> None:
    vad = make(plugin, opts())
    assert run(vad, silence(3.0)) == []
    assert vad.position == pytest.approx(3.0)
    samples, _ = conversation(24000)
    vad.reset()
    first = run(vad, samples, 24000)
    assert len(first) == 4
    vad.reset()
    assert vad.position == 0.0
    assert run(vad, samples, 24000) == first  # the model's state was reset too


def test_silero_is_not_fooled_by_tones_or_noise() -> None:
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 2000, RATE * 2).clip(-32768, 32767).astype(np.int16)
    bursts = np.concatenate([silence(0.5), tone(1.0), silence(0.5), tone(0.5, freq=1000)])
    assert run(make("silero", opts()), bursts) == []
    assert run(make("silero", opts()), noise) == []


def test_webrtc_hears_speech_over_silence_at_every_aggressiveness() -> None:
    from antiphon.plugins.webrtc import WebRtcVAD

    samples, _ = conversation(RATE)
    for level in range(4):
        vad = WebRtcVAD(opts(speech=0.1, silence_=0.5), aggressiveness=level)
        events = run(vad, samples)
        assert kinds(events) == [SpeechStart, SpeechEnd] * 2, level
        assert vad.hangover == pytest.approx((5 if level < 2 else 3) * 0.03)


def test_plugins_refuse_bad_settings(tmp_path: object) -> None:
    from pathlib import Path

    from antiphon.plugins.silero import SileroVAD
    from antiphon.plugins.webrtc import WebRtcVAD

    for bad in (5, -1, "2", True):
        with pytest.raises(ConfigError, match="aggressiveness must be 0-3"):
            WebRtcVAD(aggressiveness=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="does not exist"):
        SileroVAD(model_path="/nonexistent/model.bin")
    garbage = Path(str(tmp_path)) / "model.bin"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot load the Silero model"):
        SileroVAD(model_path=garbage)
    with pytest.raises(ConfigError, match="VADOptions"):
        SileroVAD(0.5)  # type: ignore[arg-type]


# ------------------------------------------------------------ off the event loop


async def test_offloaded_vad_decides_the_same_events_a_frame_later_on_a_shared_worker() -> None:
    from antiphon.aio.worker import BatchWorker
    from antiphon.services.vad import OffloadedVAD
    from antiphon.testing.poll import until

    audio = np.concatenate([silence(0.3), tone(0.5), silence(0.6), tone(0.3), silence(0.2)])
    expected = run(EnergyVAD(opts()), audio)
    worker = BatchWorker("test-vad")
    calls = [OffloadedVAD(EnergyVAD(opts()), worker) for _ in range(3)]
    got: list[list[VADEvent]] = [[] for _ in calls]
    try:
        for f in AudioFrame.from_array(audio, RATE).split(0.02):
            for i, vad in enumerate(calls):
                got[i] += vad.process(f)
            await until(lambda: worker.pending == 0, 10)  # the worker keeps up here
        for i, vad in enumerate(calls):
            got[i] += vad.flush()
            assert got[i] == expected  # same events, same audio times
            assert vad.position == pytest.approx(audio.size / RATE)
        assert worker.jobs >= worker.batches > 0
    finally:
        assert await worker.aclose(5.0)
    assert worker.thread is not None and not worker.thread.is_alive()


def test_offloaded_vad_decides_inline_when_the_worker_is_behind() -> None:
    from antiphon.aio.worker import BatchWorker
    from antiphon.services.vad import OffloadedVAD

    class Refusing(BatchWorker):  # a worker whose queue is full
        def submit(self, job: object, done: object) -> bool:
            return False

    audio = np.concatenate([silence(0.2), tone(0.4), silence(0.6)])
    vad = OffloadedVAD(EnergyVAD(opts()), Refusing("full"))
    assert run(vad, audio) == run(EnergyVAD(opts()), audio)  # nothing lost, nothing late
    assert vad.inline_frames == 0  # refused submits run inline at once, no backlog


def test_speech_gate_passes_speech_and_the_preroll_before_it() -> None:
    from antiphon.services.vad import SpeechGate

    gate = SpeechGate(preroll=0.1)
    frames = AudioFrame.from_array(tone(0.4), RATE).split(0.02)
    assert [gate.feed(f, False) for f in frames[:10]] == [[]] * 10  # silence: held
    out = gate.feed(frames[10], True)
    assert out == [*frames[5:10], frames[10]]  # the last 0.1 s first, then the frame
    assert gate.feed(frames[11], True) == [frames[11]]
    assert gate.feed(frames[12], False) == []
    assert SpeechGate(enabled=False).feed(frames[0], False) == [frames[0]]


# ------------------------------------------------------------ closing: the model goes back


def test_a_closed_vad_takes_no_more_audio() -> None:
    from antiphon.errors import StreamClosedError

    vad = EnergyVAD(opts())
    run(vad, tone(0.2))
    vad.close()
    vad.close()  # idempotent
    frame = AudioFrame.from_array(silence(0.02), RATE)
    for use in (lambda: vad.process(frame), vad.flush, vad.reset):
        with pytest.raises(StreamClosedError, match="after close"):
            use()


def test_silero_gives_its_detector_back_to_the_pool_when_closed() -> None:
    """At close, not at garbage collection: a call's objects may wait for a full
    collection in reference cycles, and each call meanwhile took a new detector."""
    from antiphon.plugins.silero import SileroVAD
    from antiphon.plugins.silero import vad as silero

    first = SileroVAD(opts())
    run(first, tone(0.3))
    detector = first._model
    first.close()
    assert silero._pool[-1] is detector
    second = SileroVAD(opts())  # takes it, reset: the same decisions as a fresh one
    assert second._model is detector
    audio = espeak_at("hello there", RATE)[0]
    assert run(second, audio) == run(SileroVAD(opts(), model_path=None), audio)
    pooled = len(silero._pool)
    del first  # its finalizer already ran at close: the detector is not given back twice
    assert len(silero._pool) == pooled


async def test_closing_an_offloaded_vad_releases_its_model_and_drops_what_is_queued() -> None:
    from antiphon.aio.worker import BatchWorker
    from antiphon.errors import StreamClosedError
    from antiphon.services.vad import OffloadedVAD
    from antiphon.testing.poll import until

    class Held(BatchWorker):  # runs the jobs only when told
        def __init__(self) -> None:
            super().__init__("held")
            self.held: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []

        def submit(self, job: Callable[[], Any], done: Callable[[Any], None]) -> bool:
            self.held.append((job, done))
            return True

    worker = Held()
    inner = EnergyVAD(opts())
    vad = OffloadedVAD(inner, worker)
    assert vad.process(AudioFrame.from_array(tone(0.02), RATE)) == []
    vad.close()
    assert inner._closed  # the inner model released with it
    ((job, done),) = worker.held
    done(job())  # the batch that ran after the close: nothing decided, nothing raised
    assert vad.position == 0.0
    with pytest.raises(StreamClosedError):
        vad.process(AudioFrame.from_array(tone(0.02), RATE))
    real = BatchWorker("test-vad-close")  # and a queued frame on a real worker is dropped
    try:
        other = OffloadedVAD(EnergyVAD(opts()), real)
        other.process(AudioFrame.from_array(tone(0.02), RATE))
        other.close()
        await until(lambda: real.pending == 0, 10)
    finally:
        assert await real.aclose(5.0)


@pytest.mark.parametrize("rate", [8000, 24000, 48000])
def test_each_frame_reaches_the_model_when_it_arrives(rate: int) -> None:
    """The conversion to the model's rate holds nothing back beyond a partial window:
    soxr HQ handed its output out in ~100 ms blocks, and speech starts (barge-in) were
    decided that much late."""
    vad = EnergyVAD(opts())
    fed = 0.0
    for f in AudioFrame.from_array(tone(1.0, rate), rate).split(0.02):
        vad.process(f)
        fed += f.duration
        assert fed - vad.position < vad.window_duration + 0.001


class ConvertedVAD(ScriptedVAD):
    """Every frame through the converter: the shortcut for the model's format off."""

    def process(self, frame: AudioFrame) -> list[VADEvent]:
        self._as_is = False
        return super().process(frame)


@given(
    probs=st.lists(st.sampled_from([0.0, 0.4, 1.0]), min_size=1, max_size=120),
    sizes=st.lists(st.sampled_from([W, W, 2 * W, W // 2, W + 7, 3]), min_size=1, max_size=5),
    at_8k=st.tuples(st.integers(0, 120), st.integers(0, 40)),
)
def test_frames_of_the_models_format_give_what_the_converter_gives(
    probs: list[float], sizes: list[int], at_8k: tuple[int, int]
) -> None:
    """Frames at the model's rate, mono, skip the converter (it would pass them through):
    the same events, probabilities and times, also around a stretch at another rate."""
    audio = script(probs, tail=37)
    begin = min(at_8k[0] * W, audio.size)
    end = min(begin + at_8k[1] * W, audio.size)
    frames = [AudioFrame.from_array(p, RATE) for p in cut(audio[:begin], sizes)]
    frames += [AudioFrame.from_array(p, RATE // 2) for p in cut(audio[begin:end:2], sizes)]
    frames += [AudioFrame.from_array(p, RATE) for p in cut(audio[end:], sizes)]
    o = opts(speech=2 * WD, silence_=4 * WD, padding=WD)
    seen = []
    for vad in (ScriptedVAD(o), ConvertedVAD(o)):
        trace = [(vad.process(f), vad.probability, vad.position) for f in frames]
        seen.append((trace, vad.flush(), vad.position))
    assert seen[0] == seen[1]
