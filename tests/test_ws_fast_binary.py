"""Whole binary frames past ``websockets``' parser (``antiphon.server.ws_protocol``).

The property: whatever a client sends (binary, text, ping, pong and close frames,
fragmented or not, masked or not, with RSV bits, of every length encoding, some over the
size limit) and however the bytes are cut into reads, the protocol with its fast path
does what uvicorn's path alone does: the same messages to the receiver and to ASGI's
queue, in the same order, the same bytes written back (pongs, closes), the same close,
read by read. Then the cases the fast path is for: frames taken without the parser, and
the parser taking over at the first frame that is not one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.utils import apply_mask

from antiphon.server.ws_protocol import DIRECT, CallWebSocketProtocol
from antiphon.testing.asgi import open_protocol
from antiphon.testing.poll import until
from test_ws_direct import RecordingTransport

MASK = b"\x12\x34\x56\x78"


def encode(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    long_length: bool = False,
) -> bytes:
    """One frame as a client would write it (or would not: unmasked, RSV bits, control
    frames too long or fragmented, a length in a longer encoding than it needs)."""
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    if n < 126 and not long_length:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + MASK + apply_mask(payload, MASK)


class Parsed(CallWebSocketProtocol):
    """The reference: every read through ``websockets``' parser, as uvicorn does."""

    def data_received(self, data: bytes) -> None:
        WebSocketsSansIOProtocol.data_received(self, data)


