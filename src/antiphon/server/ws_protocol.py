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
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request
from websockets.protocol import OPEN

__all__ = ["DIRECT", "CallWebSocketProtocol", "DirectPath"]

log = logging.getLogger(__name__)

DIRECT = "antiphon.direct"
"""The ASGI scope extension that holds a connection's :class:`DirectPath`."""

_HEAD16 = struct.Struct("!BBH").pack  # a frame's header with a 16-bit payload length


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
