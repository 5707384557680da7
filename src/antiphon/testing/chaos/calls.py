"""The chaos run's parts: the tick clock, the agent, the peers, the result, the conductor.

:class:`Chaos` opens the calls (:class:`Peer`, a real WebSocket client each) and, on the
virtual clock, moves time one 20 ms frame at a time once every frame has been taken
(see :mod:`antiphon.testing.chaos`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from antiphon.agent.options import AgentOptions
from antiphon.agent.session import AgentSession
from antiphon.aio.clock import Clock, VirtualClock
from antiphon.services.llm import LLM
from antiphon.services.stt import STT
from antiphon.services.tools import FunctionTool
from antiphon.services.tts import TTS
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import (
    EnergyVAD,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    silence,
    speech,
)
from antiphon.testing.vloop import time_scale
from antiphon.transports.limits import EdgeLimits

__all__ = ["CallPlan", "Chaos", "ChaosAgent", "ChaosResult", "HealthyCall", "Peer", "TickClock"]

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
