"""The ASGI server and the agent WebSocket, end to end on loopback (uvicorn + websockets).

The agent runs on the in-process doubles (energy VAD, scripted STT and LLM, tone TTS),
so every transcript and reply is known.
"""

from __future__ import annotations

import asyncio
import json
import wave
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from antiphon.agent import AgentSession
from antiphon.errors import ConfigError
from antiphon.server.agents import CallableAgent, load_agent_file
from antiphon.server.app import create_app
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import EnergyVAD, ScriptedLLM, ScriptedSTT, ToneTTS, silence, speech
from antiphon.testing.asgi import serve_app
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.transports.limits import EdgeLimits

LONG = "This is a long answer that keeps going for quite a while so it can be interrupted."


@dataclass
class Doubles:
    stt: ScriptedSTT
    llm: ScriptedLLM
    tts: ToneTTS
    sessions: list[AgentSession] = field(default_factory=list)

    def make(self) -> AgentSession:
        vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.3, padding=0))
        s = AgentSession(vad=vad, stt=self.stt, llm=self.llm, tts=self.tts)
        self.sessions.append(s)
        return s

    async def aclose(self) -> None:
        for service in (self.stt, self.llm, self.tts):
            await service.aclose()


@asynccontextmanager
async def server(
    script: Sequence[str] = ("hello there",),
    replies: Sequence[str] = ("Hi! How can I help?",),
    **app_kwargs: Any,
) -> AsyncIterator[tuple[str, Any, Doubles]]:
    leaks = LeakCheck()
    doubles = Doubles(ScriptedSTT(script), ScriptedLLM(list(replies)), ToneTTS())
    agent = CallableAgent(doubles.make, stop=doubles.aclose)
    app = create_app(agent, **app_kwargs)
    async with serve_app(app) as host, asyncio.timeout(60):
        yield host, app, doubles
    await leaks.assert_clean(settle=1.0)


@dataclass
class Call:
    ws: ClientConnection
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: list[tuple[int, bytes]] = field(default_factory=list)  # (events seen, frame)

    async def collect(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.audio.append((len(self.events), message))
                else:
                    self.events.append(json.loads(message))
        except ConnectionClosed:
            pass

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


async def push(ws: ClientConnection, seconds: float, *, loud: bool) -> None:
    audio = speech(seconds) if loud else silence(seconds)
    for frame in audio.split(0.02):
        await ws.send(frame.data)
        await asyncio.sleep(0.02)


@pytest.mark.virtual_time
async def test_a_call_hears_answers_and_measures() -> None:
    async with server() as (host, _app, _d), connect(f"ws://{host}/ws/agent") as ws:
        call = Call(ws)
        reader = asyncio.create_task(call.collect())
        await until(lambda: call.of("ready"))
        [ready] = call.of("ready")
        assert ready["input_rate"] == 16000 and ready["output_rate"] == 16000
        await push(ws, 0.6, loud=True)
        await push(ws, 0.5, loud=False)
        await until(lambda: call.of("turn"))
        user = [e for e in call.of("transcript") if e["role"] == "user" and e["final"]]
        assert [e["text"] for e in user] == ["hello there"]
        agent = [e["text"] for e in call.of("transcript") if e["role"] == "agent"]
        assert agent == ["Hi! How can I help?"]
        await until(lambda: len([w for e in call.of("words") for w in e["words"]]) >= 5)
        words = call.of("words")  # synced to playback, in order, each word once
        assert [w for e in words for w in e["words"]] == ["Hi!", "How", "can", "I", "help?"]
        assert all(e["estimated"] for e in words)  # the tone voice sends no word timings
        played = [e["played"] for e in words]
        assert played == sorted(played) and played[-1] > 0
        states = [e["state"] for e in call.of("state")]
        assert "speaking" in states and "thinking" in states
        [turn] = call.of("turn")
        assert turn["metrics"]["user_text"] == "hello there"
        assert turn["metrics"]["voice_to_voice"] > 0
        assert call.audio and all(len(frame) == 640 for _, frame in call.audio)
        await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(reader, 10)
        assert ws.close_code == 1000


@pytest.mark.virtual_time
async def test_a_typed_turn_is_answered_by_voice() -> None:
    async with (
        server(("unused",), ("Many things.",)) as (host, _app, doubles),
        connect(f"ws://{host}/ws/agent") as ws,
    ):
        call = Call(ws)
        reader = asyncio.create_task(call.collect())
        await until(lambda: call.of("ready"))
        await ws.send(json.dumps({"type": "text", "text": "  what can   you do "}))
        await until(lambda: call.of("turn"))
        [turn] = call.of("turn")
        assert turn["metrics"]["user_text"] == "what can you do"
        assert turn["metrics"]["voice_to_voice"] is None  # no speech: no voice latency
        agent = [e["text"] for e in call.of("transcript") if e["role"] == "agent"]
        assert agent == ["Many things."]
        assert call.audio  # answered by voice
        [context] = doubles.llm.requests
        assert context.messages[-1].content == "what can you do"
        assert doubles.stt.flushes == 0  # nothing went through the recogniser
        await ws.send(json.dumps({"type": "text", "text": "   "}))
        await asyncio.wait_for(reader, 10)
        assert ws.close_code == 1008  # an empty typed turn is refused


def read_recording(folder: Path) -> np.ndarray:
    """The one call recording in ``folder``: 16 kHz stereo int16, (samples, 2)."""
    [path] = list(folder.glob("call-*.wav"))
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 16000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)


