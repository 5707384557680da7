"""The command line: ``say`` against each provider's fake, and its error messages."""

from __future__ import annotations

import sys
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


@pytest.mark.parametrize("provider", ["openai", "azure", "gemini", "xai"])
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
    assert "not words" in printed  # honest: the fake's transcript is fixed
    assert read_wav(out).duration > 0.1


def _speech_wav(path: Path, seconds: float = 0.5) -> None:
    import numpy as np

    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.wav import write_wav

    t = np.arange(int(16000 * seconds)) / 16000
    write_wav(
        path, AudioFrame.from_array((np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16), 16000)
    )


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    return _one_error_line_of(capsys.readouterr().err)


def _one_error_line_of(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", ["talk", "realtime"])
def test_an_empty_file_is_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert main([command, str(empty), "--out", str(tmp_path / "r.wav")]) == 2
    assert "not a PCM WAV file" in _one_error_line(capsys)


@pytest.mark.parametrize("command", ["talk", "realtime"])
def test_a_missing_file_is_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.wav"
    assert main([command, str(missing), "--out", str(tmp_path / "r.wav")]) == 2
    assert "No such file" in _one_error_line(capsys)


def test_a_wav_without_samples_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    silent = tmp_path / "none.wav"
    _speech_wav(silent, seconds=0.0)
    assert main(["realtime", str(silent), "--fake", "--out", str(tmp_path / "r.wav")]) == 2
    assert "holds no audio" in _one_error_line(capsys)


def test_a_truncated_wav_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = tmp_path / "whole.wav"
    _speech_wav(whole)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:-1000])
    assert main(["talk", str(cut), "--out", str(tmp_path / "r.wav")]) == 2
    assert "truncated" in _one_error_line(capsys)


def test_an_8_bit_wav_says_16_bit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import wave

    path = tmp_path / "u8.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes(800))
    assert main(["talk", str(path), "--out", str(tmp_path / "r.wav")]) == 2
    line = _one_error_line(capsys)
    assert "8-bit" in line and "16-bit" in line and "give a PCM" not in line


def test_fake_server_on_a_busy_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["fake-server", "deepgram", "--port", str(port)]) == 1
    line = _one_error_line(capsys)
    assert f"port {port}" in line and "--port" in line


def test_console_without_a_sound_device_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import sounddevice fails
    assert main(["console", "--fake"]) != 0
    assert "sounddevice" in _one_error_line(capsys)


FAKE_PIPELINE = ["--vad", "webrtc", "--stt", "assemblyai", "--llm", "anthropic:x"]
FAKE_PIPELINE += ["--tts", "deepgram", "--fake"]


def test_talk_hearing_nothing_fails_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.wav import write_wav

    silence = tmp_path / "silence.wav"
    write_wav(silence, AudioFrame.silence(0.5, 16000))
    assert main(["talk", str(silence), "--out", str(tmp_path / "r.wav"), *FAKE_PIPELINE]) == 1
    line = _one_error_line(capsys)
    assert "nothing recognised" in line and "speech" in line


def test_talk_numbers_the_turns_from_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.wav import write_wav
    from antiphon.testing.synth import tone_for_text

    pad = AudioFrame.silence(0.5, 16000).data
    question = tmp_path / "q.wav"
    write_wav(
        question, AudioFrame(pad + tone_for_text("what is the weather", 16000) + pad, 16000, 1)
    )
    assert main(["talk", str(question), "--out", str(tmp_path / "r.wav"), *FAKE_PIPELINE]) == 0
    turns = [line for line in capsys.readouterr().out.splitlines() if line.startswith("turn ")]
    assert turns and turns[0].startswith("turn 1: ")


@pytest.mark.parametrize("voice", [[], ["--tts", "espeak"]], ids=["piper-default", "espeak"])
def test_say_speaks_offline_without_a_key(
    voice: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    out = tmp_path / "hi.wav"
    assert main(["say", "Hello there", *voice, "--out", str(out)]) == 0
    assert f"from {voice[1] if voice else 'piper'} (offline)" in capsys.readouterr().out
    assert read_wav(out).duration > 0.3


def test_say_refuses_cloud_options_for_an_offline_voice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["say", "Hi", "--tts", "espeak", "--fake", "--out", str(tmp_path / "x.wav")]) == 2
    assert "offline voice" in _one_error_line(capsys)


