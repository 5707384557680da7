"""The command line: ``say`` against each provider's fake, and its error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from antiphon.audio.wav import read_wav
from antiphon.cli import main
from antiphon.plugins.registry import TTS_PROVIDERS, tts_provider
from antiphon.testing.synth import tone_duration


@pytest.mark.parametrize("provider", sorted(TTS_PROVIDERS))
def test_say_against_the_fake_writes_the_audio(provider: str, tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    text = "Hello from the command line."
    assert main(["say", text, "--tts", provider, "--fake", "--out", str(out)]) == 0
    frame = read_wav(out)
    assert frame.channels == 1
    assert frame.duration == pytest.approx(tone_duration(text), abs=0.01)


def test_say_without_a_key_says_where_to_put_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    assert main(["say", "Hi", "--tts", "deepgram", "--out", str(tmp_path / "x.wav")]) == 2
    assert "DEEPGRAM_API_KEY" in capsys.readouterr().err


def test_say_refuses_blank_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["say", "  ", "--fake", "--out", str(tmp_path / "x.wav")]) == 2
    assert "nothing to say" in capsys.readouterr().err


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="deepgram"):
        tts_provider("nope")


@pytest.mark.parametrize("provider", ["openai", "azure"])
def test_realtime_answers_a_wav_file(
    provider: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.wav import write_wav

    t = np.arange(int(24000 * 0.8)) / 24000
    speech = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)  # loud enough for the VAD
    write_wav(tmp_path / "q.wav", AudioFrame.from_array(speech, 24000))
    out = tmp_path / "reply.wav"
    args = ["realtime", str(tmp_path / "q.wav"), "--provider", provider, "--fake"]
    assert main([*args, "--out", str(out), "--timeout", "20"]) == 0
    printed = capsys.readouterr().out
    assert "user:  hello there" in printed and "agent: " in printed
    assert read_wav(out).duration > 0.1
