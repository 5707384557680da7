"""CPU per inbound 20 ms frame in the server's WebSocket protocol, in one process, no sockets.

How it is built: :class:`~antiphon.server.ws_protocol.CallWebSocketProtocol` (what
``antiphon serve`` runs) on a transport double, its handshake done by a small ASGI app
that accepts and installs a direct receiver which takes every message (and does nothing
else). Then ``--frames`` masked binary frames of ``--size`` bytes (a caller's 20 ms of
16 kHz PCM16 by default), encoded by ``websockets``' client beforehand, are fed to
``data_received``, ``--batch`` frames per call (1: one frame a read, as a caller's
frames mostly arrive). CPU is ``time.process_time()`` over the frames, best of
``--repeat``. What it covers: the bytes to the receiver (``websockets``' parsing, or the
protocol's own path for whole binary frames, and uvicorn's dispatch); not the receiver's
work (``bench/frame_cost.py`` measures that).

To compare two versions, run it with each one's ``src`` first on ``PYTHONPATH``:

    .venv/bin/python bench/ws_inbound_cost.py [--frames 50000] [--repeat 5] [--batch 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from antiphon.server.ws_protocol import DIRECT
from antiphon.testing.asgi import open_protocol


class _Transport(asyncio.Transport):
    """A transport double: keeps what is written until ``written`` is set to None (then
    drops it); reading is never really paused."""

    def __init__(self) -> None:
        super().__init__()
        self.written: bytearray | None = bytearray()

    def write(self, data: Any) -> None:
        if self.written is not None:
            self.written += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


class _App:
    """Accepts, installs a receiver that takes everything, waits for the disconnect."""

    def __init__(self) -> None:
        self.taken = 0
        self.ready = asyncio.Event()

    def take(self, message: bytes | str) -> bool:
        self.taken += 1
        return True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        scope["extensions"][DIRECT].receiver = self.take
        self.ready.set()
        while (await receive())["type"] != "websocket.disconnect":
            pass


async def measure(frames: int, size: int, batch: int) -> float:
    """Microseconds of CPU per frame."""
    app = _App()
    transport = _Transport()
    protocol, client = open_protocol(app, transport, path="/ws/agent", ws_per_message_deflate=False)
    await asyncio.wait_for(app.ready.wait(), 10)
    assert transport.written is not None
    client.receive_data(bytes(transport.written))  # the handshake's response
    transport.written = None
    payload = os.urandom(size)
    reads: list[bytes] = []
    for _ in range(0, frames, batch):
        for _ in range(batch):
            client.send_binary(payload)
        reads.append(b"".join(client.data_to_send()))
    feed = protocol.data_received
    cpu = time.process_time()
    for data in reads:
        feed(data)
    cpu = time.process_time() - cpu
    assert app.taken == len(reads) * batch, (app.taken, len(reads) * batch)
    protocol.connection_lost(None)
    await asyncio.sleep(0)
    return 1e6 * cpu / (len(reads) * batch)


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--frames", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    runs = [await measure(a.frames, a.size, a.batch) for _ in range(a.repeat)]
    print(
        json.dumps({"us_per_frame_best": round(min(runs), 2), "runs": [round(x, 2) for x in runs]})
    )


if __name__ == "__main__":
    asyncio.run(main())