@pytest.mark.virtual_time
async def test_a_recorded_call_has_the_user_left_and_the_agent_right(tmp_path: Path) -> None:
    async with (
        server(record_dir=tmp_path) as (host, _app, _d),
        connect(f"ws://{host}/ws/agent") as ws,
    ):
        call = Call(ws)
        reader = asyncio.create_task(call.collect())
        await until(lambda: call.of("ready"))
        await push(ws, 0.6, loud=True)
        await push(ws, 0.5, loud=False)
        await until(lambda: call.of("turn"))
        await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(reader, 10)
    pcm = read_recording(tmp_path)
    left, right = pcm[:, 0].astype(np.float64), pcm[:, 1].astype(np.float64)

    def rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0

    user_part = slice(round(0.1 * 16000), round(0.5 * 16000))  # the user speaks, 0-0.6 s
    assert rms(left[user_part]) > 1000 and rms(right[user_part]) < 50
    # the agent's reply is on the right: as many voiced 20 ms blocks as voiced frames sent
    blocks = right[: len(right) // 320 * 320].reshape(-1, 320)
    voiced = int(np.count_nonzero(np.sqrt((blocks**2).mean(axis=1)) > 1000))
    sent = [np.frombuffer(f, dtype="<i2").astype(np.float64) for _, f in call.audio]
    voiced_sent = sum(rms(f) > 1000 for f in sent)
    assert voiced_sent > 10 and abs(voiced - voiced_sent) <= 2
    start = np.flatnonzero(np.abs(right) > 1000)[0]
    assert start > 0.6 * 16000  # after the user's speech
    agent_part = slice(start, start + round(0.3 * 16000))
    assert rms(right[agent_part]) > 1000 and rms(left[agent_part]) < 50  # the user is silent


def test_record_dir_must_be_a_folder(tmp_path: Path) -> None:
    agent = CallableAgent(lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="not a folder"):
        create_app(agent, record_dir=tmp_path / "missing")


@pytest.mark.virtual_time
async def test_barge_in_sends_clear_before_newer_audio() -> None:
    script, replies = ("tell me", "stop now"), (LONG, "Okay.")
    async with server(script, replies) as (host, _app, _d), connect(f"ws://{host}/ws/agent") as ws:
        call = Call(ws)
        reader = asyncio.create_task(call.collect())
        await push(ws, 0.6, loud=True)
        await push(ws, 0.4, loud=False)
        await until(lambda: any(e.get("state") == "speaking" for e in call.of("state")))
        await push(ws, 0.8, loud=False)
        await push(ws, 0.8, loud=True)  # over the agent
        await push(ws, 0.5, loud=False)
        await until(lambda: len(call.of("turn")) == 2)
        [clear] = call.of("clear")
        at = call.events.index(clear)
        [cut] = call.of("interrupted")
        assert cut["text"] and LONG.startswith(cut["text"]) and cut["text"] != LONG
        # audio after the clear is all of the new turn: the old reply's audio stopped
        after = [frame for seen, frame in call.audio if seen > at]
        okay_audio = sum(len(f) for f in after) / 32000
        assert 0.1 < okay_audio < 1.0  # "Okay." is a short tone; nothing of LONG
        await ws.close()
        await asyncio.wait_for(reader, 10)


@pytest.mark.parametrize(
    ("message", "code"),
    [(b"\x00" * 33, 1008), (b"\x00" * 40_000, 1009), ("not json", 1008), ('{"type": "x"}', 1008)],
)
@pytest.mark.virtual_time
async def test_bad_messages_close_with_the_right_code(message: bytes | str, code: int) -> None:
    async with server() as (host, _app, _d), connect(f"ws://{host}/ws/agent") as ws:
        await ws.recv()  # ready
        await ws.send(message)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
        assert ws.close_code == code


@pytest.mark.virtual_time
async def test_token_is_required_when_configured() -> None:
    async with server(token="s3cret") as (host, _app, _d):
        async with connect(f"ws://{host}/ws/agent") as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4401
        async with connect(f"ws://{host}/ws/agent?token=s3cret") as ws:
            ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ready["type"] == "ready"


@pytest.mark.virtual_time
async def test_session_limit_and_rate_limit() -> None:
    limits = EdgeLimits(max_messages_per_second=20, burst_seconds=1.0)
    async with (
        server(max_sessions=1, limits=limits) as (host, _app, _d),
        connect(f"ws://{host}/ws/agent") as first,
    ):
        await first.recv()
        async with connect(f"ws://{host}/ws/agent") as second:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(second.recv(), 10)
            assert second.close_code == 1013
        for _ in range(50):  # far above 20 messages per second
            await first.send(b"\x00\x00" * 320)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await first.recv()
        assert first.close_code == 4429


@pytest.mark.virtual_time
async def test_graceful_shutdown_drains_then_ends_calls() -> None:
    async with server(("talk",), (LONG,), drain_timeout=0.5) as (host, app, doubles):
        async with connect(f"ws://{host}/ws/agent") as ws:
            call = Call(ws)
            reader = asyncio.create_task(call.collect())
            await until(lambda: call.of("ready"))
            ended = await app.state.calls.drain(0.5)
            assert ended == 1
            await asyncio.wait_for(reader, 10)
            assert ws.close_code == 1001
            async with httpx.AsyncClient() as client:
                health = await client.get(f"http://{host}/healthz")
            assert health.status_code == 503 and health.json()["ok"] is False
        async with connect(f"ws://{host}/ws/agent") as late:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(late.recv(), 10)
            assert late.close_code == 1013
        assert all(s.state.value == "closed" for s in doubles.sessions)


@pytest.mark.virtual_time
async def test_healthz_and_metrics() -> None:
    async with server() as (host, _app, _d), httpx.AsyncClient() as client:
        health = await client.get(f"http://{host}/healthz")
        assert health.json() == {
            "ok": True,
            "active_sessions": 0,
            "max_sessions": 100,
            "total_sessions": 0,
        }
        metrics = await client.get(f"http://{host}/metrics")
        assert metrics.status_code == 200
        assert "antiphon_agent_turns" in metrics.text
        assert metrics.headers["content-type"].startswith("text/plain")


def test_agent_file_must_define_an_agent(tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="must define `agent`"):
        load_agent_file(empty)
    with pytest.raises(ConfigError, match="does not exist"):
        load_agent_file(tmp_path / "missing.py")
    good = tmp_path / "good.py"
    good.write_text(
        "from antiphon.server.agents import PipelineAgent\n"
        "from antiphon.agent.pipeline import PipelineSpec\n"
        "agent = PipelineAgent(PipelineSpec(vad='webrtc'), greeting='')\n"
    )
    agent = load_agent_file(good)
    assert agent.spec.vad == "webrtc"  # type: ignore[attr-defined]


async def test_antiphon_serve_runs_the_offline_agent_and_stops_on_sigterm() -> None:
    import signal
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "antiphon.cli", "serve", "--port", str(port), "--vad", "webrtc",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient() as client:

            async def healthy() -> bool:
                try:
                    r = await client.get(f"http://127.0.0.1:{port}/healthz")
                except httpx.TransportError:
                    return False
                return r.status_code == 200

            async with asyncio.timeout(60):
                while True:  # the server is starting in another process
                    if await healthy():
                        break
                    await asyncio.sleep(0.2)
            async with connect(f"ws://127.0.0.1:{port}/ws/agent") as ws:
                ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert ready["type"] == "ready"
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
        assert b"Application shutdown complete" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_python_dash_m_serve_with_an_agent_file_answers_a_turn(tmp_path: Path) -> None:
    """``python -m antiphon.cli serve agent.py``: a call through it gets its reply's audio."""
    import socket
    import sys

    agent_file = tmp_path / "agent.py"
    agent_file.write_text(
        "from antiphon.testing.agent import doubles_agent\n"
        "agent = doubles_agent(['hello there'], ['Hi! How can I help?'])\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "antiphon.cli", "serve", str(agent_file), "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            while True:  # the server is starting in another process
                try:
                    ws = await connect(f"ws://127.0.0.1:{port}/ws/agent")
                    break
                except OSError:
                    await asyncio.sleep(0.2)
        async with ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "ready"
            frames = speech(0.6).split(0.02) + silence(1.0).split(0.02)
            for frame in frames:  # at the pace of a caller
                await ws.send(frame.data)
                await asyncio.sleep(0.02)
            said: list[str] = []
            async with asyncio.timeout(30):
                async for message in ws:  # until the reply's first audio
                    if isinstance(message, bytes):
                        break
                    event = json.loads(message)
                    if event["type"] == "transcript" and event["final"]:
                        said.append(f"{event['role']}: {event['text']}")
            assert said[0] == "user: hello there"  # heard, then answered (the audio)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


@pytest.mark.virtual_time
async def test_webrtc_offer_is_checked() -> None:
    async with server(token="s3cret") as (host, app, _d), httpx.AsyncClient() as client:
        no_token = await client.post(f"http://{host}/webrtc/offer", json={})
        assert no_token.status_code == 401
        bad = await client.post(
            f"http://{host}/webrtc/offer?token=s3cret",
            content=b"{",
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400 and "offer" in bad.json()["error"]
        not_sdp = await client.post(
            f"http://{host}/webrtc/offer?token=s3cret", json={"type": "offer", "sdp": "nonsense"}
        )
        assert not_sdp.status_code == 400 and "cannot answer" in not_sdp.json()["error"]
        assert not app.state.calls.calls  # nothing left behind
