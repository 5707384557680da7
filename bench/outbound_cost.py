"""CPU per outbound 20 ms frame on a call's send path, in one process, without sockets.

How it is built: ``--calls`` agent sessions on the in-process doubles, each in a
:class:`~antiphon.transports.websocket.WebSocketBridge` over a socket double whose sends
return at once and whose reader never gets a message. A producer task per call writes
20 ms frames into the session's output track as a TTS stream would (it waits while the
track is full), so the bridge's outbound path runs at the pace of real audio: the frame
released at its time, queued, sent with its deadline. CPU is ``time.process_time()``
over ``--seconds`` of wall-clock time (after a warm-up), divided by the frames the
bridges sent; it includes the producers' writes and the idle sessions, the same in
every version. The figure is the best of ``--repeat`` runs.

``--direct``: each socket double carries the server's direct path instead
(:class:`~antiphon.server.ws_protocol.DirectPath` of a real ``CallWebSocketProtocol``,
its handshake done, on a transport that drops what is written), so a frame goes the way
``antiphon serve`` sends it: written now, framed by websockets, one ``transport.write``.

``--against DIR`` alternates runs of this checkout's ``src`` and DIR's ``src`` (each a
fresh process, ``PYTHONPATH=<src>:bench``), so both see the same machine load; the load
average is printed with each run. A version to compare with can be exported with e.g.
``git archive <commit> src | tar -x -C /tmp/before``.

    .venv/bin/python bench/outbound_cost.py [--calls 40] [--seconds 5] [--repeat 3]
    .venv/bin/python bench/outbound_cost.py --against /tmp/before [--rounds 3] [--direct]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from antiphon.audio.frame import AudioFrame
from antiphon.server.ws_protocol import DIRECT, CallWebSocketProtocol, DirectPath
from antiphon.testing.agent import doubles_agent
from antiphon.testing.asgi import open_protocol
from antiphon.testing.vloop import VirtualTimeLoop
from antiphon.transports.websocket import WebSocketBridge
from benchkit import alternate


class _Quiet:
    """A socket double: sends return at once, the peer never says anything."""

    async def receive(self) -> bytes | str | None:
        await asyncio.get_running_loop().create_future()
        return None

    async def send_bytes(self, data: bytes) -> None:
        pass

    async def send_text(self, data: str) -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


class _Drop(asyncio.Transport):
    """A transport that counts what is written and drops it."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def write(self, data: Any) -> None:
        self.bytes += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


class _Direct(_Quiet):
    """A socket double with a server's direct path: a real protocol, handshake done."""

    def __init__(self, direct: DirectPath, protocol: CallWebSocketProtocol) -> None:
        self.direct = direct
        self.protocol = protocol

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.protocol.connection_lost(None)


async def _direct_socket() -> _Direct:
    accepted: asyncio.Future[DirectPath] = asyncio.get_running_loop().create_future()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        accepted.set_result(scope["extensions"][DIRECT])
        await receive()  # the disconnect, at the end of the run

    protocol, _ = open_protocol(app, _Drop())
    return _Direct(await accepted, protocol)


async def _produce(bridge: WebSocketBridge) -> None:
    output = bridge.session.output
    frame = AudioFrame(b"\x01\x00" * round(output.sample_rate * 0.02), output.sample_rate)
    while True:
        await output.write(frame)


async def measure(calls: int, seconds: float, warmup: float = 1.0, direct: bool = False) -> float:
    """Microseconds of CPU per outbound frame."""
    agent = doubles_agent([], [])
    bridges: list[WebSocketBridge] = []
    tasks: list[asyncio.Task[object]] = []
    for _ in range(calls):
        session = agent.new_session()
        await session.start()
        bridge = WebSocketBridge(session, await _direct_socket() if direct else _Quiet())
        bridges.append(bridge)
        tasks.append(asyncio.create_task(bridge.run()))
        tasks.append(asyncio.create_task(_produce(bridge)))
    try:
        await asyncio.sleep(warmup)
        sent, cpu = sum(b.frames_sent for b in bridges), time.process_time()
        await asyncio.sleep(seconds)
        sent, cpu = sum(b.frames_sent for b in bridges) - sent, time.process_time() - cpu
    finally:
        for b in bridges:
            b.end(1000, "done")
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await agent.aclose()
    if sent == 0:
        raise RuntimeError("no frame was sent")
    return 1e6 * cpu / sent


async def measure_virtual(calls: int, seconds: float, direct: bool = False) -> float:
    """Microseconds of CPU per outbound frame on virtual time, without producers: each
    call's output holds 2 s of audio before its bridge starts; the bridges send it all."""
    agent = doubles_agent([], [])
    sent = 0
    cpu = 0.0
    try:
        for _ in range(max(1, round(seconds / 2))):
            bridges: list[WebSocketBridge] = []
            for _ in range(calls):
                session = agent.new_session()
                await session.start()
                output = session.output
                frame = AudioFrame(
                    b"\x01\x00" * round(output.sample_rate * 0.02), output.sample_rate
                )
                for _ in range(100):
                    await output.write(frame)
                bridges.append(
                    WebSocketBridge(session, await _direct_socket() if direct else _Quiet())
                )
            t = time.process_time()
            tasks = [asyncio.create_task(b.run()) for b in bridges]
            await asyncio.sleep(2.1)  # virtual: the 2 s of audio paced out, and a frame more
            cpu += time.process_time() - t
            done = sum(b.frames_sent for b in bridges)
            if done != 100 * calls:
                raise RuntimeError(f"{done} frames of {100 * calls} were sent")
            sent += done
            for b in bridges:
                b.end(1000, "done")
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await agent.aclose()
    return 1e6 * cpu / sent


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--against", type=Path, help="another checkout: alternate runs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--direct", action="store_true", help="sockets with a direct path")
    ap.add_argument("--virtual", action="store_true", help="virtual time, no producers")
    a = ap.parse_args()
    if a.against is None:
        if a.virtual:
            runs = []
            for _ in range(a.repeat):
                with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(grace=0)) as runner:
                    runs.append(runner.run(measure_virtual(a.calls, a.seconds, a.direct)))
        else:
            runs = [
                asyncio.run(measure(a.calls, a.seconds, direct=a.direct)) for _ in range(a.repeat)
            ]
        print(
            json.dumps(
                {"us_per_frame_best": round(min(runs), 2), "runs": [round(x, 2) for x in runs]}
            )
        )
        return
    args = ["--calls", str(a.calls), "--seconds", str(a.seconds), "--repeat", "1"]
    args += ["--direct"] if a.direct else []
    args += ["--virtual"] if a.virtual else []
    results = alternate(Path(__file__), a.against, a.rounds, args)
    print(
        json.dumps(
            {name: min(r["us_per_frame_best"] for r in rs) for name, rs in results.items()}
            | {"calls": a.calls, "seconds": a.seconds, "direct": a.direct, "virtual": a.virtual}
        )
    )


if __name__ == "__main__":
    main()
