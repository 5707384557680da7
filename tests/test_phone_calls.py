"""Phone calls that hold up: many Twilio callers at once, barge-in, admission, memory.

The callers are :class:`~antiphon.testing.twilio.SimulatedTwilioCall` on a line that never
pauses (``line=True``), against the real ASGI app on the in-process doubles. Nothing
here asserts a wall-clock bound: latencies are the bench's (``bench/phone.py``).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import threading
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from antiphon.agent.events import (
    AgentPaused,
    AgentResumed,
    AgentSpeaking,
    Interrupted,
    TurnUnanswered,
    UserTurnEnded,
)
from antiphon.agent.session import UNANSWERED_FALLBACK, AgentSession
from antiphon.protocols import twilio as tw
from antiphon.server.agents import CallableAgent
from antiphon.server.app import create_app
from antiphon.services.stt import Hypothesis, InProcessSTT, Recognizer, STTDeadlines
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import (
    EnergyVAD,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    doubles_agent,
    silence,
    speech,
)
from antiphon.testing.asgi import serve_app
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.twilio import SimulatedTwilioCall
from antiphon.transports.twilio import TwilioBridge


@asynccontextmanager
async def phone_server(agent: Any, **kwargs: Any) -> AsyncIterator[str]:
    leaks = LeakCheck()
    app = create_app(agent, **kwargs)
    async with serve_app(app) as host, asyncio.timeout(90):
        yield host
    await leaks.assert_clean(settle=1.0)


def answered(call: SimulatedTwilioCall, n: int) -> bool:
    return len(turns(call)) >= n


def turns(call: SimulatedTwilioCall) -> list[str]:
    """The turn marks Twilio echoed (not the bridge's playout marks)."""
    return [m for m in call.received.marks if m.startswith("turn-")]


async def test_many_callers_at_once_are_all_answered_and_barge_in_clears() -> None:
    callers = 6
    reply = "Here is the answer to your question, said slowly enough to talk over."
    agent = doubles_agent(["a question"] * 40, [], default_reply=reply)

    async def one(host: str, i: int) -> SimulatedTwilioCall:
        async with SimulatedTwilioCall(f"ws://{host}/twilio/media", line=True) as call:
            for q in range(2):
                await call.say(speech(0.5, 8000, freq=300 + 40 * i))
                await until(partial(answered, call, q + 1), 30)  # answered and played
            # barge in: talk over the third answer as soon as it starts
            asked = await call.say(speech(0.5, 8000))
            await until(lambda: call.received.first_media_after(asked.end) is not None, 30)
            over = await call.say(speech(0.8, 8000, freq=450))
            await until(lambda: call.received.first_clear_after(over.onset) is not None, 30)
            await until(lambda: call.received.first_media_after(over.end) is not None, 30)
            await call.hang_up()
            return call

    async with phone_server(agent) as host:
        calls = await asyncio.gather(*(one(host, i) for i in range(callers)))
    for call in calls:
        assert turns(call)[:2] == ["turn-1", "turn-2"]
        assert call.received.clears == 1  # one clear for the barge-in, sent at the pause
        at = call.received.events.index("clear")
        assert "media" in call.received.events[at:]  # the reply to the talk-over came


async def test_a_false_interruption_resumes_from_what_the_caller_had_not_heard() -> None:
    reply = "This answer is long, and a cough over it must not lose a single word of it."
    agent = doubles_agent(["a question"] * 5, [], default_reply=reply, min_silence=0.3)
    async with (
        phone_server(agent) as host,
        SimulatedTwilioCall(f"ws://{host}/twilio/media", line=True) as call,
    ):
        asked = await call.say(speech(0.5, 8000))
        await until(lambda: call.received.first_media_after(asked.end) is not None, 30)
        await until(lambda: call.received.played >= 25, 30)  # half a second heard
        cough = await call.say(speech(0.12, 8000, freq=500))  # shorter than min_duration
        await until(lambda: call.received.first_clear_after(cough.onset) is not None, 30)
        await until(lambda: len(turns(call)) == 1, 30)
        got = call.received
        assert got.clears == 1 and got.dropped > 0  # the carrier's buffer was cleared
        # every frame of the reply was heard, its last one too (the converter is flushed
        # at the turn's end), the cleared ones sent again: at least once, and twice at most
        # the frames whose playout mark had not come back when the clear came (a mark
        # follows every second frame, echoed once the frame before it has played: the
        # frame playing then, the one before it, and one more while an echo is on its way)
        frames = round(len(reply) * 0.06 / 0.02)
        assert 0 <= got.played - frames <= 3
        assert len(got.media) == got.played + got.dropped


def capacity_agent(capacity: int) -> CallableAgent:
    agent = doubles_agent([], [])
    agent.capacity = capacity  # type: ignore[attr-defined]
    return agent


async def test_calls_beyond_the_agents_capacity_are_refused_and_healthz_says_full() -> None:
    async with (
        phone_server(capacity_agent(2)) as host,
        httpx.AsyncClient(base_url=f"http://{host}") as http,
    ):
        assert (await http.get("/healthz")).json()["max_sessions"] == 2
        async with (
            SimulatedTwilioCall(f"ws://{host}/twilio/media", line=True),
            SimulatedTwilioCall(f"ws://{host}/twilio/media", line=True),
        ):
            await _wait_status(http, 503)  # full: not ready for another call
            async with connect(f"ws://{host}/twilio/media") as third:
                # the edge admits a Twilio stream at its start message (docs/server.md)
                sid = "MZ" + "3" * 32
                start = {"accountSid": "AC" + "0" * 32, "streamSid": sid, "callSid": "CA1"}
                await third.send(json.dumps({"event": "connected", "protocol": "Call"}))
                await third.send(json.dumps({"event": "start", "streamSid": sid, "start": start}))
                await asyncio.wait_for(third.wait_closed(), 10)
                assert third.close_code == 1013  # refused at once, not failed later
        await _wait_status(http, 200)


async def _wait_status(http: httpx.AsyncClient, status: int) -> None:
    codes: list[int] = []

    async def probe() -> None:
        codes.append((await http.get("/healthz")).status_code)

    async with asyncio.timeout(20):
        await probe()
        while codes[-1] != status:
            await asyncio.sleep(0.05)
            await probe()


async def test_max_sessions_given_wins_over_the_capacity() -> None:
    async with (
        phone_server(capacity_agent(2), max_sessions=7) as host,
        httpx.AsyncClient(base_url=f"http://{host}") as http,
    ):
        assert (await http.get("/healthz")).json()["max_sessions"] == 7


# ------------------------------------------------------------------ the bridge, in memory


class TwilioPeer:
    """The server side of a Twilio socket in memory: messages in, sent messages kept."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    async def receive(self) -> bytes | str | None:
        return await self.inbox.get()

    async def send_bytes(self, data: bytes) -> None:
        raise AssertionError("Twilio gets text")

    async def send_text(self, data: str) -> None:
        self.sent.append(json.loads(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


START = json.dumps(
    {
        "event": "start",
        "streamSid": "MZ1",
        "start": {
            "streamSid": "MZ1",
            "callSid": "CA1",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
)


def doubles_session() -> tuple[AgentSession, list[Any]]:
    services: list[Any] = [ScriptedSTT([]), ScriptedLLM([]), ToneTTS()]
    vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.3))
    s = AgentSession(vad=vad, stt=services[0], llm=services[1], tts=services[2])
    return s, services


async def test_the_bridge_sends_at_most_max_ahead_beyond_what_was_played() -> None:
    s, services = doubles_session()
    peer = TwilioPeer()
    bridge = TwilioBridge(s, peer, max_ahead=0.1, mark_every=2)
    peer.inbox.put_nowait(START)
    await s.start()
    run = asyncio.create_task(bridge.run())
    s.say("A reply long enough to run far ahead of the caller if nothing held it back.")

    def media() -> int:
        return sum(1 for m in peer.sent if m["event"] == "media")

    # 100 ms is 5 frames (a 16 kHz frame may give its 8 kHz frame with the next: +1)
    await until(lambda: media() >= 5, 20)
    await asyncio.sleep(0.3)  # paced frames keep coming; none may be sent
    assert 5 <= media() <= 6  # nothing echoed: nothing more sent
    marks = [m["mark"]["name"] for m in peer.sent if m["event"] == "mark"]
    assert marks[:2] == ["p0.2", "p0.4"]
    peer.inbox.put_nowait(
        json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "p0.4"}})
    )
    await until(lambda: media() >= 9, 20)  # again 100 ms ahead of frame 4
    await asyncio.sleep(0.3)
    assert 9 <= media() <= 10
    # a pause clears the carrier; the frames not yet played are sent again on resume
    unplayed = [m["media"]["payload"] for m in peer.sent if m["event"] == "media"][4:]
    assert len(unplayed) in (5, 6)
    bridge._on_event(AgentPaused(1))
    await until(lambda: peer.sent[-1]["event"] == "clear", 20)
    cleared_at = len(peer.sent)
    bridge._on_event(AgentResumed(1))
    await until(lambda: media() >= 13, 20)
    again = [m["media"]["payload"] for m in peer.sent[cleared_at:] if m["event"] == "media"]
    assert again[: len(unplayed)] == unplayed
    # an interruption right after a pause clears once, not twice
    bridge._on_event(AgentPaused(1))
    bridge._on_event(Interrupted(0.1, 1.0, "", 1))
    await asyncio.sleep(0)
    assert bridge.clears == 2
    peer.inbox.put_nowait(None)
    await asyncio.wait_for(run, 20)
    for service in services:
        await service.aclose()


async def test_a_pause_sends_the_clear_before_audio_still_queued_and_holds_that_audio() -> None:
    """Frames queued but not yet sent at a pause would only reach Twilio ahead of the
    clear, to be dropped by it: the clear goes out first; the frames are sent on resume."""

    class SlowPeer(TwilioPeer):  # sending media waits until the gate opens
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()

        async def send_text(self, data: str) -> None:
            if '"media"' in data:
                await self.gate.wait()
            await super().send_text(data)

    s, services = doubles_session()
    peer = SlowPeer()
    bridge = TwilioBridge(s, peer, max_ahead=0.1, mark_every=2)
    peer.inbox.put_nowait(START)
    await s.start()
    run = asyncio.create_task(bridge.run())
    s.say("A reply long enough to queue a few frames while the socket is slow.")
    await until(lambda: bridge._sent >= 4, 20)  # one media in flight, the rest queued
    bridge._on_event(AgentPaused(1))
    held = list(bridge._held)
    assert len(held) >= 4
    peer.gate.set()
    await until(lambda: bridge.clears == 1 and any(m["event"] == "clear" for m in peer.sent), 20)
    before = peer.sent[: next(i for i, m in enumerate(peer.sent) if m["event"] == "clear")]
    assert sum(1 for m in before if m["event"] == "media") <= 1  # only one in flight
    cleared_at = len(peer.sent)
    bridge._on_event(AgentResumed(1))
    await until(
        lambda: sum(1 for m in peer.sent[cleared_at:] if m["event"] == "media") >= len(held), 20
    )
    again = [m["media"]["payload"] for m in peer.sent[cleared_at:] if m["event"] == "media"]
    assert again[: len(held)] == [base64.b64encode(f).decode() for f in held]  # none lost
    peer.inbox.put_nowait(None)
    await asyncio.wait_for(run, 20)
    for service in services:
        await service.aclose()


async def test_a_peer_that_never_echoes_marks_still_gets_the_whole_reply() -> None:
    s, services = doubles_session()
    peer = TwilioPeer()
    bridge = TwilioBridge(s, peer, max_ahead=0.1, mark_timeout=0.2)
    peer.inbox.put_nowait(START)
    await s.start()
    run = asyncio.create_task(bridge.run())
    text = "Nobody echoes my marks."
    s.say(text)
    frames = round(len(text) * 0.06 / 0.02) - 3  # less the resampler's tail
    await until(lambda: sum(1 for m in peer.sent if m["event"] == "media") >= frames, 30)
    peer.inbox.put_nowait(None)
    await asyncio.wait_for(run, 20)
    for service in services:
        await service.aclose()


# ------------------------------------------------------------------ memory per call


async def test_memory_is_flat_over_fifty_sequential_calls() -> None:
    """50 calls through the bridge on one set of shared services: Python memory after
    the 55th is within 5 MB of after the 5th (it grew by 3.6 MB a call before)."""
    services: list[Any] = [ScriptedSTT(["hello"] * 60), ScriptedLLM([], default="Fine."), ToneTTS()]
    call_audio = [
        json.dumps(
            {
                "event": "media",
                "streamSid": "MZ1",
                "media": {
                    "track": "inbound",
                    "chunk": str(i + 1),
                    "timestamp": str(20 * i),
                    "payload": payload,
                },
            }
        )
        for i, payload in enumerate(_payloads(speech(0.3, 8000).data + silence(0.5, 8000).data))
    ]

    async def one_call() -> None:
        vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.3))
        s = AgentSession(vad=vad, stt=services[0], llm=services[1], tts=services[2])
        peer = TwilioPeer()
        bridge = TwilioBridge(s, peer, mark_timeout=0.05)
        peer.inbox.put_nowait(START)
        for m in call_audio:
            peer.inbox.put_nowait(m)
        await s.start()
        run = asyncio.create_task(bridge.run())
        await until(lambda: any(m["event"] == "media" for m in peer.sent), 20)
        peer.inbox.put_nowait(json.dumps({"event": "stop", "stop": {"callSid": "CA1"}}))
        assert await asyncio.wait_for(run, 20) == 1000

    tracemalloc.start()
    try:
        for _ in range(5):
            await one_call()
        gc.collect()
        after_5 = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            await one_call()
        gc.collect()
        after_55 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        for service in services:
            await service.aclose()
    grown = (after_55 - after_5) / 1e6
    assert grown < 5.0, f"memory grew {grown:.1f} MB over 50 calls"


async def test_each_call_gives_its_silero_detector_back_when_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The native half of "no growth per call": a PipelineAgent's call releases its VAD
    model (a Silero detector: ~2.5 MB resident, ~90 MB mapped) when its session closes,
    not when garbage collection finds the call's objects, which sit in reference cycles
    until a full collection, rare on a server full of long-lived objects (before, each
    call loaded a detector of its own: +3.5 MB RSS a call). With collection off, 20
    sequential calls load one detector."""
    from antiphon.agent.pipeline import Services
    from antiphon.aio.worker import BatchWorker
    from antiphon.plugins.silero import vad as silero
    from antiphon.server import agents

    made = 0
    load = silero._detector

    def counting(path: Any) -> Any:
        nonlocal made
        made += 1
        return load(path)

    monkeypatch.setattr(silero, "_detector", counting)
    monkeypatch.setattr(silero, "_pool", [])
    worker = BatchWorker("test-vad")
    services = Services(
        vad=EnergyVAD(),
        stt=ScriptedSTT(["hello"] * 30),
        llm=ScriptedLLM([], default="Fine."),
        tts=ToneTTS(),
        tools=(),
        vad_worker=worker,
    )

    async def open_doubles(*args: Any, **kwargs: Any) -> Services:
        return services

    monkeypatch.setattr(agents, "open_services", open_doubles)
    from antiphon.agent.pipeline import PipelineSpec

    # the ggml Silero on the worker
    agent = agents.PipelineAgent(PipelineSpec(vad="silero-ggml"), greeting="", output_rate=8000)
    await agent.start()
    media = [_media(i, p) for i, p in enumerate(_payloads(speech(0.3, 8000).data))]
    stop = json.dumps({"event": "stop", "stop": {"callSid": "CA1"}})
    gc.disable()
    try:
        for _ in range(20):
            session = agent.new_session()
            peer = TwilioPeer()
            bridge = TwilioBridge(session, peer, mark_timeout=0.05)
            for message in (START, *media, stop):
                peer.inbox.put_nowait(message)
            await session.start()
            assert await asyncio.wait_for(bridge.run(), 20) == 1000
    finally:
        gc.enable()
        await agent.aclose()
        for service in (services.stt, services.llm, services.tts):
            await service.aclose()
        assert await worker.aclose(5.0)
    assert made == 1


def _media(i: int, payload: str) -> str:
    return json.dumps(
        {
            "event": "media",
            "streamSid": "MZ1",
            "media": {
                "track": "inbound",
                "chunk": str(i + 1),
                "timestamp": str(20 * i),
                "payload": payload,
            },
        }
    )


def _payloads(pcm: bytes) -> list[str]:
    import base64

    from antiphon.audio.codecs import ulaw_encode

    ulaw = ulaw_encode(pcm)
    return [
        base64.b64encode(ulaw[i : i + tw.FRAME_BYTES]).decode()
        for i in range(0, len(ulaw), tw.FRAME_BYTES)
    ]


@pytest.fixture(autouse=True)
def _quiet_marks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="antiphon.transports.twilio")


