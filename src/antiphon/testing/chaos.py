"""Call-level chaos: one fault at a time, alongside healthy calls, through the real server.

:func:`run_chaos` serves :func:`~antiphon.server.app.create_app` on loopback (uvicorn in
the caller's event loop), opens ``healthy`` calls that talk turn after turn over real
WebSockets, injects one :data:`FAULTS` entry (a faulty call, a hostile peer, or a drain)
and records, as a :class:`ChaosResult`:

- how the faulty call ended: the close code the server chose (read from the call's
  bridge, so a peer that never reads still has one) and, where the peer can see it, the
  code it got; when, on the run's clock, measured from the start of the fault;
- for each healthy call: turns answered, and the worst gap between two frames of agent
  audio within one reply, on the run's clock (a frame is stamped when the peer receives
  it);
- ``/livez`` polled throughout (status and wall latency);
- what was left afterwards: tasks, threads, sockets (:class:`~antiphon.testing.leaks.LeakCheck`)
  and calls still in the server's registry.

Two clocks. ``virtual=True`` (the test suite): the app's deadlines and every session run
on one :class:`~antiphon.aio.clock.VirtualClock`; a conductor sends each peer's next
20 ms frame, waits until the server has taken every frame and the loop is quiet, then
moves the clock 20 ms. Deadlines that the providers and tools keep on the loop's own
clock (an LLM's idle deadline, ``tool_timeout``, ``send_timeout``) still pass in real
time meanwhile. ``virtual=False`` (``bench/chaos.py``): everything on real time, frames
sent every 20 ms of the loop's clock, gaps and bounds in seconds of wall time.

The services are the doubles of :mod:`antiphon.testing.agent` (one STT per call, a
shared LLM and TTS); a provider fault swaps in a real plugin talking to its loopback
fake server with a :class:`~antiphon.testing.faults.FaultPlan` (OpenAI chat for the LLM,
Deepgram for TTS), each fake on a thread of its own started before the leak snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from antiphon.agent.options import AgentOptions, TurnOptions
from antiphon.agent.session import AgentSession
from antiphon.aio.clock import Clock, MonotonicClock, VirtualClock
from antiphon.services.llm import LLM, LLMDeadlines
from antiphon.services.stt import STT
from antiphon.services.tools import FunctionTool, function_tool
from antiphon.services.tts import TTS, TTSDeadlines
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import (
    EnergyVAD,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    ToolCallScript,
    silence,
    speech,
)
from antiphon.testing.asgi import serve_app
from antiphon.testing.faults import FaultPlan
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.vloop import time_scale
from antiphon.transports.limits import EdgeLimits

__all__ = [
    "FAULTS",
    "TURNS",
    "Chaos",
    "ChaosResult",
    "Fault",
    "HealthyCall",
    "TickClock",
    "run_chaos",
]

STEP = 0.02
SPEECH = speech(STEP).data
QUIET = silence(STEP).data
SPEAK_FRAMES = 25  # each user turn: 0.5 s of speech, then silence until it is answered
REPLY = "Sure. Here it is."
UTTERANCE = "what time is it"


# ------------------------------------------------------------------------- the clock


class TickClock(VirtualClock):
    """A :class:`VirtualClock` on a microsecond grid.

    Times computed as ``start + k * 0.02`` and a clock moved by 0.02 at a time drift
    apart by rounding: a frame due at ``4.380000000000001`` would wait for the next step
    of a clock at ``4.379999999999999``, a 20 ms gap that no server caused. Here every
    deadline and every step lands on whole microseconds.
    """

    async def sleep_until(self, when: float) -> None:
        await super().sleep_until(round(when, 6))

    async def advance(self, seconds: float) -> None:
        target = round(self.now() + seconds, 6)
        await super().advance(max(0.0, target - self.now()) + 1e-7)  # wakes all <= target
        self._now = target


# ------------------------------------------------------------------------- the agent


@dataclass
class CallPlan:
    """What the server gives one call: services to use instead of the doubles."""

    stt: STT | None = None
    llm: LLM | None = None
    tts: TTS | None = None
    tools: tuple[FunctionTool, ...] = ()
    options: AgentOptions | None = None


class ChaosAgent:
    """An :class:`~antiphon.server.agents.AgentFactory` on the doubles; the n-th call
    takes the n-th queued :class:`CallPlan` (none queued: a healthy call)."""

    def __init__(self, clock: Clock, options: AgentOptions) -> None:
        self.clock = clock
        self.options = options
        self.llm = ScriptedLLM(default=REPLY, clock=clock)
        self.tts = ToneTTS(clock=clock)
        self.plans: deque[CallPlan] = deque()
        self.services: list[STT | LLM | TTS] = [self.llm, self.tts]
        self.sessions: list[AgentSession] = []

    async def start(self) -> None:
        return None

    def new_session(self) -> AgentSession:
        plan = self.plans.popleft() if self.plans else CallPlan()
        stt = plan.stt or ScriptedSTT([UTTERANCE] * 100, clock=self.clock)
        if plan.stt is None:
            self.services.append(stt)
        vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.3))
        session = AgentSession(
            vad=vad,
            stt=stt,
            llm=plan.llm or self.llm,
            tts=plan.tts or self.tts,
            tools=plan.tools,
            options=plan.options or self.options,
            clock=self.clock,
        )
        self.sessions.append(session)
        return session

    def queue(self, plan: CallPlan) -> None:
        """The next call gets ``plan``; its services are closed with the agent."""
        self.plans.append(plan)
        self.services += [s for s in (plan.stt, plan.llm, plan.tts) if s is not None]

    async def aclose(self) -> None:
        for service in self.services:
            await service.aclose()


# ------------------------------------------------------------------------- the peers


@dataclass
class Peer:
    """One client of ``/ws/agent`` and what it saw."""

    name: str
    talk_turns: int = 0
    """User turns to speak (each after the previous one was answered); 0: send silence."""
    sends: bool = True
    """Send a frame every step (a peer that never sends: False)."""
    reads: bool = True
    ws: ClientConnection | None = None
    session_id: str | None = None
    bridge: Any = None
    opened_at: float = 0.0
    audio_sent: int = 0
    counted: bool = True
    """The conductor waits for the server to take every frame this peer sent."""
    events: list[dict[str, Any]] = field(default_factory=list)
    runs: list[list[float]] = field(default_factory=list)
    """Agent audio frames' arrival times, one list per reply (``speaking`` to its end)."""
    speaking: bool = False
    state: str = "listening"
    frames: int = 0
    turns: int = 0
    started: int = 0
    speak_left: int = 0
    ending: bool = False
    close_code: int | None = None
    close_reason: str | None = None
    closed_at: float | None = None
    server_code: int | None = None
    server_reason: str | None = None
    server_ended_at: float | None = None
    reader: asyncio.Task[None] | None = None

    def next_frame(self) -> bytes | None:
        if not self.sends or self.ending or self.closed_at is not None:
            return None
        if self.speak_left > 0:
            self.speak_left -= 1
            return SPEECH
        if (
            self.started < self.talk_turns
            and self.turns >= self.started
            and self.state == "listening"
        ):
            self.started += 1
            self.speak_left = SPEAK_FRAMES - 1
            return SPEECH
        return QUIET

    @property
    def answered(self) -> bool:
        return self.turns >= self.talk_turns

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    def worst_gap(self) -> float:
        gaps = [b - a for run in self.runs for a, b in itertools.pairwise(run)]
        return max(gaps, default=0.0)

    def on_message(self, message: bytes | str, now: float) -> None:
        if isinstance(message, bytes):
            self.frames += 1
            if not self.speaking:  # audio outside a reply (say, error message)
                self.speaking = True
                self.runs.append([])
            self.runs[-1].append(now)
            return
        event = json.loads(message)
        self.events.append(event)
        kind = event.get("type")
        if kind == "state":
            self.state = str(event.get("state"))
            speaking = self.state == "speaking"
            if speaking and not self.speaking:
                self.runs.append([])
            self.speaking = speaking
        elif kind == "turn" and event["metrics"].get("user_text"):
            self.turns += 1  # a user turn answered (not the error message's own turn)


