"""CPU per agent turn of N sessions on the in-process doubles, on virtual time, no sockets.

What it measures: the agent session's own work per turn and per event (controller, turn
machine, reply runner, word sync, event hub, the doubles' streams) as
``bench/capacity.py``'s server does it, without the socket paths. N sessions of
:func:`~antiphon.testing.agent.doubles_agent` run on a
:class:`~antiphon.testing.vloop.VirtualTimeLoop` (its clock jumps when the loop is idle,
so only CPU is spent): each gets a 20 ms frame from a loop timer (the capacity bench's
talk pattern: a 0.6 s question, silence to the end of the turn cycle; the sessions start
spread over the cycle), its output is polled at each of those ticks (the track's
``poll``: its own pacing; the transports' ``notify`` timers are left out, as on a
virtual clock two timers meant for one instant differ by a rounding error and a reader
woken a femtosecond early spins until time moves) and every event goes through the
WebSocket bridge's JSON (``event_message`` + ``json.dumps``) in an ``on_event`` listener. CPU is
``time.process_time()`` over ``--turns`` turn cycles (after one warm-up cycle), per
session-turn, best of ``--repeat``.

To compare two versions, run it with each one's ``src`` first on ``PYTHONPATH``:

    PYTHONPATH=src:bench .venv/bin/python bench/turn_cost.py [--sessions 50] [--turns 8]
        [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

from antiphon.agent.events import AgentEvent, Interrupted, TurnCompleted
from antiphon.agent.session import AgentSession
from antiphon.audio.frame import AudioFrame
from antiphon.errors import StreamClosedError
from antiphon.testing.agent import doubles_agent, silence, speech
from antiphon.testing.vloop import VirtualTimeLoop
from antiphon.transports.websocket import event_message
from server_load import CYCLE, FRAME, REPLY, SILENCE, SPEECH


class _Caller:
    """One call without a socket: a frame in and the output polled at each 20 ms tick of
    a loop timer; every event through the bridge's JSON."""

    def __init__(
        self, session: AgentSession, turn: list[AudioFrame], offset: int, kinds: Counter[str]
    ) -> None:
        self.session, self.turn, self.k = session, turn, offset
        self.loop = asyncio.get_running_loop()
        self.kinds = kinds
        self.frames_out = 0
        self.timer: asyncio.TimerHandle | None = None
        self.start = 0.0
        self.sent = 0

    def begin(self) -> None:
        self.session.on_event(self._on_event)
        self.start = self.loop.time()
        self._send()

    def _on_event(self, event: AgentEvent) -> None:
        self.kinds[type(event).__name__] += 1
        if isinstance(event, Interrupted):
            json.dumps({"type": "clear", "generation": event.generation + 1})
        message = event_message(event)
        if message is not None:
            json.dumps(message)

    def _send(self) -> None:
        self.session.push_audio(self.turn[self.k % len(self.turn)])
        self.k += 1
        self.sent += 1
        self.timer = self.loop.call_at(self.start + self.sent * FRAME, self._send)
        output = self.session.output
        with contextlib.suppress(StreamClosedError):
            while output.poll() is not None:
                self.frames_out += 1

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


async def measure(sessions: int, turns: int) -> dict[str, Any]:
    turn = speech(SPEECH).split(FRAME) + silence(CYCLE - SPEECH).split(FRAME)
    agent = doubles_agent(
        [f"question {i}" for i in range(sessions * (turns + 3))],
        [],
        min_silence=SILENCE,
        default_reply=REPLY,
        record=False,
    )
    kinds: Counter[str] = Counter()
    callers = []
    for i in range(sessions):
        session = agent.new_session()
        await session.start()
        callers.append(_Caller(session, turn, i * len(turn) // sessions, kinds))
    for c in callers:
        c.begin()
    try:
        await asyncio.sleep(CYCLE)  # warm-up: every session has begun a turn
        kinds.clear()
        frames = sum(c.frames_out for c in callers)
        cpu = time.process_time()
        await asyncio.sleep(turns * CYCLE)
        cpu = time.process_time() - cpu
        frames = sum(c.frames_out for c in callers) - frames
    finally:
        for c in callers:
            c.stop()
        for c in callers:
            await c.session.aclose()
        await agent.aclose()
    return {
        "us_per_turn": 1e6 * cpu / (sessions * turns),
        "turns_completed": kinds[TurnCompleted.__name__],
        "agent_frames": frames,
        "events": dict(sorted(kinds.items())),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--events", action="store_true", help="print the event counts")
    a = ap.parse_args()
    runs = []
    last: dict[str, Any] = {}
    for _ in range(a.repeat):
        loop = VirtualTimeLoop(grace=0.0)
        try:
            last = loop.run_until_complete(measure(a.sessions, a.turns))
        finally:
            loop.close()
        runs.append(last["us_per_turn"])
    out: dict[str, Any] = {
        "us_per_turn_best": round(min(runs)),
        "runs": [round(x) for x in runs],
        "turns_completed": last["turns_completed"],
        "expected_turns": a.sessions * a.turns,
        "agent_frames": last["agent_frames"],
    }
    if a.events:
        out["events"] = last["events"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