# ------------------------------------------------------------------ never silence


class _SlowRecognizer:
    """Hears every utterance as "hello", but its final takes ``release`` to come."""

    sample_rate = 16000

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def start(self) -> None:
        pass

    def process(self, pcm: bytes) -> None:
        pass

    def partial(self) -> Hypothesis | None:
        return None

    def finish(self) -> Hypothesis | None:
        self.release.wait(10)  # a starved, backlogged engine
        return Hypothesis("hello", 0.0, 0.1, 0.9)

    def close(self) -> None:
        pass


class _SlowSTT(InProcessSTT):
    provider = "slow"
    engine_rate = 16000

    def __init__(self) -> None:
        super().__init__(deadlines=STTDeadlines(final=0.5, close=0.5), interim_interval=0)
        self.release = threading.Event()

    def make_recognizer(self) -> Recognizer:
        return _SlowRecognizer(self.release)


async def test_a_turn_the_recogniser_cannot_finish_in_its_budget_gets_a_spoken_fallback() -> None:
    stt = _SlowSTT()
    llm, tts = ScriptedLLM([]), ToneTTS()
    vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.3))
    try:
        async with AgentSession(vad=vad, stt=stt, llm=llm, tts=tts) as s:
            events = s.events()
            for frame in [*speech(0.4).split(0.02), *silence(0.5).split(0.02)]:
                s.push_audio(frame)
            seen: list[object] = []
            async with asyncio.timeout(20):
                async for ev in events:
                    seen.append(ev)
                    if isinstance(ev, AgentSpeaking):
                        break
            unanswered = [e for e in seen if isinstance(e, TurnUnanswered)]
            assert len(unanswered) == 1  # typed, not silence
            spoken = [e for e in seen if isinstance(e, AgentSpeaking)]
            assert UNANSWERED_FALLBACK.startswith(spoken[0].text)  # its first sentence
            assert not any(isinstance(e, UserTurnEnded) for e in seen)
    finally:
        stt.release.set()
        for service in (stt, llm, tts):
            await service.aclose()