def test_serve_on_a_busy_port_is_one_line_before_any_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--fake", "--port", str(port)]) == 1
    captured = capsys.readouterr()
    assert "playground" not in captured.out
    line = _one_error_line_of(captured.err)
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_every_option_has_help() -> None:
    import argparse

    from antiphon.cli import build_parser

    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, parser in commands.choices.items()
        for action in parser._actions
        if action.help is None
    ]
    assert missing == []


def test_talk_with_the_llm_down_names_the_cause(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import contextlib
    import socket

    from antiphon.agent.pipeline import Endpoint
    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.wav import write_wav
    from antiphon.testing import registry
    from antiphon.testing.synth import tone_for_text

    with socket.socket() as s:  # a port nobody listens on: the LLM server is not running
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]

    class DeadLLM(registry.LoopbackFakes):
        async def llm(self, stack: contextlib.AsyncExitStack, provider: str = "openai") -> Endpoint:
            return Endpoint(f"http://127.0.0.1:{dead}/v1", "key")

    monkeypatch.setattr(registry, "LoopbackFakes", DeadLLM)
    pad = AudioFrame.silence(0.5, 16000).data
    question = tmp_path / "q.wav"
    write_wav(
        question, AudioFrame(pad + tone_for_text("what is the weather", 16000) + pad, 16000, 1)
    )
    argv = ["talk", str(question), "--out", str(tmp_path / "r.wav"), *FAKE_PIPELINE]
    argv[argv.index("anthropic:x")] = "openai:x"
    assert main(argv) == 1
    line = _one_error_line(capsys)
    assert "could not answer" in line and f"127.0.0.1:{dead}" in line and "reachable" in line


def test_progress_shows_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    argv = ["say", "Hi", "--tts", "espeak", "--out", str(tmp_path / "hi.wav")]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""  # piped: quiet
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(argv) == 0
    assert "loading the espeak voice" in capsys.readouterr().err


def test_talk_heard_but_unanswered_is_not_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from antiphon.audio.frame import AudioFrame
    from antiphon.audio.wav import write_wav
    from antiphon.testing.synth import tone_for_text

    pad = AudioFrame.silence(0.5, 16000).data
    question = tmp_path / "q.wav"
    write_wav(question, AudioFrame(pad + tone_for_text("hello", 16000) + pad, 16000, 1))
    assert main(["talk", str(question), "--out", str(tmp_path / "r.wav"), *FAKE_PIPELINE]) == 1
    captured = capsys.readouterr()
    assert "local fakes, no keys" in captured.out
    assert "did not answer" in _one_error_line_of(captured.err)


def test_an_unwritable_output_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the output's directory should be
    out = blocker / "hi.wav"
    assert main(["say", "Hi", "--tts", "espeak", "--out", str(out)]) == 2
    assert "cannot write" in _one_error_line(capsys)


def test_a_port_out_of_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "99999"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "not a port" in err and "Traceback" not in err


@pytest.mark.parametrize("module", ["antiphon.cli", "antiphon"])
def test_python_dash_m_runs_the_one_imported_cli_module(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m antiphon.cli`` (and ``-m antiphon``) call ``antiphon.cli.main``, not a copy.

    Run as ``__main__``, cli.py is a second module object beside the ``antiphon.cli`` the
    package imports; its ``main`` would run on duplicate classes and state.
    """
    import runpy
    import warnings
    from unittest import mock

    import antiphon.cli

    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with (
        mock.patch.object(antiphon.cli, "main", return_value=7) as the_main,
        warnings.catch_warnings(),
        pytest.raises(SystemExit) as exited,
    ):
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: "found in sys.modules"
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert the_main.call_count == 1
    assert exited.value.code == 7


def test_python_dash_m_antiphon_prints_the_commands() -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "antiphon", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "serve" in done.stdout


@pytest.mark.realtime
def test_serve_says_it_drains_on_ctrl_c_at_the_default_log_level() -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "antiphon.cli", "serve", "--fake", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        listening = False
        for _ in range(1200):  # until it listens: at most 120 s on a loaded machine
            assert proc.poll() is None, "the server exited before it listened"
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    listening = True
                    break
            time.sleep(0.1)
        assert listening
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "draining active calls" in err
