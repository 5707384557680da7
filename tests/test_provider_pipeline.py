"""The new providers by name: ``--stt assemblyai`` and ``--llm anthropic:MODEL``, end to end
on their loopback fakes (``antiphon talk ... --fake``)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from antiphon.agent.pipeline import PipelineSpec, open_services
from antiphon.agent.talk import talk
from antiphon.audio.frame import AudioFrame
from antiphon.audio.wav import read_wav, write_wav
from antiphon.cli import main
from antiphon.errors import ConfigError
from antiphon.plugins.anthropic import AnthropicLLM
from antiphon.plugins.assemblyai import AssemblyAISTT
from antiphon.plugins.openai import OpenAILLM
from antiphon.testing.registry import LoopbackFakes
from antiphon.testing.synth import tone_for_text

QUESTION = "what is the weather"


def tone_speech(text: str) -> AudioFrame:
    pad = AudioFrame.silence(0.5, 16000).data
    return AudioFrame(pad + tone_for_text(text, 16000) + pad, 16000, 1)


def test_the_names_are_known() -> None:
    spec = PipelineSpec(stt="assemblyai", llm="anthropic:claude-sonnet-4-5", tts="deepgram")
    assert not spec.offline
    with pytest.raises(ConfigError, match="SERVER:MODEL"):
        PipelineSpec(llm="anthropic:")
    with pytest.raises(ConfigError, match="assemblyai"):
        PipelineSpec(stt="assemblyia")


async def test_open_services_builds_the_new_plugins_on_their_fakes() -> None:
    spec = PipelineSpec(
        vad="webrtc", stt="assemblyai", llm="anthropic:claude-x", tts="deepgram", fake=True
    )
    async with contextlib.AsyncExitStack() as stack:
        services = await open_services(spec, stack, fakes=LoopbackFakes())
        assert isinstance(services.stt, AssemblyAISTT)
        assert isinstance(services.llm, AnthropicLLM) and services.llm.model == "claude-x"
        assert services.stt.url.startswith("ws://127.0.0.1:")
        assert services.llm.url.startswith("http://127.0.0.1:")
    async with contextlib.AsyncExitStack() as stack:  # the existing callers: OpenAI
        services = await open_services(
            PipelineSpec(vad="webrtc", llm="openai:gpt-4o-mini", fake=True),
            stack,
            fakes=LoopbackFakes(),
        )
        assert isinstance(services.llm, OpenAILLM)


async def test_talk_with_assemblyai_and_anthropic_on_the_fakes(tmp_path: Path) -> None:
    spec = PipelineSpec(
        vad="webrtc",  # tone speech: Silero rightly hears no voice in it
        stt="assemblyai",
        llm="anthropic:claude-x",
        tts="deepgram",
        fake=True,
        fake_vocabulary=(QUESTION, "something else"),
    )
    out = tmp_path / "reply.wav"
    result = await talk(
        tone_speech(QUESTION), str(out), spec=spec, timeout=30, fakes=LoopbackFakes()
    )
    assert result.heard == [QUESTION]
    assert result.replies == [f"You said: {QUESTION}"]  # the fake model echoes the user
    assert read_wav(out).duration == pytest.approx(result.audio_seconds)
    assert result.audio_seconds > 0.5
    [turn] = result.turns
    assert turn.llm_ttft is not None and turn.tts_ttfa is not None


def test_cli_talk_runs_assemblyai_anthropic_deepgram_on_fakes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    question = tmp_path / "q.wav"
    write_wav(str(question), tone_speech(QUESTION))
    out = tmp_path / "a.wav"
    argv = ["talk", str(question), "--out", str(out), "--vad", "webrtc", "--stt", "assemblyai"]
    argv += ["--llm", "anthropic:claude-x", "--tts", "deepgram", "--fake"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "stt=assemblyai llm=anthropic:claude-x tts=deepgram" in printed
    # the CLI gives the fake STT no vocabulary: it hears the tone as "unknown"
    assert "user:  unknown" in printed and "agent: You said: unknown" in printed
    assert out.exists() and read_wav(out).duration > 0.5


def test_cli_talk_runs_gemini_on_its_fake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not PipelineSpec(llm="gemini:gemini-2.5-flash").offline
    question = tmp_path / "q.wav"
    write_wav(str(question), tone_speech(QUESTION))
    out = tmp_path / "a.wav"
    argv = ["talk", str(question), "--out", str(out), "--vad", "webrtc", "--stt", "assemblyai"]
    argv += ["--llm", "gemini:gemini-x", "--tts", "deepgram", "--fake"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "llm=gemini:gemini-x" in printed
    assert "agent: You said: unknown" in printed  # the fake Gemini echoes the user
    assert out.exists() and read_wav(out).duration > 0.5