# ------------------------------------------------------------------------ the result


@dataclass
class HealthyCall:
    name: str
    turns: int
    wanted: int
    worst_gap: float
    close_code: int | None
    server_code: int | None


@dataclass
class ChaosResult:
    """One fault's run (see the module docstring)."""

    fault: str
    virtual: bool
    code: int | None = None
    """The faulty call's close code, as the server chose it (None: no faulty call)."""
    reason: str | None = None
    peer_code: int | None = None
    """The close code the faulty peer received (None: it could not read one)."""
    ended: float | None = None
    """Seconds from the fault's start to the faulty call's end, on the run's clock."""
    bound: float | None = None
    """The configured bound of ``ended`` (None: none applies)."""
    expected: str = ""
    notes: list[str] = field(default_factory=list)
    healthy: list[HealthyCall] = field(default_factory=list)
    livez: list[tuple[int, float]] = field(default_factory=list)
    """Every ``/livez`` answer: status, wall seconds."""
    loop_lag: float = 0.0
    """The worst lateness of a 5 ms timer of this event loop (wall seconds): how much of
    a gap the machine, not the server, caused."""
    leaks: list[str] = field(default_factory=list)
    active_after: int = 0
    wall: float = 0.0
    failure: str | None = None
    """Why the run failed (an assertion of the fault's own), None if it did not."""

    @property
    def worst_gap(self) -> float:
        return max((h.worst_gap for h in self.healthy), default=0.0)

    @property
    def livez_worst(self) -> float:
        return max((t for _, t in self.livez), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "virtual": self.virtual,
            "code": self.code,
            "reason": self.reason,
            "peer_code": self.peer_code,
            "ended": self.ended,
            "bound": self.bound,
            "expected": self.expected,
            "notes": self.notes,
            "healthy": [vars(h) for h in self.healthy],
            "worst_gap": self.worst_gap,
            "livez_count": len(self.livez),
            "livez_bad": sum(1 for s, _ in self.livez if s != 200),
            "livez_worst": self.livez_worst,
            "loop_lag": self.loop_lag,
            "leaks": self.leaks,
            "active_after": self.active_after,
            "wall": self.wall,
            "failure": self.failure,
        }


