"""PiperTTS: the TTS lifecycle with an in-process neural voice (as test_espeak_tts.py).

The real voice runs in every test; :class:`Recorded` wraps it to record each model run
(one per sentence) and to inject faults on cue: a gate before a sentence, a failure, a
hang. The audio is compared with what the model produced in that very run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError, StreamClosedError
from antiphon.plugins.piper import PINS, PiperTTS, PiperVoice, VoiceConfig, phoneme_ids
from antiphon.plugins.piper import tts as piper_tts
from antiphon.services.tts import StreamState, SynthesisStream, TTSDeadlines
from antiphon.testing.leaks import LeakCheck

pytestmark = pytest.mark.engines  # real model inference: `pytest -m engines` runs them alone

FAST = TTSDeadlines(connect=20.0, first_audio=5.0, idle=5.0, clear=0.5, close=8.0)
THREE = "The first sentence is here. Then a second one follows. And a third ends it."
WAIT = 10.0


@dataclass
class Run:
    text: str
    pcm: bytes = b""
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)


class Recorded(PiperVoice):
    """The real voice, each run recorded; faults on cue (all bounded by ``WAIT``)."""

    def __init__(self, inner: PiperVoice, plan: Plan) -> None:  # no super(): it wraps
        self.inner, self.plan, self.config = inner, plan, inner.config

    def run_options(self) -> Any:
        return self.inner.run_options()

    def synthesize(self, text: str, run: Any = None, *, wait: float | None = None) -> bytes:
        plan = self.plan
        record = Run(text)
        plan.runs.append(record)
        index = len(plan.runs) - 1
        try:
            if index == plan.gate_before:
                plan.gated.set()
                plan.gate.wait(WAIT)
            if index == plan.raise_at:
                raise RuntimeError("injected voice failure")
            if index == plan.hang_at:
                plan.hanging.set()
                plan.release.wait(WAIT)
            record.pcm = self.inner.synthesize(text, run, wait=wait)
            return record.pcm
        except BaseException as exc:
            record.error = exc
            raise
        finally:
            record.finished.set()

    def close(self) -> None:
        self.inner.close()


@dataclass
class Plan:
    gate_before: int | None = None
    raise_at: int | None = None
    hang_at: int | None = None
    runs: list[Run] = field(default_factory=list)
    gated: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)
    hanging: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.runs]


class PlannedTTS(PiperTTS):
    def __init__(self, plan: Plan, **kw: Any) -> None:
        self.plan = plan
        super().__init__(deadlines=FAST, **kw)

    def _load(self) -> PiperVoice:
        return Recorded(super()._load(), self.plan)


@contextlib.asynccontextmanager
async def running(plan: Plan | None = None, **kw: Any) -> AsyncIterator[PiperTTS]:
    leaks = LeakCheck()
    tts = PlannedTTS(plan or Plan(), **kw)
    try:
        async with asyncio.timeout(60):
            yield tts
    finally:
        tts.plan.gate.set()
        tts.plan.release.set()
        await tts.aclose()
    assert tts.active_streams == 0 and tts.threads == []  # aclose joined the threads
    await leaks.assert_clean(settle=2.0)


async def audio_of(s: SynthesisStream) -> bytes:
    return b"".join([f.data async for f in s])


async def until(condition: Callable[[], bool], limit: float = WAIT) -> None:
    """Poll ``condition`` (set by the engine thread) for at most ``limit`` seconds."""
    for _ in range(round(limit / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {limit}s")


# ----------------------------------------------------------------- healthy voice


async def test_speaks_each_sentence_and_completes() -> None:
    plan = Plan()
    async with running(plan) as tts, tts.stream(generation=4) as s:
        s.push_text("The first sentence is here. ")
        s.push_text("Then a second one follows. And a third ends it.")
        s.end_input()
        frames = [f async for f in s]
        assert s.state is StreamState.COMPLETED and s.error is None
    assert plan.texts == [
        "The first sentence is here.",
        "Then a second one follows.",
        "And a third ends it.",
    ]
    audio = b"".join(f.data for f in frames)
    assert audio == b"".join(r.pcm for r in plan.runs)
    assert all(f.generation == 4 and f.sample_rate == 22050 for f in frames)
    assert all(len(r.pcm) > 2 * 22050 for r in plan.runs)  # each over a second of speech
    assert max(f.duration for f in frames) <= 0.1 + 1e-6  # emitted in 100 ms frames


async def test_first_sentence_plays_while_the_next_is_made() -> None:
    plan = Plan(gate_before=1)  # the second sentence waits at the gate until told
    async with running(plan) as tts, tts.stream() as s:
        s.push_text(THREE)
        s.flush()
        first = await anext(s)
        assert first.data and not s.done
        await until(plan.gated.is_set)
        assert not plan.runs[1].finished.is_set()  # the second is not made yet
        plan.gate.set()
        s.end_input()
        rest = await audio_of(s)
    assert first.data + rest == b"".join(r.pcm for r in plan.runs)
    assert len(plan.runs) == 3


async def test_flushes_are_spoken_in_order() -> None:
    plan = Plan()
    async with running(plan) as tts, tts.stream() as s:
        for text in ["Good morning.", "How can I help?"]:
            s.push_text(text)
            s.flush()
        s.end_input()
        audio = await audio_of(s)
    assert plan.texts == ["Good morning.", "How can I help?"]
    assert audio == plan.runs[0].pcm + plan.runs[1].pcm


async def test_resampled_to_the_rate_asked() -> None:
    plan = Plan()
    async with running(plan, sample_rate=16000) as tts:
        frame = await tts.synthesize("Hello there.").collect()
    native = len(plan.runs[0].pcm) / 2 / 22050
    assert frame.sample_rate == 16000 and frame.duration == pytest.approx(native, abs=0.01)


def test_phonemes_keep_clause_punctuation_and_ids_follow_the_format() -> None:
    id_map = {"^": (1,), "$": (2,), "_": (0,), "a": (14,), " ": (3,), "?": (13,)}
    # BOS PAD, each phoneme then PAD, EOS; an unknown phoneme ("x") is skipped
    assert phoneme_ids("a x?", id_map) == [1, 0, 14, 0, 3, 0, 13, 0, 2]
    voice = PiperVoice(piper_tts.packaged_voice(), PiperTTS().config)
    try:
        phonemes = voice.phonemize("Hello there, how are you?")
    finally:
        voice.close()
    assert phonemes.count(",") == 1 and phonemes.endswith("?")
    assert "ð" in phonemes  # IPA from espeak-ng ("there")


# ----------------------------------------------------------------- the caller


async def test_cancel_stops_before_the_next_sentence_and_terminates_the_run() -> None:
    plan = Plan(gate_before=1)
    async with running(plan) as tts:
        s = tts.stream()
        s.push_text(THREE)
        s.flush()
        assert (await anext(s)).data
        await until(plan.gated.is_set)
        s.cancel()  # the second run's options are terminated before it starts
        assert s.state is StreamState.CANCELLED and s.done
        plan.gate.set()
        await until(plan.runs[1].finished.is_set)
        assert plan.runs[1].error is not None  # onnxruntime refused the terminated run
        assert await audio_of(s) == b""  # nothing after the cancel
        with pytest.raises(StreamClosedError, match="cancelled"):
            s.push_text("more")
        await s.aclose()
        # the thread is free for the next stream (no third sentence was started)
        frame = await tts.synthesize("Still here.").collect()
        assert frame.duration > 0.3
    assert plan.texts == [
        "The first sentence is here.",
        "Then a second one follows.",
        "Still here.",
    ]


async def test_aclose_twice_and_from_another_task_mid_synthesis() -> None:
    plan = Plan(gate_before=0)
    async with running(plan) as tts:
        s = tts.stream()
        s.push_text(THREE)
        s.flush()
        await until(plan.gated.is_set)
        await asyncio.gather(s.aclose(), s.aclose(), asyncio.create_task(s.aclose()))
        assert s.state is StreamState.CANCELLED
        plan.gate.set()
        await asyncio.gather(tts.aclose(), asyncio.create_task(tts.aclose()))
        with pytest.raises(StreamClosedError, match="closed"):
            tts.stream()


# ----------------------------------------------------------------- faults


async def test_a_failing_run_fails_the_stream_and_the_next_one_works() -> None:
    plan = Plan(raise_at=1)
    async with running(plan) as tts:
        s = tts.stream()
        s.push_text(THREE)
        s.end_input()
        with pytest.raises(ProviderError) as info:
            await audio_of(s)
        assert info.value.provider == "piper" and info.value.stage == "synth"
        assert "injected voice failure" in str(info.value)
        assert s.state is StreamState.FAILED
        assert len(plan.runs) == 2  # no sentence after the failure
        assert (await tts.synthesize("Still here.").collect()).duration > 0.3


async def test_a_run_that_hangs_fails_by_its_deadline_and_a_new_thread_serves() -> None:
    plan = Plan(hang_at=0)
    dl = TTSDeadlines(connect=20.0, first_audio=0.5, idle=5.0, clear=0.5, close=8.0)
    async with running(plan) as tts:
        await tts.prewarm()
        tts.deadlines = dl
        s = tts.stream()
        s.push_text("Hello there.")
        s.end_input()
        with pytest.raises(ProviderTimeoutError) as info:
            await audio_of(s)
        assert info.value.stage == "first_audio" and info.value.timeout == 0.5
        assert plan.hanging.is_set()
        tts.deadlines = FAST
        frame = await tts.synthesize("Still here.").collect()  # on a fresh thread
        assert frame.duration > 0.3 and len(tts.threads) == 2
        plan.release.set()  # the hung run returns; its thread ends and is joined


# ----------------------------------------------------------------- the weights


def _copy_of_the_voice(tmp_path: Path, tamper: str | None) -> Path:
    source = piper_tts.packaged_voice().parent
    for name in PINS:
        target = tmp_path / name
        if name == tamper:
            target.write_bytes((source / name).read_bytes() + b"\n")
        else:
            target.symlink_to(source / name)
    return tmp_path / f"{piper_tts.VOICE}.onnx"


async def test_a_tampered_voice_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = _copy_of_the_voice(tmp_path, tamper=f"{piper_tts.VOICE}.onnx.json")
    monkeypatch.setattr(piper_tts, "packaged_voice", lambda: copy)
    async with PiperTTS() as tts:
        with pytest.raises(ProviderError) as info:
            await tts.prewarm()
    err = info.value
    assert err.provider == "piper" and err.stage == "load"
    assert f"{copy}.json" in str(err) and PINS[f"{piper_tts.VOICE}.onnx.json"] in str(err)
    assert "pip install" in str(err)


async def test_own_voice_by_file_or_directory(tmp_path: Path) -> None:
    copy = _copy_of_the_voice(tmp_path, tamper=None)
    async with PiperTTS(voice=tmp_path, checksums={copy.name: "f" * 64}) as tts:
        with pytest.raises(ProviderError, match="ffffffff"):
            await tts.prewarm()
    async with PiperTTS(voice=copy, checksums=PINS) as tts:
        assert (await tts.synthesize("Hello.").collect()).duration > 0.2


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        PiperTTS(voice=tmp_path / "none.onnx")
    with pytest.raises(ConfigError, match=r"holds 0 \.onnx files"):
        PiperTTS(voice=tmp_path)
    (tmp_path / "v.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"no config v\.onnx\.json"):
        PiperTTS(voice=tmp_path / "v.onnx")
    (tmp_path / "v.onnx.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a Piper voice config"):
        PiperTTS(voice=tmp_path / "v.onnx")
    with pytest.raises(ConfigError, match="sample_rate"):
        PiperTTS(sample_rate=0)
    with pytest.raises(ConfigError, match="threads"):
        PiperTTS(threads=0)


# ----------------------------------------------------------------- the first answer


async def test_the_first_runs_are_clauses_until_the_lead_is_made() -> None:
    plan = Plan()
    text = (
        "Hello! Ask me what I can do, or what time it is. "
        "It is 7:13 AM, and the next sentence, with its commas, is spoken whole."
    )
    async with running(plan) as tts:
        audio = await audio_of(tts.synthesize(text))
    assert audio == b"".join(r.pcm for r in plan.runs)
    assert " ".join(plan.texts) == text  # every word spoken, in order, once
    assert plan.texts[:2] == ["Hello!", "Ask me what I can do,"]
    made = 0.0
    for run in plan.runs:
        if made < piper_tts.LEAD:  # one clause per run until LEAD seconds are made
            assert piper_tts.clauses(run.text) == [run.text]
        made += len(run.pcm) / 2 / 22050
    assert len(piper_tts.clauses(plan.texts[-1])) > 1  # then longer runs
    assert "7:13 AM," in " ".join(plan.texts)  # a time is not a clause end


def test_a_colon_inside_a_time_is_not_a_clause() -> None:
    voice = PiperVoice(piper_tts.packaged_voice(), PiperTTS().config)
    try:
        phonemes = voice.phonemize("It is 7:13 AM.")
    finally:
        voice.close()
    assert ":" not in phonemes and phonemes.endswith(".")
    assert "θˈɜːtiːn" in phonemes  # "thirteen": espeak-ng read the time whole


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["audio"].pop("sample_rate"), "audio.sample_rate is missing"),
        (lambda c: c["audio"].update(sample_rate="fast"), "audio.sample_rate must be an integer"),
        (lambda c: c.update(audio=[22050]), "audio.sample_rate: its parent is not an object"),
        (lambda c: c["inference"].update(noise_w={"a": 1}), "inference.noise_w must be a number"),
        (lambda c: c["phoneme_id_map"].update(a=["x"]), "phoneme_id_map.a must be a list of ints"),
        (lambda c: c.update(deep=json.loads("[" * 20 + "]" * 20)), "deeper than 16"),
    ],
)
def test_a_bad_voice_config_is_one_line_naming_the_key(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    source = Path(f"{piper_tts.packaged_voice()}.json")
    config = json.loads(source.read_text())
    change(config)
    path = tmp_path / "voice.onnx.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message) as info:
        VoiceConfig.from_json(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


async def test_a_voice_that_fails_to_load_fails_the_first_stream_at_once(tmp_path: Path) -> None:
    """Without prewarm, the load's own error ends the stream (not its audio deadline)."""
    copy = _copy_of_the_voice(tmp_path, tamper=None)
    deadlines = TTSDeadlines(connect=20.0, first_audio=600.0)
    async with PiperTTS(voice=copy, checksums={copy.name: "f" * 64}, deadlines=deadlines) as tts:
        with pytest.raises(ProviderError, match="ffffffff") as info:
            await tts.synthesize("Hello.").collect()
    assert info.value.stage == "load"
