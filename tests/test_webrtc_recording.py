"""Recording a WebRTC call: the caller left, the agent right, aligned; kept when the call's
task is cancelled mid-reply.

The call runs on :class:`~antiphon.transports.webrtc.WebRTCCall` with its real taps: the
caller's track is read by the call's own reader, and the agent's track is pulled the way
aiortc's RTP sender pulls it (``recv()`` every 20 ms); only the network between two peer
connections is left out. Virtual time: the track's pacing and the session share the
loop's clock. The server's wiring (``record_dir``) is checked on a real offer, in real
time (aiortc's ICE agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import wave
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame as AvFrame

from antiphon.agent.session import AgentSession
from antiphon.audio.recording import CallRecorder
from antiphon.server.app import create_app
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import (
    EnergyVAD,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    doubles_agent,
    speech,
)
from antiphon.testing.asgi import serve_app
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.transports.limits import EdgeLimits
from antiphon.transports.webrtc import RATE, WebRTCCall

SAMPLES = 960  # 20 ms at 48 kHz


class CallerTrack:
    """The caller's microphone as aiortc hands it over: 48 kHz frames every 20 ms, a
    tone for ``speak`` seconds, then silence for ``then`` seconds; then the track ends."""

    kind = "audio"

    def __init__(self, speak: float, then: float) -> None:
        tone = speech(speak, RATE).data
        self._pcm = tone + bytes(round(then * RATE) * 2)
        self._pos = 0
        self._pts = 0

    async def recv(self) -> AvFrame:
        await asyncio.sleep(0.02)
        chunk = self._pcm[self._pos : self._pos + SAMPLES * 2]
        if len(chunk) < SAMPLES * 2:
            raise MediaStreamError
        self._pos += len(chunk)
        frame = AvFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(chunk)
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += SAMPLES
        return frame


async def _pull(call: WebRTCCall, sent: list[bytes]) -> None:
    """What aiortc's sender does with the agent's track: recv() until it ends."""
    with contextlib.suppress(MediaStreamError):
        while True:
            frame = await call.track.recv()
            sent.append(bytes(frame.planes[0])[: SAMPLES * 2])


def _session(reply: str) -> tuple[AgentSession, list[object]]:
    stt, llm, tts = ScriptedSTT(["hello"]), ScriptedLLM([reply]), ToneTTS()
    vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.4))
    return AgentSession(vad=vad, stt=stt, llm=llm, tts=tts), [stt, llm, tts]


def _read(path: Path) -> npt.NDArray[np.float64]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 16000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return pcm.astype(np.float64)


def _voiced(x: npt.NDArray[np.float64], block: int = 320) -> npt.NDArray[np.bool_]:
    blocks = x[: len(x) // block * block].reshape(-1, block)
    return np.asarray(np.sqrt((blocks**2).mean(axis=1)) > 1000)


def _voiced_sent(sent: list[bytes]) -> int:
    return sum(
        float(np.sqrt(np.mean(np.frombuffer(f, "<i2").astype(np.float64) ** 2))) > 1000
        for f in sent
    )


async def _call(reply: str, path: Path, track: CallerTrack) -> tuple[WebRTCCall, list[object]]:
    session, services = _session(reply)
    call = WebRTCCall(session, recorder=CallRecorder(path))
    await session.start()
    call._reader = asyncio.get_running_loop().create_task(call._read(track))
    return call, services


@pytest.mark.virtual_time
async def test_a_recorded_webrtc_call_has_the_caller_left_and_the_agent_right(
    tmp_path: Path,
) -> None:
    leaks = LeakCheck()
    path = tmp_path / "webrtc.wav"
    call, services = await _call("Hello from the browser.", path, CallerTrack(0.6, 3.0))
    sent: list[bytes] = []
    pull = asyncio.get_running_loop().create_task(_pull(call, sent))
    try:
        async with asyncio.timeout(30):
            await call.wait()  # the caller's track ended after 3.6 s
    finally:
        await call.aclose()
        pull.cancel()
        await asyncio.gather(pull, return_exceptions=True)
        for service in services:
            await service.aclose()  # type: ignore[attr-defined]
    await leaks.assert_clean(settle=1.0)
    pcm = _read(path)
    user, agent = _voiced(pcm[:, 0]), _voiced(pcm[:, 1])
    assert 25 <= int(user[:40].sum()) <= 31 and not agent[:30].any()
    assert abs(int(agent.sum()) - _voiced_sent(sent)) <= 3 and agent.sum() > 40
    first = int(np.flatnonzero(agent)[0])
    assert first >= 30 and not user[first:].any()  # after the caller, who was silent


@pytest.mark.virtual_time
async def test_a_webrtc_call_cancelled_mid_reply_keeps_its_recording(tmp_path: Path) -> None:
    """The call's task is cancelled (a server shutting down) while the agent talks: the
    close still runs to its end and the file holds the call up to then."""
    leaks = LeakCheck()
    path = tmp_path / "webrtc.wav"
    reply = "This is a long answer in the browser that goes on and on. " * 3
    call, services = await _call(reply, path, CallerTrack(0.6, 30.0))
    sent: list[bytes] = []
    pull = asyncio.get_running_loop().create_task(_pull(call, sent))

    async def run() -> None:
        try:
            await call.wait()
        finally:
            await call.aclose()

    task = asyncio.get_running_loop().create_task(run())
    try:
        await until(lambda: _voiced_sent(sent) >= 50, 30)  # a second of the reply went out
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert call.recorder is not None and call.recorder.closed
    finally:
        pull.cancel()
        await asyncio.gather(pull, return_exceptions=True)
        for service in services:
            await service.aclose()  # type: ignore[attr-defined]
    await leaks.assert_clean(settle=1.0)
    pcm = _read(path)
    assert int(_voiced(pcm[:, 0]).sum()) >= 25
    agent = int(_voiced(pcm[:, 1]).sum())
    assert abs(agent - _voiced_sent(sent)) <= 3
    assert agent < len(reply) * 0.06 / 0.02 / 2  # never the untold rest


@pytest.mark.realtime
@pytest.mark.timeout(120)
async def test_the_server_records_a_webrtc_call_with_record_dir(tmp_path: Path) -> None:
    """``/webrtc/offer`` with ``record_dir``: the call gets a recorder, which is closed
    when the call ends (here: never connected within its deadline), a valid WAV."""
    leaks = LeakCheck()
    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        caller.addTransceiver("audio", direction="sendrecv")
        caller.createDataChannel("events")
        await caller.setLocalDescription(await caller.createOffer())
        sdp = caller.localDescription.sdp
    finally:
        await caller.close()
    offer = "".join(
        line for line in sdp.splitlines(True) if not line.startswith(("a=candidate", "a=end-of"))
    )
    app = create_app(
        doubles_agent([], []),
        record_dir=tmp_path,
        limits=EdgeLimits(webrtc_connect_timeout=0.5),
    )
    async with serve_app(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as client:
        r = await client.post("/webrtc/offer", json={"type": "offer", "sdp": offer}, timeout=60)
        assert r.status_code == 200 and r.json()["type"] == "answer"
        await until(lambda: _recorded(tmp_path), 60)  # written when the call ended
    await leaks.assert_clean(settle=1.0)
    [path] = _recorded(tmp_path)
    assert len(_read(path)) == 0  # never connected: no audio, and a valid file


def _recorded(folder: Path) -> list[Path]:
    """The WebRTC recordings in ``folder`` that are complete WAV files."""
    done = []
    for path in folder.glob("webrtc-*.wav"):
        try:
            with wave.open(str(path)) as w:
                if w.getnchannels() == 2:
                    done.append(path)
        except (OSError, EOFError, wave.Error):
            pass
    return done
