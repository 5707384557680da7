"""The server's WebSocket protocol: uvicorn's sans-I/O one, with a direct path for calls.

How it is built: :class:`CallWebSocketProtocol` is uvicorn's ``WebSocketsSansIOProtocol``
(``websockets``' sans-I/O parser run in the transport's callbacks) with one ASGI scope
extension, ``"antiphon.direct"``: a :class:`DirectPath` (a
:class:`~antiphon.transports.base.DirectWire`) through which the app may

- **take messages in the callback that parsed them** (``receiver``), instead of through
  ASGI's receive queue and a wake-up of the app's reader task. A message the receiver
  declines (it returns False), and every message while older ones wait in the queue,
  goes through the queue as before, so the order is kept; the disconnect always does.
- **send a message now** (:meth:`DirectPath.send_now`): written to the transport at
  once when nothing holds it back (the socket open and writable); otherwise the app
  sends it through ASGI's ``send``, which waits for the transport as before.

Why: a call moves a 20 ms frame each way. Through ASGI alone, each frame in paused and
resumed the transport's reading and woke the reader task, and each frame out woke the
sender task and crossed three awaited layers (``docs/performance.md``). Any other ASGI
server serves the same app without the extension; the app then uses ASGI only.

**Whole binary frames skip the parser.** A caller's frame (640 bytes of PCM, one masked
binary frame) cost more in ``websockets``' generator-based parser (a buffer copied in and
out, a ``Frame`` and its checks, uvicorn's dispatch on it) than the receiver spent on it.
So while the parser waits at a frame boundary (nothing buffered, no fragmented message,
no close sent or received, no extension, no debug log) and a receiver is installed,
:meth:`CallWebSocketProtocol.data_received` reads the complete, unfragmented, masked
binary frames (FIN, opcode 2, no RSV bit, payload within ``max_size`` and under 64 KiB)
at the head of the bytes itself. The rest of the bytes, from the first thing it does not
take (any other frame, a partial one, one over the size limit or of 64 KiB or more), goes
to the parser first, which is still at a frame boundary: it sees a stream whose taken
frames were never there, and reacts to the rest as it would have (a 1009 for a frame over
the limit, a 1002 for an unmasked one; a read with such an error is dropped whole, its
binary frames too, as uvicorn drops it). Then each binary frame, unmasked, goes where
uvicorn's dispatch would send it (the receiver, or the queue behind a declined one), then
the parser's events: what the app sees is what it saw with the parser alone (a property
test, ``tests/test_ws_fast_binary.py``, holds the two paths to it). Whether the parser
waits at a frame boundary is read from its generator chain (``Protocol.parse`` suspended
in ``StreamReader.at_eof``) after each call that fed it; if a version of ``websockets``
parses otherwise, the check fails and every frame takes the parser's path.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request
from websockets.protocol import OPEN, Protocol
from websockets.streams import StreamReader

try:  # websockets' own C unmasking, as its parser uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without its C extension
    from websockets.utils import apply_mask

__all__ = ["DIRECT", "CallWebSocketProtocol", "DirectPath"]

log = logging.getLogger(__name__)

DIRECT = "antiphon.direct"
"""The ASGI scope extension that holds a connection's :class:`DirectPath`."""

_HEAD16 = struct.Struct("!BBH").pack  # a frame's header with a 16-bit payload length
_PARSE = Protocol.parse.__code__
_AT_EOF = StreamReader.at_eof.__code__


def _between_frames(conn: Protocol) -> bool:
    """Whether ``conn``'s parser waits for the first byte of a frame, holding nothing:
    ``Protocol.parse`` suspended in ``StreamReader.at_eof`` (not ``discard``, not a
    frame begun, not stopped by an error) with an empty buffer."""
    if conn.reader.buffer:
        return False
    outer: Any = None
    inner: Any = conn.parser
    while (sub := getattr(inner, "gi_yieldfrom", None)) is not None:
        outer, inner = inner, sub
    return (
        outer is not None
        and getattr(inner, "gi_code", None) is _AT_EOF
        and getattr(outer, "gi_code", None) is _PARSE
    )