async def test_pocketsphinx_in_a_child_process_recognises_and_leaves_no_process() -> None:
    import multiprocessing
    from pathlib import Path

    from antiphon.audio.wav import read_wav
    from antiphon.plugins.pocketsphinx import PocketsphinxSTT

    question = read_wav(Path(__file__).parent.parent / "examples" / "question.wav")
    async with PocketsphinxSTT(child_process=True, max_engines=1) as stt:
        (final,) = await stt.recognize(question)
        assert final.text == "what can you do"
        assert len(multiprocessing.active_children()) == 1
    assert multiprocessing.active_children() == []  # closed and joined


class EchoingPeer(TwilioPeer):
    """A carrier that plays what it gets and echoes each playout mark ``echo`` seconds
    after receiving it (its playout buffer and the network's round trip)."""

    def __init__(self, echo: float) -> None:
        super().__init__()
        self.echo = echo
        self.media_at: list[float] = []  # when each media message was sent

    async def send_text(self, data: str) -> None:
        await super().send_text(data)
        msg = self.sent[-1]
        loop = asyncio.get_running_loop()
        if msg["event"] == "media":
            self.media_at.append(loop.time())
        elif msg["event"] == "mark":
            echo = json.dumps({"event": "mark", "streamSid": "MZ1", "mark": msg["mark"]})
            loop.call_later(self.echo, self.inbox.put_nowait, echo)


