"""The chaos scenarios: :class:`Fault` and the :data:`FAULTS` table.

Each fault's ``act`` injects one failure (a provider that stalls or errs, a tool that
hangs, a hostile or broken peer, a drain) through a :class:`~antiphon.testing.chaos.calls.Chaos`
and checks what the faulty call did; the runner checks the healthy calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from websockets.exceptions import ConnectionClosed

from antiphon.agent.options import AgentOptions, TurnOptions
from antiphon.services.llm import LLM, LLMDeadlines
from antiphon.services.tools import FunctionTool, function_tool
from antiphon.services.tts import TTSDeadlines
from antiphon.testing.agent import (
    ScriptedLLM,
    ScriptedSTT,
    ToolCallScript,
)
from antiphon.testing.chaos.calls import (
    REPLY,
    UTTERANCE,
    CallPlan,
    Chaos,
    Peer,
)
from antiphon.testing.faults import FaultPlan
from antiphon.transports.limits import EdgeLimits

__all__ = ["FAULTS", "TURNS", "Fault"]

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