# ---------------------------------------------------------------------- the conductor


class Chaos:
    """The running server, its peers and the conductor; what a fault acts through."""

    def __init__(
        self,
        *,
        app: Any,
        host: str,
        clock: Clock,
        agent: ChaosAgent,
        limits: EdgeLimits,
        result: ChaosResult,
        fakes: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.fakes: dict[str, Any] = fakes or {}
        self.host = host
        self.clock = clock
        self.virtual = isinstance(clock, VirtualClock)
        self.agent = agent
        self.limits = limits
        self.result = result
        self.peers: list[Peer] = []
        self.fault_start = 0.0
        self._ticks = 0
        self._t0 = asyncio.get_running_loop().time()

    @property
    def registry(self) -> Any:
        return self.app.state.calls

    def bridges(self) -> dict[str, Any]:
        return {getattr(b, "id", ""): b for b in list(self.registry.calls)}

    async def open(
        self,
        name: str,
        *,
        talk_turns: int = 0,
        sends: bool = True,
        reads: bool = True,
        headers: dict[str, str] | None = None,
        sock: socket.socket | None = None,
        expect_ready: bool = True,
    ) -> Peer:
        """Connect a peer (and, unless refused, wait for its ``ready``)."""
        peer = Peer(name, talk_turns=talk_turns, sends=sends, reads=reads)
        peer.opened_at = self.clock.now()
        ws = await connect(
            f"ws://{self.host}/ws/agent",
            additional_headers=headers,
            sock=sock,
            max_queue=4 if not reads else 16,
            max_size=None,
            open_timeout=20,
            close_timeout=5,
        )
        peer.ws = ws
        self.peers.append(peer)
        if expect_ready:
            ready = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert ready["type"] == "ready", ready
            peer.session_id = str(ready["session"])
            bridge = self.bridges().get(peer.session_id)
            assert bridge is not None, "a call that said ready is in the registry"
            peer.bridge = bridge
            ended = bridge._ended
            if ended is not None:
                ended.add_done_callback(lambda f, p=peer: self._server_ended(p, f))
        if reads:
            peer.reader = asyncio.get_running_loop().create_task(
                self._read(peer), name=f"chaos-peer-{name}"
            )
        return peer

    def _server_ended(self, peer: Peer, fut: asyncio.Future[Any]) -> None:
        peer.server_ended_at = self.clock.now()
        if not fut.cancelled():
            peer.server_code, peer.server_reason = fut.result().code, fut.result().reason

    async def _read(self, peer: Peer) -> None:
        ws = peer.ws
        assert ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                peer.on_message(message, self.clock.now())
        self._closed(peer)

    def _closed(self, peer: Peer) -> None:
        ws = peer.ws
        assert ws is not None
        if peer.closed_at is None:
            peer.closed_at = self.clock.now()
            peer.close_code, peer.close_reason = ws.close_code, ws.close_reason

    def _signature(self) -> tuple[object, ...]:
        return (
            tuple((p.frames, len(p.events), p.closed_at) for p in self.peers),
            tuple(
                (b.frames_received, b.frames_sent)
                for b in self.registry.calls
                if hasattr(b, "frames_sent")
            ),
            len(self.registry.calls),
        )

    def _taken(self) -> bool:
        """The server took every frame the counted peers sent, and every reading peer
        got every frame of agent audio the server sent it."""
        for p in self.peers:
            b = p.bridge
            if b is None or b not in self.registry.calls:
                continue
            if p.counted and b.frames_received < p.audio_sent:
                return False
            if p.reads and p.frames < b.frames_sent:  # agent audio still on its way
                return False
        return True

    async def quiesce(self, *, timeout: float = 20.0) -> None:
        """Until the server took every frame sent and nothing moved for a while."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        stable, last = 0, self._signature()
        while True:
            await asyncio.sleep(0)
            now = self._signature()
            stable = stable + 1 if now == last else 0
            last = now
            if stable >= 12 and self._taken():
                return
            if stable >= 12:
                await asyncio.sleep(0.001)  # real I/O in flight
            if loop.time() > end:
                raise AssertionError(f"the server did not take the peers' audio in {timeout} s")

    async def step(self) -> None:
        """Every peer sends its next 20 ms; then 20 ms pass (virtual or real)."""
        for p in self.peers:
            frame = p.next_frame()
            if frame is None or p.ws is None:
                continue
            try:
                await p.ws.send(frame)
            except ConnectionClosed:
                if not p.reads:
                    self._closed(p)
                continue
            p.audio_sent += 1
        self._ticks += 1
        if isinstance(self.clock, VirtualClock):
            await self.quiesce()
            await self.clock.advance(STEP)
            await self.quiesce()
        else:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(max(0.0, self._t0 + self._ticks * STEP - loop.time()))

    async def run_until(
        self, predicate: Callable[[], bool], *, what: str, limit: float = 300.0, wall: float = 30.0
    ) -> None:
        """Step until ``predicate()``; fail after ``limit`` seconds of the clock or
        ``wall`` seconds of real time (deadlines kept on the loop's clock need real time),
        the latter times the CI profile's :func:`~antiphon.testing.vloop.time_scale`."""
        loop = asyncio.get_running_loop()
        wall *= time_scale()
        start, wall_end = self.clock.now(), loop.time() + wall
        while not predicate():
            if self.clock.now() - start > limit or loop.time() > wall_end:
                raise AssertionError(f"not within {limit} s of the clock or {wall} s: {what}")
            await self.step()

    def healthy(self) -> list[Peer]:
        return [p for p in self.peers if p.name.startswith("healthy")]

    async def finish(self) -> None:
        """Every peer still connected ends its call (``end``), every call closes."""
        for p in self.peers:
            if p.ws is not None and p.closed_at is None and p.reads:
                p.ending = True
                with contextlib.suppress(ConnectionClosed):
                    await p.ws.send(json.dumps({"type": "end"}))
        await self.run_until(
            lambda: (
                all(p.closed_at is not None for p in self.peers if p.reads)
                and not self.registry.calls
            ),
            what="every call closed",
        )


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    """One chaos scenario: ``act`` injects it and checks what the faulty call did."""

    name: str
    expected: str
    act: Callable[[Chaos], Awaitable[None]]
    limits: EdgeLimits = field(default_factory=EdgeLimits)
    options: AgentOptions | None = None
    fakes: tuple[str, ...] = ()
    """Loopback fake servers the fault needs: ``"openai"``, ``"deepgram-tts"``."""


TURNS = 3  # the healthy calls' turns
# short, so a stall is found soon, yet long enough for a loaded machine's healthy answer
LLM_FAST = LLMDeadlines(first_token=5.0, idle=1.5)
TTS_FAST = TTSDeadlines(first_audio=1.5, idle=1.5)


def _outcome(chaos: Chaos, peer: Peer) -> None:
    r = chaos.result
    r.code, r.reason = peer.server_code, peer.server_reason
    r.peer_code = peer.close_code
    if peer.server_ended_at is not None:
        r.ended = peer.server_ended_at - chaos.fault_start


async def _talker_recovers(
    chaos: Chaos, peer: Peer, *, error: bool, spoken: bool, answer: str = REPLY
) -> None:
    """The faulty call goes on: every turn answered, the error notice seen (or not)."""
    await chaos.run_until(lambda: peer.answered, what=f"{peer.name} answered {peer.talk_turns}")
    errors = peer.of("error")
    if error:
        assert errors and all(e["recoverable"] for e in errors), errors
        chaos.result.notes.append(f"error notices: {[e['stage'] for e in errors]}")
    else:
        assert not errors, errors
    said = " ".join(e["text"] for e in peer.of("transcript") if e["role"] == "agent")
    message = chaos.agent.options.error_message
    if spoken:
        assert message and message in said, said
    assert answer in said, said  # a normal answer came too


async def stt_drop(chaos: Chaos) -> None:
    stt = ScriptedSTT([UTTERANCE] * 10, fail_streams={0: 0.2}, clock=chaos.clock)
    chaos.agent.queue(CallPlan(stt=stt))
    peer = await chaos.open("faulty", talk_turns=2)
    await _talker_recovers(chaos, peer, error=True, spoken=False)
    assert stt.streams_opened >= 2, "a new STT stream replaced the one that dropped"
    await chaos.finish()
    _outcome(chaos, peer)


async def stt_stall(chaos: Chaos) -> None:
    stt = ScriptedSTT([UTTERANCE] * 10, silent_flushes=[0], clock=chaos.clock)
    chaos.agent.queue(CallPlan(stt=stt))
    peer = await chaos.open("faulty", talk_turns=2)
    await _talker_recovers(chaos, peer, error=False, spoken=False)
    first = peer.of("turn")[0]["metrics"]
    chaos.result.notes.append(f"turn 1 ended without a final: {first.get('user_text')!r}")
    await chaos.finish()
    _outcome(chaos, peer)


def _openai(chaos: Chaos, plan: FaultPlan) -> LLM:
    from antiphon.plugins.openai.llm import OpenAILLM
    from antiphon.testing.openai_chat import DEFAULT_API_KEY

    fake = chaos.fakes["openai"]
    fake.plan = plan
    return OpenAILLM(
        "gpt-4o-mini", api_key=DEFAULT_API_KEY, base_url=fake.base_url, deadlines=LLM_FAST
    )


async def _llm_fault(chaos: Chaos, plan: FaultPlan) -> None:
    chaos.agent.queue(CallPlan(llm=_openai(chaos, plan)))
    peer = await chaos.open("faulty", talk_turns=2)
    await chaos.run_until(lambda: bool(peer.of("error")), what="the LLM failure noticed")
    chaos.fakes["openai"].plan = FaultPlan()  # the provider is back
    await _talker_recovers(chaos, peer, error=True, spoken=True, answer="You said:")
    await chaos.finish()
    _outcome(chaos, peer)


async def llm_stall(chaos: Chaos) -> None:
    await _llm_fault(chaos, FaultPlan(chunk_interval=3600.0))


async def llm_error(chaos: Chaos) -> None:
    await _llm_fault(chaos, FaultPlan(error_mid_stream=True, close_after_chunks=2))


async def tts_stall(chaos: Chaos) -> None:
    from antiphon.plugins.deepgram.tts import DeepgramTTS
    from antiphon.testing.deepgram import DEFAULT_API_KEY

    fake = chaos.fakes["deepgram-tts"]
    fake.plan = FaultPlan(silent_after=0)
    tts = DeepgramTTS(api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=TTS_FAST)
    chaos.agent.queue(CallPlan(tts=tts))
    peer = await chaos.open("faulty", talk_turns=2)
    await chaos.run_until(lambda: bool(peer.of("error")), what="the TTS failure noticed")
    fake.plan = FaultPlan()
    await _talker_recovers(chaos, peer, error=True, spoken=False)
    await chaos.finish()
    _outcome(chaos, peer)


async def _tool_hang(chaos: Chaos, tool: FunctionTool) -> None:
    llm = ScriptedLLM([[ToolCallScript(tool.name)], "Done."], default=REPLY, clock=chaos.clock)
    # no preemptive reply: the tool call is the answer to the first request
    turn = TurnOptions(final_timeout=1.0, preemptive=False)
    options = AgentOptions(turn=turn, tool_timeout=0.5, filler_text="", drain_timeout=1.0)
    chaos.agent.queue(CallPlan(llm=llm, tools=(tool,), options=options))
    peer = await chaos.open("faulty", talk_turns=2)
    await chaos.run_until(lambda: peer.answered, what="the faulty call answered")
    said = " ".join(e["text"] for e in peer.of("transcript") if e["role"] == "agent")
    assert "Done." in said, said
    outputs = [m for r in llm.requests for m in r.messages if m.role == "tool"]
    assert outputs and "did not return within" in outputs[0].content, outputs
    await chaos.finish()
    _outcome(chaos, peer)


async def async_tool_hang(chaos: Chaos) -> None:
    @function_tool
    async def lookup() -> str:
        """Look something up (never returns)."""
        await asyncio.Event().wait()
        return "never"

    await _tool_hang(chaos, lookup)


async def sync_tool_hang(chaos: Chaos) -> None:
    release = threading.Event()

    @function_tool
    def lookup() -> str:
        """Look something up (blocks its thread until released)."""
        release.wait(60)
        return "late"

    try:
        await _tool_hang(chaos, lookup)
    finally:
        release.set()  # the thread cannot be killed: its function returns when released


async def never_sends(chaos: Chaos) -> None:
    peer = await chaos.open("faulty", sends=False)
    chaos.fault_start = peer.opened_at
    chaos.result.bound = chaos.limits.first_message_timeout
    await chaos.run_until(lambda: peer.closed_at is not None, what="the silent peer closed")
    _outcome(chaos, peer)


async def never_reads(chaos: Chaos) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
    address, port = chaos.host.split(":")
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (address, int(port)))
    peer = await chaos.open("faulty", reads=False, sock=sock)
    assert peer.ws is not None
    peer.ws.transport.pause_reading()  # nothing more is read from the socket
    # a slow network: the server's send buffer stays small (Linux would let it grow to
    # 4 MB, two minutes of agent audio, before a send blocks)
    shrunk = _shrink_send_buffer(int(port), sock.getsockname()[1], 16384)
    chaos.result.notes.append(f"server send buffer shrunk: {shrunk}")
    await peer_say(peer, "la " * 1000)  # a minute of agent audio it will never read
    await chaos.run_until(lambda: peer.server_ended_at is not None, what="the deaf peer ended")
    chaos.fault_start = peer.opened_at
    _outcome(chaos, peer)
    assert peer.ws is not None
    peer.ws.transport.abort()
    await peer.ws.wait_closed()


def _shrink_send_buffer(server_port: int, peer_port: int, size: int) -> bool:
    """Set ``SO_SNDBUF`` of this process's TCP socket ``server_port`` → ``peer_port``
    (the server's end of a call; Linux: found through /proc). False if not found."""
    wanted: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                local, remote = cols[1].rsplit(":", 1)[1], cols[2].rsplit(":", 1)[1]
                if int(local, 16) == server_port and int(remote, 16) == peer_port:
                    wanted.add(int(cols[9]))
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:[") and int(target[8:-1]) in wanted:
                dup = socket.socket(fileno=os.dup(int(fd)))
                try:
                    dup.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
                finally:
                    dup.close()
                return True
    return False


async def peer_say(peer: Peer, text: str) -> None:
    assert peer.ws is not None
    await peer.ws.send(json.dumps({"type": "say", "text": text}))


async def too_fast(chaos: Chaos) -> None:
    peer = await chaos.open("faulty", sends=False)
    peer.counted = False
    chaos.fault_start = chaos.clock.now()
    second = b"\x00\x00" * 16000  # 1 s of audio in one message, all at once
    assert peer.ws is not None
    with contextlib.suppress(ConnectionClosed):
        for _ in range(40):
            await peer.ws.send(second)
            await asyncio.sleep(0)
    await chaos.run_until(lambda: peer.closed_at is not None, what="the fast peer closed")
    _outcome(chaos, peer)


async def huge_message(chaos: Chaos) -> None:
    peer = await chaos.open("faulty", sends=False)
    peer.counted = False
    chaos.fault_start = chaos.clock.now()
    assert peer.ws is not None
    await peer.ws.send(b"\x00" * (chaos.limits.max_audio_bytes * 40))
    await chaos.run_until(lambda: peer.closed_at is not None, what="the huge message refused")
    _outcome(chaos, peer)


async def oversized_text(chaos: Chaos) -> None:
    peer = await chaos.open("faulty", sends=False)
    peer.counted = False
    chaos.fault_start = chaos.clock.now()
    assert peer.ws is not None
    text = json.dumps({"type": "say", "text": "x" * chaos.limits.max_text_bytes})
    assert len(text) < chaos.limits.max_ws_message_bytes  # read, then refused by the guard
    await peer.ws.send(text)
    await chaos.run_until(lambda: peer.closed_at is not None, what="the long text refused")
    _outcome(chaos, peer)


async def disconnect_mid_reply(chaos: Chaos) -> None:
    peer = await chaos.open("faulty", talk_turns=1)
    await chaos.run_until(lambda: peer.frames > 5, what="the faulty call's reply playing")
    chaos.fault_start = chaos.clock.now()
    assert peer.ws is not None
    peer.ws.transport.abort()  # gone: no close frame
    await chaos.run_until(lambda: peer.server_ended_at is not None, what="the call ended")
    _outcome(chaos, peer)


async def cross_origin(chaos: Chaos) -> None:
    chaos.fault_start = chaos.clock.now()
    peer = await chaos.open(
        "faulty", sends=False, headers={"Origin": "http://evil.example"}, expect_ready=False
    )
    await chaos.run_until(lambda: peer.closed_at is not None, what="the foreign page refused")
    r = chaos.result
    r.code = r.peer_code = peer.close_code
    r.reason = peer.close_reason
    r.ended = (peer.closed_at or 0.0) - chaos.fault_start
    assert chaos.registry.total == len(chaos.healthy()), "no session for a refused call"


DRAIN = 0.5


async def sigterm(chaos: Chaos) -> None:
    healthy = chaos.healthy()
    await chaos.run_until(
        lambda: all(p.turns >= 1 for p in healthy) and any(p.speaking for p in healthy),
        what="a reply playing",
    )
    chaos.fault_start = chaos.clock.now()
    loop = asyncio.get_running_loop()
    wall = loop.time()
    drain = loop.create_task(chaos.registry.drain(DRAIN), name="chaos-drain")
    async with httpx.AsyncClient() as client:
        ready = await client.get(f"http://{chaos.host}/readyz")
        assert ready.status_code == 503, "draining: not ready"
    late = await chaos.open("late", expect_ready=False, sends=False)
    await chaos.run_until(lambda: drain.done(), what="the drain")
    ended = await drain
    chaos.result.notes.append(f"{ended} calls ended by the drain after {DRAIN} s (wall)")
    chaos.result.notes.append(f"drain took {loop.time() - wall:.2f} s of wall time")
    await chaos.run_until(lambda: late.closed_at is not None, what="the late call refused")
    assert late.close_code == 1013, late.close_code
    for p in healthy:
        p.ending = True
    await chaos.run_until(lambda: all(p.closed_at is not None for p in healthy), what="closed")
    first = healthy[0]
    _outcome(chaos, first)
    chaos.result.ended = None  # the drain's bound is on the wall clock (notes)
    chaos.result.peer_code = first.close_code


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("stt-drop", "call goes on (new STT stream), every turn answered", stt_drop),
        Fault("stt-stall", "final_timeout ends the turn, answered", stt_stall),
        Fault("llm-stall", "error notice + error_message, call goes on", llm_stall,
              fakes=("openai",)),
        Fault("llm-error", "error notice + error_message, call goes on", llm_error,
              fakes=("openai",)),
        Fault("tts-stall", "error notice, call goes on", tts_stall, fakes=("deepgram-tts",)),
        Fault("async-tool-hang", "tool_timeout told to the model, answered", async_tool_hang),
        Fault("sync-tool-hang", "tool_timeout told to the model, answered", sync_tool_hang),
        Fault("never-sends", "4408 at first_message_timeout", never_sends,
              limits=EdgeLimits(first_message_timeout=2.0)),
        Fault("never-reads", "1008 after one send_timeout", never_reads,
              limits=EdgeLimits(send_timeout=2.0)),
        Fault("too-fast", "4429 (audio budget)", too_fast),
        Fault("huge-message", "1009 unread (the reader's size limit)", huge_message),
        Fault("oversized-text", "1009 (the guard's text limit)", oversized_text),
        Fault("disconnect-mid-reply", "1000 client left, session closed", disconnect_mid_reply),
        Fault("cross-origin", "4403, no session", cross_origin),
        Fault("sigterm-drain", "1001 after drain_timeout; new calls 1013", sigterm),
    )
}  # fmt: skip