class DirectPath:
    """One connection's way around ASGI's queue (see the module docstring)."""

    __slots__ = ("_protocol", "receiver", "sent_now", "taken")

    def __init__(self, protocol: CallWebSocketProtocol) -> None:
        self._protocol: CallWebSocketProtocol | None = protocol
        self.receiver: Callable[[bytes | str], bool] | None = None
        """Takes a message in the protocol's callback; False leaves it queued."""
        self.taken = 0
        """Messages the receiver took."""
        self.sent_now = 0
        """Messages :meth:`send_now` wrote."""

    def send_now(self, data: bytes | str) -> bool:
        """Write ``data`` as one message now, if the socket is open and writable.

        False: nothing was written (the transport is paused, or the socket closing);
        send it through ASGI's ``send``.

        A server's frame without an extension is its payload behind a 2- or 4-byte
        header, unmasked: built here and written with one ``transport.write``, the same
        bytes websockets' ``send_binary``/``send_text`` and ``data_to_send`` make (it keeps
        no state for a data frame sent). With an extension (permessage-deflate), a frame
        in progress, debug logging or output not yet taken, websockets frames it.
        """
        p = self._protocol
        if (
            p is None
            or p.close_sent
            or p.disconnected
            or not p.handshake_complete
            or p.initial_response is not None
            or not p.writable.is_set()
            or p.transport.is_closing()
        ):
            return False
        conn = p.conn
        if isinstance(data, bytes):
            payload, head = data, 0x82  # FIN, binary
        else:
            payload, head = data.encode(), 0x81  # FIN, text
        n = len(payload)
        if (
            conn.state is not OPEN
            or conn.extensions
            or conn.expect_continuation_frame
            or conn.debug
            or conn.writes
            or n >= 65536
        ):
            return self._send_framed(p, payload, head == 0x82)
        if n < 126:
            p.transport.write(bytes((head, n)) + payload)
        else:
            p.transport.write(_HEAD16(head, 126, n) + payload)
        self.sent_now += 1
        return True

    def _send_framed(self, p: CallWebSocketProtocol, payload: bytes, binary: bool) -> bool:
        """:meth:`send_now` through websockets' framing (extensions, large messages)."""
        try:
            if binary:
                p.conn.send_binary(payload)
            else:
                p.conn.send_text(payload)
        except InvalidState:
            return False
        p.transport.write(b"".join(p.conn.data_to_send()))
        self.sent_now += 1
        return True

    def release(self) -> None:
        """The connection is gone: nothing more is taken or sent this way (and the
        protocol, which holds this path, is no longer held by it)."""
        self.receiver = None
        self._protocol = None


class CallWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with the ``"antiphon.direct"`` extension.

    Passed to ``uvicorn.Config(ws=...)`` by ``antiphon serve`` and the tests' servers.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct = DirectPath(self)
        self._between_frames = False  # the parser waits at a frame boundary, empty

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if not (
            self._between_frames
            and self.direct.receiver is not None
            and conn.current_size is None  # no fragmented message in progress
            and conn.close_sent is None
            and not conn.extensions  # an RSV bit means nothing: the parser refuses it
            and not conn.debug  # the parser logs every frame
        ):
            super().data_received(data)
            self._between_frames = _between_frames(conn)
            return
        spans = self._whole_binary_frames(data)
        if not spans:
            super().data_received(data)
            self._between_frames = _between_frames(conn)
            return
        rest = spans[-1][1] < len(data)
        if rest:  # parsed first, as uvicorn parses a read whole before acting on it
            conn.receive_data(data[spans[-1][1] :])
            if conn.parser_exc is not None:  # the read's messages are dropped, as there
                self.handle_parser_exception()
                self._between_frames = False
                return
        direct = self.direct
        for start, end in spans:
            message = apply_mask(data[start:end], data[start - 4 : start])
            receiver = direct.receiver
            if receiver is not None and not self.close_sent and self.queue.empty():
                try:
                    taken = receiver(message)
                except Exception:  # the receiver's own failure: the message is queued
                    log.exception("the direct receiver failed")
                    taken = False
                if taken:
                    direct.taken += 1
                    continue
            self.curr_msg_data_type = "bytes"  # as the parser's path queues it
            self.frames = [message]
            WebSocketsSansIOProtocol.send_receive_event_to_app(self)
        if rest:
            self.handle_events()
            self._between_frames = _between_frames(conn)

    def _whole_binary_frames(self, data: bytes) -> list[tuple[int, int]]:
        """Where the payloads of the whole, unfragmented, masked binary frames at the
        head of ``data`` are, up to the first frame that is not one (or is cut short, or
        is over the size limit, or is 64 KiB or more)."""
        conn = self.conn
        limit = conn.max_message_size
        if conn.max_fragment_size is not None:
            limit = conn.max_fragment_size if limit is None else min(limit, conn.max_fragment_size)
        spans: list[tuple[int, int]] = []
        size = len(data)
        at = 0
        while size - at >= 6:  # the smallest masked header
            if data[at] != 0x82:  # FIN, no RSV bit, binary
                break
            length = data[at + 1] ^ 0x80  # the mask bit set: a client's frame
            if length < 126:
                start = at + 6
            elif length == 126 and size - at >= 8:
                length = (data[at + 2] << 8) | data[at + 3]
                start = at + 8
            else:  # unmasked, 64 KiB or more, or a header cut short: the parser's
                break
            at = start + length
            if at > size or (limit is not None and length > limit):
                break
            spans.append((start, at))
        return spans

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # none when the handshake was refused
        if scope is not None:
            scope["extensions"][DIRECT] = self.direct

    def send_receive_event_to_app(self) -> None:
        receiver = self.direct.receiver
        if receiver is not None and not self.close_sent and self.queue.empty():
            frames = self.frames
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            message: bytes | str
            if self.curr_msg_data_type == "bytes":
                message = data if type(data) is bytes else bytes(data)
            else:
                try:
                    message = str(data, "utf-8")
                except UnicodeDecodeError:  # uvicorn's own path closes with 1007
                    return super().send_receive_event_to_app()
            try:
                taken = receiver(message)
            except Exception:  # the receiver's own failure: the message is queued, not lost
                log.exception("the direct receiver failed")
                taken = False
            if taken:
                self.frames = []
                self.direct.taken += 1
                return
        super().send_receive_event_to_app()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # the app's reader learns of it from the queue
        self.direct.release()