class App:
    """Accepts and installs a receiver that declines messages starting with ``q``, fails
    on ``x``, removes itself on ``r`` and takes the rest; reads the queue only at the end."""

    def __init__(self) -> None:
        self.taken: list[bytes | str] = []
        self.direct: Any = None
        self.done = asyncio.Event()

    def take(self, message: bytes | str) -> bool:
        self.taken.append(message)
        first = message[:1]
        if first in (b"q", "q"):
            return False
        if first in (b"x", "x"):
            raise RuntimeError("the receiver failed")
        if first in (b"r", "r"):
            self.direct.receiver = None
        return True

    async def __call__(self, scope: Any, receive: Callable[..., Any], send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        self.direct = scope["extensions"][DIRECT]
        self.direct.receiver = self.take
        await self.done.wait()
        while (await receive())["type"] != "websocket.disconnect":
            pass


async def _opened(kind: type[CallWebSocketProtocol], max_size: int) -> tuple[Any, App]:
    app = App()
    transport = RecordingTransport()
    protocol, _ = open_protocol(
        app, transport, kind=kind, log_level="critical", ws_max_size=max_size
    )
    await until(lambda: app.direct is not None, timeout=10)
    transport.written.clear()  # the handshake's response
    return protocol, app


async def _run(kind: type[CallWebSocketProtocol], reads: list[bytes], max_size: int) -> list[Any]:
    """What the protocol did after each read: taken, queued, written, closed."""
    protocol, app = await _opened(kind, max_size)
    transport = protocol.transport
    seen: list[Any] = []
    for data in reads:
        if transport.closing:  # a closed transport reads nothing more
            break
        try:
            protocol.data_received(data)
        except Exception as exc:  # uvicorn's own (asyncio then closes the transport)
            seen.append(type(exc))
            break
        queued = [
            (m["type"], m.get("bytes"), m.get("text"), m.get("code")) for m in protocol.queue._queue
        ]
        seen.append(
            (
                list(app.taken),
                queued,
                bytes(transport.written),
                transport.closing,
                transport.paused_reading,
            )
        )
    seen.append((protocol.conn.state, type(protocol.conn.parser_exc), protocol.close_sent))
    protocol.connection_lost(None)
    app.done.set()
    await until(lambda: not protocol.tasks, timeout=10)
    return seen


def _payload(draw: st.DrawFn, opcode: int) -> bytes:
    if opcode == 8:  # close: a code and a reason, or something that is not one
        return draw(st.sampled_from([b"", b"\x03\xe8", b"\x03\xe8bye", b"\x03\xf1", b"\x00"]))
    first = draw(st.sampled_from([b"", b"a", b"q", b"x", b"r", b"\xff"]))
    size = draw(
        st.one_of(st.integers(0, 130), st.sampled_from([125, 126, 127, 640, 65535, 65536, 70000]))
    )
    return (first + bytes(range(256)) * (size // 256 + 1))[:size]


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One frame: mostly a well-formed binary one, sometimes anything else."""
    opcode = draw(st.sampled_from([2, 2, 2, 2, 1, 0, 9, 10, 8, 3]))
    payload = _payload(draw, opcode)
    if opcode == 1 and draw(st.booleans()):
        payload = payload.decode("latin-1").encode()  # valid UTF-8 (else maybe not)
    odd = draw(st.integers(0, 4)) == 0  # one frame in five is odd in one way
    return encode(
        opcode,
        payload,
        fin=not odd or draw(st.booleans()),
        rsv=draw(st.integers(0, 7)) if odd else 0,
        masked=not odd or draw(st.booleans()),
        long_length=draw(st.booleans()),
    )


@given(
    sent=st.lists(frames(), max_size=12),
    at_frames=st.lists(st.integers(0, 12), max_size=6),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=6),
    max_size=st.sampled_from([1 << 20, 1000, 126]),
)
def test_the_protocol_does_what_the_parser_alone_does(
    sent: list[bytes], at_frames: list[int], cuts: list[int], max_size: int
) -> None:
    stream = b"".join(sent)
    # reads cut between frames (as a client's frames mostly arrive) and anywhere
    ends = [sum(map(len, sent[:i])) for i in range(len(sent) + 1)]
    cut = {ends[i % len(ends)] for i in at_frames} | {c % (len(stream) + 1) for c in cuts}
    points = sorted(cut | {0, len(stream)})
    reads = [stream[a:b] for a, b in itertools.pairwise(points) if b > a]
    fast = asyncio.run(_run(CallWebSocketProtocol, reads, max_size))
    parsed = asyncio.run(_run(Parsed, reads, max_size))
    assert fast == parsed


# -- the cases the fast path is for


class Counting(CallWebSocketProtocol):
    """Counts the reads that reach ``websockets``' parser."""

    parsed = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        receive_data = self.conn.receive_data

        def counted(data: bytes | bytearray) -> None:
            self.parsed += 1
            receive_data(data)

        self.conn.receive_data = counted  # type: ignore[method-assign]


async def test_whole_binary_frames_skip_the_parser_and_the_rest_reaches_it() -> None:
    protocol, app = await _opened(Counting, 1 << 20)
    protocol.parsed = 0  # the handshake's read
    pcm = bytes(640)
    protocol.data_received(encode(2, pcm) + encode(2, b"a" * 100) + encode(2, b""))
    assert app.taken == [pcm, b"a" * 100, b""]
    assert protocol.parsed == 0 and protocol.direct.taken == 3
    frame = encode(2, b"b" * 640)
    protocol.data_received(frame[:300])  # a frame cut in two: the parser holds its head
    protocol.data_received(frame[300:] + encode(2, b"c"))
    assert app.taken[3:] == [b"b" * 640, b"c"]
    assert protocol.parsed == 2
    protocol.data_received(encode(2, b"d") + encode(1, b"text") + encode(2, b"e"))
    assert app.taken[5:] == [b"d", "text", b"e"]
    assert protocol.parsed == 3  # from the text frame on
    protocol.data_received(encode(2, b"f"))  # the parser is between frames again
    assert app.taken[-1] == b"f" and protocol.parsed == 3
    protocol.connection_lost(None)
    app.done.set()
    await until(lambda: not protocol.tasks, timeout=10)


@pytest.mark.parametrize("size", [1001, 70000])
async def test_a_frame_over_the_limit_is_refused_by_the_parser(size: int) -> None:
    protocol, app = await _opened(Counting, 1000)
    protocol.parsed = 0  # the handshake's read
    protocol.data_received(encode(2, b"a") + encode(2, bytes(size)) + encode(2, b"b"))
    # the read is dropped (the frame before too), as uvicorn drops a read with an error
    assert app.taken == [] and protocol.parsed == 1
    assert protocol.conn.close_sent is not None and protocol.conn.close_sent.code == 1009
    assert protocol.transport.closing
    assert [m["code"] for m in protocol.queue._queue] == [1009]
    protocol.connection_lost(None)
    app.done.set()
    await until(lambda: not protocol.tasks, timeout=10)
