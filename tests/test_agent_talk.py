"""The main job end to end: ``antiphon talk`` on the offline default pipeline
(Whisper tiny.en, the FAQ responder, a Piper voice) and on its light variant
(PocketSphinx, espeak-ng)."""

from __future__ import annotations

import functools
import io
import json
import re
from pathlib import Path

import pytest

import antiphon.agent.talk as talk_module
from antiphon.agent.options import AgentOptions, TurnOptions
from antiphon.agent.pipeline import PipelineSpec
from antiphon.agent.talk import talk
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.audio.wav import read_wav
from antiphon.cli import main
from antiphon.errors import ConfigError
from antiphon.plugins.espeak.engine import Voice, sample_rate, synthesize_pcm
from antiphon.plugins.offline import load_faq

#: Real threads and wall-clock time: the offline engines run on their own threads.
pytestmark = pytest.mark.realtime

#: PocketSphinx works on a real thread; on a loaded machine its final transcript can come
#: later than the default 1 s ``final_timeout``, and the turn would (rightly) end on the
#: interim words. These tests are about the pipeline's answer, so the turn waits for the
#: final: the timeout only ever fires when the final is missing, so waiting costs nothing.
PATIENT = AgentOptions(turn=TurnOptions(final_timeout=30.0))


def spoken(text: str) -> AudioFrame:
    """``text`` said by espeak (a voice both Whisper and PocketSphinx hear), at 16 kHz."""
    pcm = synthesize_pcm(text, Voice(name="en-us+f3", rate=150))
    converter = AudioConverter(16000, 1)
    body = converter.process(AudioFrame(pcm, sample_rate(), 1)).data + converter.flush().data
    pad = AudioFrame.silence(0.3, 16000).data
    return AudioFrame(pad + body + pad, 16000, 1)


EXAMPLE = Path(__file__).parent.parent / "examples" / "question.wav"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@pytest.mark.engines
async def test_offline_agent_answers_the_example_question(tmp_path: Path) -> None:
    log = io.StringIO()
    out = tmp_path / "reply.wav"
    # the demo's input: espeak's output varies from call to call, a recorded file does not
    result = await talk(read_wav(str(EXAMPLE)), str(out), turn_log=log, timeout=60, options=PATIENT)
    # the words (the pipeline's 15 s Whisper window may drop the "?" and the capital,
    # depending on the trailing silence: docs/offline.md; the plugin test checks them)
    assert [words(h) for h in result.heard] == [["what", "can", "you", "do"]]
    expected = next(e.answer for e in load_faq() if "What can you do" in e.question)
    assert result.replies == [expected]
    reply = read_wav(out)
    assert reply.duration == pytest.approx(result.audio_seconds)
    assert reply.duration > 2.0  # the whole answer was spoken
    [line] = [json.loads(x) for x in log.getvalue().splitlines()]
    assert words(line["user_text"]) == ["what", "can", "you", "do"]
    assert line["agent_text"] == expected
    assert line["voice_to_voice"] > 0  # measured; its size depends on the machine


async def test_light_offline_pipeline_answers_too(tmp_path: Path) -> None:
    """PocketSphinx and espeak-ng: the light engines stay available by name."""
    spec = PipelineSpec(stt="pocketsphinx", tts="espeak")
    assert spec.offline
    result = await talk(
        read_wav(str(EXAMPLE)), str(tmp_path / "r.wav"), spec=spec, timeout=45, options=PATIENT
    )
    assert result.heard == ["what can you do"]
    expected = next(e.answer for e in load_faq() if "What can you do" in e.question)
    assert result.replies == [expected] and result.audio_seconds > 2.0


@pytest.mark.engines
def test_cli_talk_prints_the_conversation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(talk_module, "talk", functools.partial(talk, options=PATIENT))
    question = tmp_path / "q.wav"
    from antiphon.audio.wav import write_wav

    write_wav(str(question), spoken("What can you do?"))
    out = tmp_path / "a.wav"
    assert main(["talk", str(question), "--out", str(out), "--vad", "webrtc"]) == 0
    printed = capsys.readouterr().out
    [user] = [line for line in printed.splitlines() if line.startswith("user:  ")]
    assert words(user.removeprefix("user:  ")) == ["what", "can", "you", "do"]
    assert "agent: I am the offline demo agent" in printed
    assert "voice-to-voice" in printed and out.exists()


def test_cli_talk_refuses_what_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["talk", str(tmp_path / "missing.wav")]) == 2
    assert "give a PCM WAV file" in capsys.readouterr().err


def test_pipeline_spec_names_what_to_use() -> None:
    with pytest.raises(ConfigError, match="SERVER:MODEL"):
        PipelineSpec(llm="gpt-4o")
    with pytest.raises(ConfigError, match="choose piper, espeak or one of"):
        PipelineSpec(tts="nope")
    with pytest.raises(ConfigError, match="choose one of whisper, pocketsphinx, deepgram"):
        PipelineSpec(stt="nope")
    spec = PipelineSpec()
    assert spec.offline and (spec.stt, spec.tts) == ("whisper", "piper")
    assert not PipelineSpec(stt="deepgram").offline


async def test_cloud_pipeline_on_the_fake_servers(tmp_path: Path) -> None:
    """Deepgram STT, an OpenAI-compatible LLM and Deepgram TTS, each on its loopback fake."""
    from antiphon.testing.registry import LoopbackFakes
    from antiphon.testing.synth import tone_for_text

    question = "what is the weather"
    pad = AudioFrame.silence(0.3, 16000).data
    audio = AudioFrame(pad + tone_for_text(question, 16000) + pad, 16000, 1)
    spec = PipelineSpec(
        vad="webrtc",  # tone speech: Silero rightly hears no voice in it
        stt="deepgram",
        llm="openai:gpt-4o-mini",
        tts="deepgram",
        fake=True,
        fake_vocabulary=(question, "something else"),
    )
    out = tmp_path / "reply.wav"
    result = await talk(audio, str(out), spec=spec, timeout=30, fakes=LoopbackFakes())
    assert result.heard == [question]
    assert result.replies == [f"You said: {question}"]  # the fake LLM echoes the user
    assert read_wav(out).duration == pytest.approx(result.audio_seconds)
    assert result.audio_seconds > 0.5
    [turn] = result.turns
    assert turn.llm_ttft is not None and turn.tts_ttfa is not None
