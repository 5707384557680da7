"""CPU per audio chunk of antiphon's TTS streaming path, without sockets: against a bare client.

How it is built: ``bench/stream_hops.py`` measures the same thing through real sockets
and a server process, where the machine's noise (kernel, the server's scheduling, other
processes) is as large as the difference being measured. Here both clients read from
the same in-process connection double, so what differs is only the code between a
message and its consumer:

- the double (``_Conn``) has the surface the WebSocket TTS driver uses (``send``,
  ``recv``, ``set_handler``, ``aclose``...); a message is handed over as ``websockets``
  does, by setting the future its reader waits on, or to the handler when one is set
  (as ``WsConnection`` does from the protocol callback). One loop timer per ``--interval``
  (the "server") gives every stream that sent its ``Flush`` its next chunk, then
  Deepgram's ``Flushed``, so chunks arrive in bursts as from one server loop;
- (a) **bare**: one task per stream awaits ``recv()`` and feeds the same sans-I/O
  ``SpeakSession`` (what a bare ``websockets`` client does per message);
- (b) **antiphon**: ``DeepgramTTS.synthesize()`` over its pool (the double's
  connections), iterated for ``AudioFrame``s: reader task, session, output channel,
  the consumer's wake-up.

Rounds alternate bare/antiphon; CPU is ``time.process_time()`` per round divided by the
chunks delivered (the rounds' whole cost: starting streams included).

    .venv/bin/python bench/chunk_cost.py [--streams 50] [--chunks 50] [--rounds 8]

Prints µs per chunk for each client (every round), their ratio, and writes
``bench/results/chunk_cost.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from antiphon.net.pool import ConnectionPool, PoolOptions
from antiphon.plugins.deepgram.tts import DeepgramTTS
from antiphon.protocols.tts_session import Act

TEXT = "The quick brown fox jumps over the lazy dog."
CHUNK = bytes(640)  # 20 ms of 16 kHz int16


class _Server:
    """One timer per interval: the next chunk (or the ``Flushed``) for every stream."""

    def __init__(self, chunks: int, interval: float) -> None:
        self.chunks = chunks
        self.interval = interval
        self._owed: dict[_Conn, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.delivered = 0

    def start(self, conn: _Conn) -> None:
        self._owed[conn] = self.chunks
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        for conn, left in list(self._owed.items()):
            if left:
                conn.deliver(CHUNK)
                self.delivered += 1
                self._owed[conn] = left - 1
            else:
                conn.deliver('{"type": "Flushed", "sequence_id": 0}')
                del self._owed[conn]
        if self._owed:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)


class _Conn:
    """What the driver and the pool use of a ``WsConnection``; messages come from ``_Server``."""

    _ids = 0

    def __init__(self, server: _Server) -> None:
        _Conn._ids += 1
        self.id = _Conn._ids
        self.created_at = 0.0
        self.open = True
        self._server = server
        self._queue: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._handler: Callable[[str | bytes], None] | None = None

    def age(self, now: float) -> float:
        return 0.0

    def deliver(self, message: str | bytes) -> None:
        handler = self._handler
        if handler is not None:  # as WsConnection: straight from the "protocol callback"
            handler(message)
            return
        self._queue.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def send(self, message: str | bytes, *, stage: str = "send") -> None:
        if isinstance(message, str) and '"Flush"' in message:
            self._server.start(self)

    async def recv(self, *, stage: str = "receive") -> str | bytes:
        while not self._queue:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._queue.popleft()

    async def read_into(
        self, handle: Callable[[str | bytes], bool], *, stage: str = "receive"
    ) -> None:
        queue = self._queue
        while True:
            while not queue:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
            if not handle(queue.popleft()):
                return

    def set_handler(
        self,
        on_message: Callable[[str | bytes], None],
        on_lost: Callable[[Any], None],
        *,
        stage: str = "receive",
    ) -> None:
        self._handler = on_message
        while self._queue and self._handler is not None:
            on_message(self._queue.popleft())

    def clear_handler(self) -> None:
        self._handler = None

    def abort(self) -> None:
        self.open = False

    async def aclose(self) -> None:
        self.open = False


async def _bare_stream(conn: _Conn, tts: DeepgramTTS) -> int:
    session = tts.new_session()
    for m in [*session.speak(TEXT), *session.end_input()]:
        await conn.send(m)
    n = 0
    while not session.done:
        action = session.feed(await conn.recv())
        if action.act is Act.DELIVER:
            n += len(action.audio) > 0
    return n


async def _antiphon_stream(tts: DeepgramTTS) -> int:
    n = 0
    async with tts.synthesize(TEXT) as stream:
        async for frame in stream:
            n += len(frame.data) > 0
    return n


async def _round(make: Callable[[], Any], streams: int) -> tuple[float, int]:
    cpu = time.process_time()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(make()) for _ in range(streams)]
    return time.process_time() - cpu, sum(t.result() for t in tasks)


async def run(a: argparse.Namespace) -> dict[str, Any]:
    server = _Server(a.chunks, a.interval)

    async def connect() -> Any:
        return _Conn(server)

    tts = DeepgramTTS(api_key="bench", base_url="ws://127.0.0.1:9", sample_rate=16000)
    tts.pool = ConnectionPool(connect, name="bench", options=PoolOptions(max_idle=a.streams))
    bare_conns = [_Conn(server) for _ in range(a.streams)]
    bare: list[float] = []
    ours: list[float] = []
    async with tts:
        await tts.pool.prewarm(a.streams)
        for i in range(a.rounds + 1):  # round 0 warms both up, not counted
            order = ("bare", "ours") if i % 2 == 0 else ("ours", "bare")
            for which in order:
                if which == "bare":
                    conns = iter(bare_conns)

                    def bare_one(conns: Iterator[_Conn] = conns) -> Awaitable[int]:
                        return _bare_stream(next(conns), tts)

                    cpu, n = await _round(bare_one, a.streams)
                    out = bare
                else:
                    cpu, n = await _round(lambda: _antiphon_stream(tts), a.streams)
                    out = ours
                if n != a.streams * a.chunks:
                    raise SystemExit(f"{which}: {n} chunks, expected {a.streams * a.chunks}")
                if i:
                    out.append(cpu / n * 1e6)
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    return {
        "benchmark": "chunk_cost",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "streams": a.streams,
        "chunks_per_stream": a.chunks,
        "interval_s": a.interval,
        "bare_us_per_chunk": bare,
        "antiphon_us_per_chunk": ours,
        "ratio_per_round": ratios,
        "bare_mean_us": statistics.mean(bare),
        "antiphon_mean_us": statistics.mean(ours),
        "ratio_mean": statistics.mean(ratios),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--chunks", type=int, default=50, help="audio chunks per stream")
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between chunks")
    ap.add_argument("--rounds", type=int, default=8, help="rounds per client")
    ap.add_argument("--out", type=Path, default=Path("bench/results/chunk_cost.json"))
    a = ap.parse_args()
    r = asyncio.run(run(a))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(r, indent=2) + "\n")
    fmt = " ".join
    print(f"bare     µs/chunk {fmt(f'{x:.1f}' for x in r['bare_us_per_chunk'])}")
    print(f"antiphon µs/chunk {fmt(f'{x:.1f}' for x in r['antiphon_us_per_chunk'])}")
    print(
        f"means {r['bare_mean_us']:.1f} / {r['antiphon_mean_us']:.1f} µs, "
        f"ratio per round {fmt(f'{x:.2f}' for x in r['ratio_per_round'])} "
        f"(mean {r['ratio_mean']:.2f})"
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
