"""Load test: concurrent calls through the server's ``/ws/agent``, as real clients.

The server (uvicorn, one process, one event loop) runs in this process; an agent on the
in-process doubles answers every call. Each simulated client streams 20 ms of PCM every
20 ms in real time (speech, then silence, turn after turn) and receives the agent's paced
frames. A received frame is late by how far after its expected time it arrived (its run's
first frame + k × 20 ms). The figure is the largest number of calls that *hold*
(``bench/verdict.py``): every call got an answer to every question it asked, with the
whole reply's audio (within 5 %), and no frame late by more than 20 ms; when a size does
not hold, the output says which of these failed. Bounded: each size runs ``--seconds``
and stops by itself.

    .venv/bin/python bench/server_load.py [--sizes 10,25,50,100] [--seconds 10]

Prints a summary and writes ``bench/results/server_load.json``. The clients run in a
second process (this machine has two cores: one for the server, one for the clients).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import platform
import secrets
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from antiphon.audio.codecs import ulaw_encode
from antiphon.audio.resample import AudioConverter
from antiphon.server.app import create_app
from antiphon.testing.agent import doubles_agent, silence, speech
from antiphon.testing.asgi import serve_app
from antiphon.testing.synth import tone_duration
from verdict import CallTally, judge, pct, runs_of

FRAME = 0.02
SILENCE = 0.3  # the VAD's min_silence_duration
SPEECH = 0.6  # each question's length
REPLY = "Sure, here is a short answer for you."
REPLY_FRAMES = round(tone_duration(REPLY) / FRAME)
# one turn: the question, the VAD's silence, the reply, and a second of margin
CYCLE = round((SPEECH + SILENCE + tone_duration(REPLY) + 1.0) / FRAME) * FRAME


class _Call(asyncio.Protocol):
    """One call run from its transport's callbacks: ``websockets``' sans-I/O client frames
    and parses, a loop timer sends each 20 ms frame, so a frame costs the caller no task
    wake-up (with the asyncio client, the callers of 200 calls took as much CPU as the
    server, on the same two cores: ``docs/performance.md``). A subclass says what a frame
    sent is (:meth:`_frame`) and what to do with each message (:meth:`_message`)."""

    path = ""

    def __init__(self, host: str, seconds: float, late: list[float]) -> None:
        self.loop = asyncio.get_running_loop()
        self.ws = ClientProtocol(parse_uri(f"ws://{host}{self.path}"), max_size=None)
        self.seconds, self.late = seconds, late
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.start = 0.0
        self.sent = 0
        self.times: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = self.loop.time()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.ws.handshake_exc is not None:
                    raise self.ws.handshake_exc
                self.start = now
                self._opened()
                self._send()
            elif isinstance(event, Frame) and event.opcode in (Opcode.BINARY, Opcode.TEXT):
                self._message(event, now)
        self._flush()
        if self.ws.close_rcvd is not None and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.done.done():
            self.done.set_result(None)

    def _opened(self) -> None:
        """The handshake is done; the first frame goes next."""

    def _frame(self) -> None:
        """Send frame ``self.sent`` (and whatever is due with it)."""
        raise NotImplementedError

    def _closing(self) -> None:
        """The call's time is up; its close frame goes next."""

    def _message(self, frame: Frame, now: float) -> None:
        """A data message from the server, read at ``now``."""
        raise NotImplementedError

    def _send(self) -> None:
        if self.loop.time() - self.start >= self.seconds:
            self._closing()
            self.ws.send_close()
        else:
            self._frame()
            self.sent += 1
            self.timer = self.loop.call_at(self.start + self.sent * FRAME, self._send)
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()


class _AgentCall(_Call):
    """A call on ``/ws/agent``: binary PCM both ways; an agent frame is late by how far
    after its run's first frame + k × 20 ms it came."""

    path = "/ws/agent"

    def __init__(self, host: str, seconds: float, late: list[float]) -> None:
        super().__init__(host, seconds, late)
        self.turn = _turn()
        self.run_start, self.last, self.k = 0.0, -1.0, 0

    def _frame(self) -> None:
        self.ws.send_binary(self.turn[self.sent % len(self.turn)])

    def _message(self, frame: Frame, now: float) -> None:
        if frame.opcode is not Opcode.BINARY:
            return
        if now - self.last > 0.1:
            self.run_start, self.k = now, 0
        self.late.append((now - (self.run_start + self.k * FRAME)) * 1000)
        self.k += 1
        self.last = now
        self.times.append(now)


