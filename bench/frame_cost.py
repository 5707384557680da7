"""CPU per inbound 20 ms frame on ``/ws/agent``'s path, in one process, without sockets.

How it is built: an agent session on the in-process doubles (as ``bench/capacity.py``
serves) is fed through the server's own reader path: a
:class:`~antiphon.transports.limits.ConnectionGuard` over a socket double that hands out
prepared 20 ms PCM messages, and :class:`~antiphon.transports.websocket.WebSocketBridge`'s
``_audio`` (the bytes to a frame, ``session.push_audio``: VAD, speech gate, STT). Between
frames the loop runs once (``sleep(0)``), so the tasks a frame wakes (the STT double's)
are counted too. The talk pattern is the capacity bench's (a 0.6 s question, then
silence to the end of a 4.1 s turn); the agent's replies are not read, so outbound audio
is not in this figure. CPU is ``time.process_time()`` over ``--frames`` frames, best of
``--repeat``.

To compare two versions, run it with each one's ``src`` first on ``PYTHONPATH``:

    .venv/bin/python bench/frame_cost.py [--frames 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from antiphon.testing.agent import doubles_agent, silence, speech
from antiphon.transports.limits import ConnectionGuard, EdgeLimits
from antiphon.transports.websocket import WebSocketBridge
from server_load import CYCLE, FRAME, REPLY, SILENCE, SPEECH


class _Frames:
    """A socket double: ``receive`` hands out the prepared messages in a loop."""

    def __init__(self, messages: list[bytes]) -> None:
        self._messages = messages
        self._i = 0

    async def receive(self) -> bytes | str | None:
        m = self._messages[self._i % len(self._messages)]
        self._i += 1
        return m

    async def send_bytes(self, data: bytes) -> None:
        pass

    async def send_text(self, data: str) -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


async def measure(frames: int) -> float:
    """Microseconds of CPU per inbound frame."""
    turn = [f.data for f in speech(SPEECH).split(FRAME) + silence(CYCLE - SPEECH).split(FRAME)]
    agent = doubles_agent(
        [f"question {i}" for i in range(frames)], [], min_silence=SILENCE, default_reply=REPLY
    )
    session = agent.new_session()
    await session.start()
    limits = EdgeLimits(max_audio_speed=1e6, max_messages_per_second=10**6)
    guard = ConnectionGuard(
        _Frames(turn), limits, max_binary_bytes=1 << 16, max_text_bytes=1 << 16, audio_rate=16000
    )
    bridge = WebSocketBridge(session, guard, limits=limits)
    try:
        cpu = time.process_time()
        for _ in range(frames):
            message = await guard.receive()
            assert isinstance(message, bytes)
            bridge._audio(message)
            await asyncio.sleep(0)
        cpu = time.process_time() - cpu
    finally:
        await session.aclose()
    return 1e6 * cpu / frames


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    runs = [await measure(a.frames) for _ in range(a.repeat)]
    print(
        json.dumps({"us_per_frame_best": round(min(runs), 2), "runs": [round(x, 2) for x in runs]})
    )


if __name__ == "__main__":
    asyncio.run(main())