# ---------------------------------------------------------------------------- runner


@contextlib.contextmanager
def _fakes(names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    from antiphon.testing.server import running_in_thread

    with contextlib.ExitStack() as stack:
        fakes: dict[str, Any] = {}
        for name in names:
            if name == "openai":
                from antiphon.testing.openai_chat import FakeOpenAIChat

                fakes[name] = stack.enter_context(running_in_thread(FakeOpenAIChat()))
            elif name == "deepgram-tts":
                from antiphon.testing.deepgram import FakeDeepgramTTS

                fakes[name] = stack.enter_context(running_in_thread(FakeDeepgramTTS()))
        yield fakes


async def _poll_livez(host: str, into: list[tuple[int, float]], every: float) -> None:
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            start = loop.time()
            try:
                status = (await client.get(f"http://{host}/livez")).status_code
            except httpx.HTTPError:
                status = 0
            into.append((status, loop.time() - start))
            await asyncio.sleep(every)


async def _probe_lag(result: ChaosResult, every: float = 0.005) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        result.loop_lag = max(result.loop_lag, loop.time() - due)


@asynccontextmanager
async def _watching(host: str, result: ChaosResult, every: float) -> AsyncIterator[None]:
    """``/livez`` polled every ``every`` seconds, and the loop's lag, while the block runs."""
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(_poll_livez(host, result.livez, every), name="livez"),
        loop.create_task(_probe_lag(result), name="loop-lag"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_chaos(fault: Fault | str, *, virtual: bool = True, healthy: int = 3) -> ChaosResult:
    """Run one fault alongside ``healthy`` calls; see the module docstring."""
    from antiphon.server.app import create_app

    f = FAULTS[fault] if isinstance(fault, str) else fault
    result = ChaosResult(f.name, virtual, expected=f.expected)
    wall = time.perf_counter()
    clock: Clock = TickClock() if virtual else MonotonicClock()
    options = f.options or AgentOptions(turn=TurnOptions(final_timeout=1.0))
    with _fakes(f.fakes) as fakes:
        leaks = LeakCheck(ports=[getattr(x, "port", 0) for x in fakes.values()])
        agent = ChaosAgent(clock, options)
        app = create_app(agent, limits=f.limits, clock=clock, drain_timeout=5.0)
        try:
            # the reader's size limit of antiphon.server.app.serve: a bigger message is
            # refused (1009) before it is read
            served = serve_app(app, ws_max_size=f.limits.max_ws_message_bytes)
            async with served as host, _watching(host, result, 0.05):
                leaks.ports.add(int(host.rsplit(":", 1)[1]))
                chaos = Chaos(
                    app=app,
                    host=host,
                    clock=clock,
                    agent=agent,
                    limits=f.limits,
                    result=result,
                    fakes=fakes,
                )
                try:
                    for i in range(healthy):
                        await chaos.open(f"healthy-{i}", talk_turns=TURNS)
                    await chaos.run_until(
                        lambda: all(p.turns >= 1 for p in chaos.healthy()), what="healthy turns"
                    )
                    chaos.fault_start = clock.now()
                    await f.act(chaos)
                    await chaos.run_until(
                        lambda: all(p.answered or p.closed_at is not None for p in chaos.healthy()),
                        what="every healthy turn answered",
                    )
                    await chaos.finish()
                except AssertionError as exc:
                    result.failure = str(exc) or repr(exc)
                finally:
                    for p in chaos.peers:
                        if p.ws is not None:
                            p.ws.transport.abort()
                        if p.reader is not None:
                            await asyncio.gather(p.reader, return_exceptions=True)
                for p in chaos.healthy():
                    result.healthy.append(
                        HealthyCall(p.name, p.turns, p.talk_turns, p.worst_gap(),
                                    p.close_code, p.server_code)
                    )  # fmt: skip
                result.active_after = len(app.state.calls.calls)
        finally:
            with contextlib.suppress(AssertionError):
                await leaks.assert_clean(settle=2.0)
            result.leaks = leaks.leftovers()
    result.wall = time.perf_counter() - wall
    return result