async def _run_call(call: _Call, host: str, offset: float) -> dict[str, int]:
    await asyncio.sleep(offset)
    name, port = host.rsplit(":", 1)
    await asyncio.get_running_loop().create_connection(lambda: call, name, int(port))
    await call.done
    return _tally(call.times, call.sent, call.start)


async def client(host: str, seconds: float, late: list[float], offset: float) -> dict[str, int]:
    """One call for ``seconds``, a question per ``CYCLE``; what it asked and got back."""
    return await _run_call(_AgentCall(host, seconds, late), host, offset)


@functools.cache
def _turn() -> list[bytes]:
    """One turn's caller audio, 20 ms frames: the question, then silence to the cycle's end."""
    return [f.data for f in (speech(SPEECH).split(FRAME) + silence(CYCLE - SPEECH).split(FRAME))]


def _tally(times: list[float], sent: int, start: float) -> dict[str, int]:
    """What a call asked (complete cycles only: each asked one question and had time for
    its reply) and got back, from the arrival times of the agent's frames."""
    asked = int(sent * FRAME / CYCLE + 1e-9)
    answered, frames = set(), 0
    at = 0
    for n in runs_of(times):
        cycle = int((times[at] - start) / CYCLE)
        at += n
        if cycle < asked:
            frames += n
            if n >= 0.95 * REPLY_FRAMES:
                answered.add(cycle)
    return {
        "asked": asked,
        "answered": len(answered),
        "frames": frames,
        "sent": sent,
        "received": len(times),
    }


def _phone_turn() -> list[str]:
    """One turn's caller audio as Twilio's ``media`` payloads: μ-law 8 kHz, 20 ms each."""
    converter = AudioConverter(8000, 1)
    pcm = b"".join(converter.process(f).data for f in (speech(SPEECH), silence(CYCLE - SPEECH)))
    ulaw = ulaw_encode(pcm + converter.flush().data)
    chunks = [ulaw[i : i + 160] for i in range(0, len(ulaw), 160)]
    return [base64.b64encode(c.ljust(160, b"\xff")).decode() for c in chunks]


class _PhoneCall(_Call):
    """A phone call on ``/twilio/media`` as Twilio makes it: ``connected``, ``start``, a
    ``media`` message every 20 ms, and each ``mark`` echoed when the audio before it has
    played (at once on ``clear``), as the carrier's playout would. The carrier plays what
    it has buffered without a gap: a frame is late by how long after the buffer ran dry
    it came (early frames wait their turn); dry for over 0.1 s is a pause between
    replies, and a new run begins."""

    path = "/twilio/media"

    def __init__(self, host: str, seconds: float, late: list[float]) -> None:
        super().__init__(host, seconds, late)
        self.turn = _phone_turn()
        self.sid = "MZ" + secrets.token_hex(16)
        self.prefix = (
            f'{{"event": "media", "streamSid": "{self.sid}", '
            '"media": {"track": "inbound", "payload": "'
        )
        self.played = 0.0  # when the buffered audio has played out
        self.marks: deque[tuple[float, str]] = deque()  # (when it has played, its echo)

    def _opened(self) -> None:
        start = {
            "event": "start", "sequenceNumber": "1", "streamSid": self.sid,
            "start": {
                "accountSid": "AC" + "0" * 32, "streamSid": self.sid,
                "callSid": "CA" + secrets.token_hex(16), "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {},
            },
        }  # fmt: skip
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        self.ws.send_text(json.dumps(connected).encode())
        self.ws.send_text(json.dumps(start).encode())

    def _frame(self) -> None:
        self.ws.send_text((self.prefix + self.turn[self.sent % len(self.turn)] + '"}}').encode())
        now = self.loop.time()
        while self.marks and self.marks[0][0] <= now:  # the carrier echoes what has played
            self.ws.send_text(self.marks.popleft()[1].encode())

    def _closing(self) -> None:
        self.ws.send_text(json.dumps({"event": "stop", "streamSid": self.sid}).encode())

    def _message(self, frame: Frame, now: float) -> None:
        msg = json.loads(bytes(frame.data))
        event = msg.get("event")
        if event == "media":
            if now - self.played > 0.1:
                self.played = now  # a new run
            self.late.append((now - self.played) * 1000)
            start_at = max(self.played, now)
            self.times.append(start_at)  # when it plays: runs are contiguous
            self.played = start_at + FRAME
        elif event == "mark":
            echo = {"event": "mark", "streamSid": self.sid, "mark": msg["mark"]}
            self.marks.append((max(self.played, now), json.dumps(echo)))
        elif event == "clear":  # the buffer is dropped: its marks echo now
            self.played = now
            pending = [m for _, m in self.marks]
            self.marks.clear()
            self.marks.extend((now, m) for m in pending)