@pytest.mark.virtual_time
@pytest.mark.parametrize(("max_ahead", "steady"), [(None, True), (0.1, False)])
async def test_marks_echoed_a_round_trip_later_do_not_hold_the_audio_back(
    max_ahead: float | None, steady: bool
) -> None:
    """A real carrier echoes a mark when the audio before it has played, plus the round
    trip: 150 ms here. The default window (``max_ahead``, 0.3 s) covers that, so every
    frame goes out at its paced time; a 100 ms window (the old default) would stall the
    audio on every mark, and the caller hears gaps."""
    s, services = doubles_session()
    peer = EchoingPeer(echo=0.15)
    if max_ahead is None:
        bridge = TwilioBridge(s, peer, mark_every=2)
    else:
        bridge = TwilioBridge(s, peer, mark_every=2, max_ahead=max_ahead)
    peer.inbox.put_nowait(START)
    await s.start()
    run = asyncio.create_task(bridge.run())
    s.say("A reply of a few seconds, long enough to show whether the audio ever stalls.")
    await until(lambda: len(peer.media_at) >= 100, 20)
    gaps = [b - a for a, b in zip(peer.media_at[20:100], peer.media_at[21:100], strict=False)]
    if steady:
        assert max(gaps) < 0.03  # one 20 ms frame after the other
    else:
        assert max(gaps) > 0.05  # the pump waited for an echo
    peer.inbox.put_nowait(None)
    await asyncio.wait_for(run, 20)
    for service in services:
        await service.aclose()