async def phone_client(
    host: str, seconds: float, late: list[float], offset: float
) -> dict[str, int]:
    """One phone call on ``/twilio/media`` for ``seconds`` (:class:`_PhoneCall`)."""
    return await _run_call(_PhoneCall(host, seconds, late), host, offset)


async def run(n: int, seconds: float, *, bunched: bool = False) -> dict[str, Any]:
    script = [f"question {i}" for i in range(n * 20)]
    agent = doubles_agent(
        script, [], min_silence=SILENCE, default_reply=REPLY, record=False, voiced_only=True
    )
    app = create_app(agent, max_sessions=n + 10)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with serve_app(app) as host:
        # the clients run in another process, so they do not share the server's loop
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--clients", host, "--sizes", str(n),
            "--seconds", str(seconds), *(["--bunched"] if bunched else []),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
    wall = time.perf_counter() - wall0
    got = json.loads(out.decode().strip().splitlines()[-1])
    late: list[float] = got["late"]
    calls = [
        CallTally(c["asked"], c["answered"], c["frames"], c["asked"] * REPLY_FRAMES)
        for c in got["calls"]
    ]
    verdict = judge(calls, late)
    return {
        "calls": n,
        **verdict,
        "late_p50_ms": pct(late, 0.5),
        "late_p99_ms": pct(late, 0.99),
        "late_max_ms": max(late) if late else None,
        "server_cpu_share_of_one_core": (time.process_time() - cpu0) / wall,
    }


def start_offset(call: int, of: int, *, bunched: bool = False) -> float:
    """When call ``call`` of ``of`` starts, each at its own phase of the 20 ms frame period,
    as independent callers' frames arrive (all on one phase, every caller's frame would
    reach the server in the same instant: a burst a real server never sees).

    Spread (the default): evenly over one turn ``CYCLE``, as independent callers speak
    (and as ``bench/speech_callers.py`` starts its calls). ``bunched``: every call within
    the first second, so every call's question, end of turn and reply fall in the same
    second or two of each cycle: the turns' work comes in bursts at about four times the
    spread callers' rate (the pattern of the figures before 2026-12-07)."""
    of = max(of, 1)
    if bunched:
        return (call % 50) * FRAME + (call / of) * FRAME
    return (call / of) * CYCLE + (call % 50) / 50 * FRAME


async def clients(
    host: str,
    n: int,
    seconds: float,
    first: int = 0,
    of: int = 0,
    *,
    phone: bool = False,
    bunched: bool = False,
) -> None:
    """The client side (a process of its own): prints each call's tally and the lateness.
    ``first``, ``of``: these are calls ``first`` to ``first + n`` of ``of`` in all;
    ``phone``: Twilio Media Streams calls on ``/twilio/media``, else ``/ws/agent``;
    ``bunched``: see :func:`start_offset`."""
    late: list[float] = []
    cpu = time.process_time()
    total = of or n
    call = phone_client if phone else client
    calls = await asyncio.gather(
        *(
            call(host, seconds, late, start_offset(first + i, total, bunched=bunched))
            for i in range(n)
        )
    )
    cpu = time.process_time() - cpu
    print(json.dumps({"calls": calls, "late": [round(x, 3) for x in late], "cpu_s": cpu}))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,25,50,100")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", default="bench/results/server_load.json")
    ap.add_argument("--clients", help=argparse.SUPPRESS)  # HOST: run the client side only
    ap.add_argument("--first-index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--of", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--phone", action="store_true", help=argparse.SUPPRESS)  # /twilio/media
    ap.add_argument("--bunched", action="store_true", help="every call's turn in one second")
    args = ap.parse_args()
    if args.clients:
        await clients(
            args.clients, int(args.sizes), args.seconds, args.first_index, args.of,
            phone=args.phone, bunched=args.bunched,
        )  # fmt: skip
        return
    result: dict[str, Any] = {"machine": platform.platform(), "runs": []}
    for n in (int(x) for x in args.sizes.split(",")):
        r = await run(n, args.seconds, bunched=args.bunched)
        result["runs"].append(r)
        print(json.dumps(r))
    ok = [r["calls"] for r in result["runs"] if r["holds"]]
    result["max_calls_held"] = max(ok) if ok else 0
    print(
        "calls held (every turn answered, audio whole, no frame late by over 20 ms):",
        result["max_calls_held"],
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))  # noqa: ASYNC240 - once, at the end


if __name__ == "__main__":
    asyncio.run(main())
