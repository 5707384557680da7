"""The server's direct path for a call's frames (``antiphon.server.ws_protocol``).

Three layers: the protocol on a recording transport, fed the bytes a client sends (what
it takes inline, what it leaves in ASGI's queue, what it writes now); the bridge on an
in-memory socket with a direct path (order with the queued sends, commands first, limits);
and a call through the real server, which must use the path both ways.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ProtocolError
from websockets.extensions.base import Extension
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import ExtensionName

from antiphon.audio.frame import AudioFrame
from antiphon.server.app import create_app
from antiphon.server.ws_protocol import DIRECT, DirectPath
from antiphon.testing.agent import doubles_agent, silence, speech
from antiphon.testing.asgi import open_protocol, serve_app
from antiphon.testing.leaks import LeakCheck
from antiphon.testing.poll import until
from antiphon.testing.twilio import SimulatedTwilioCall
from antiphon.transports.websocket import BridgeLimits, WebSocketBridge
from test_transport_ws import GatedSocket, session

# -- the protocol, on a recording transport


class RecordingTransport(asyncio.Transport):
    """What the protocol writes, and whether it paused reading; never closes by itself."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.paused_reading = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.paused_reading += 1

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


class Wire:
    """A protocol on a recording transport, and the client's side of the same bytes."""

    def __init__(self, app: Any) -> None:
        self.transport = RecordingTransport()
        self.protocol, self.client = open_protocol(app, self.transport)

    def feed(self) -> None:
        """What the client has to send, to the protocol (one ``data_received``)."""
        data = b"".join(self.client.data_to_send())
        if data:
            self.protocol.data_received(data)

    async def hang_up(self, app: App) -> None:
        """The connection is lost; the app reads its queue to the end and returns."""
        self.protocol.connection_lost(None)
        app.reading.set()
        await until(lambda: app.ended, timeout=10)

    def received(self) -> list[bytes | str]:
        """The messages the client got since last asked (the handshake's response aside)."""
        self.client.receive_data(bytes(self.transport.written))
        self.transport.written.clear()
        got: list[bytes | str] = []
        for event in self.client.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.BINARY:
                got.append(bytes(event.data))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                got.append(bytes(event.data).decode())
        return got


class App:
    """Accepts, sets a receiver (taking the messages that do not start with ``q``), and
    records every message in the order the app got it, marking how it came."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes | str]] = []
        self.direct: DirectPath | None = None
        self.reading = asyncio.Event()  # set: the app reads its queue
        self.ended = False

    def take(self, data: bytes | str) -> bool:
        if data[:1] in (b"q", "q"):
            return False
        if data == b"fail":
            raise RuntimeError("the receiver failed")
        self.got.append(("taken", data))
        return True

    async def __call__(self, scope: Any, receive: Callable[..., Any], send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        self.direct = scope["extensions"][DIRECT]
        self.direct.receiver = self.take
        await self.reading.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.ended = True
                return
            self.got.append(("queued", message.get("bytes") or message.get("text")))


async def _accepted(app: App) -> Wire:
    wire = Wire(app)
    await until(lambda: app.direct is not None, timeout=10)
    wire.received()  # the handshake's response
    return wire


async def test_binary_is_taken_inline_and_the_order_is_kept_behind_queued_messages() -> None:
    app = App()
    wire = await _accepted(app)
    c = wire.client
    c.send_binary(b"1")
    c.send_text(b"text")
    c.send_text(b"q-text")  # declined by the receiver: queued
    c.send_binary(b"2")  # must wait behind it
    c.send_text(b"more")  # and so must this
    wire.feed()  # all five in one read, before the app reads its queue
    assert app.got == [("taken", b"1"), ("taken", "text")]
    app.reading.set()
    await until(lambda: len(app.got) == 5, timeout=10)
    assert app.got[2:] == [("queued", "q-text"), ("queued", b"2"), ("queued", "more")]
    paused = wire.transport.paused_reading
    assert paused >= 1  # queued messages pause reading until the app takes them
    c.send_binary(b"4")  # the queue is empty again
    c.send_text("après".encode())
    wire.feed()
    assert app.got[-2:] == [("taken", b"4"), ("taken", "après")]
    assert app.direct is not None and app.direct.taken == 4
    assert wire.transport.paused_reading == paused  # a taken one does not
    await wire.hang_up(app)


async def test_a_failing_receiver_loses_no_message() -> None:
    app = App()
    app.reading.set()
    wire = await _accepted(app)
    wire.client.send_binary(b"fail")
    wire.feed()
    await until(lambda: app.got == [("queued", b"fail")], timeout=10)
    await wire.hang_up(app)


async def test_send_now_writes_a_message_only_while_the_socket_can_take_it() -> None:
    app = App()
    wire = await _accepted(app)
    direct = app.direct
    assert direct is not None
    assert direct.send_now(b"\x01\x02") and direct.send_now("hello")
    assert wire.received() == [b"\x01\x02", "hello"]
    wire.protocol.pause_writing()  # the transport's buffer is full
    assert not direct.send_now(b"later")
    wire.protocol.resume_writing()
    assert direct.send_now(b"now")
    assert wire.received() == [b"now"]
    assert direct.sent_now == 3
    await wire.hang_up(app)
    assert not direct.send_now(b"gone")
    assert direct.receiver is None  # released with the connection


async def test_send_now_writes_the_bytes_websockets_would() -> None:
    app = App()
    wire = await _accepted(app)
    direct = app.direct
    assert direct is not None
    reference = ServerProtocol()  # websockets' own framing of the same messages
    reference.state = State.OPEN
    messages: list[bytes | str] = [b"", b"\x01", b"a" * 125, b"b" * 126, b"c" * 640]
    messages += [b"d" * 65535, b"e" * 65536, b"f" * 70000, "", "h\u00e9llo", "x" * 300]
    for message in messages:
        assert direct.send_now(message)
        if isinstance(message, bytes):
            reference.send_binary(message)
        else:
            reference.send_text(message.encode())
        assert bytes(wire.transport.written) == b"".join(reference.data_to_send())
        assert wire.received() == [message]
    assert direct.sent_now == len(messages)
    await wire.hang_up(app)


async def test_send_now_lets_websockets_frame_with_an_extension_or_a_fragment_open() -> None:
    app = App()
    wire = await _accepted(app)
    direct = app.direct
    assert direct is not None
    conn = wire.protocol.conn
    conn.expect_continuation_frame = True  # websockets refuses a new message now
    with pytest.raises(ProtocolError):
        direct.send_now(b"x")
    assert not wire.transport.written
    conn.expect_continuation_frame = False
    conn.state = State.CLOSING  # the peer's close frame came in
    assert not direct.send_now(b"x") and not wire.transport.written
    conn.state = State.OPEN
    conn.extensions = [_Reverse()]  # an extension encodes every frame: websockets frames it
    assert direct.send_now(b"abc")
    assert wire.received() == [b"cba"]
    conn.extensions = []
    await wire.hang_up(app)


class _Reverse(Extension):
    """An extension that reverses every frame's payload."""

    name = ExtensionName("x-reverse")

    def encode(self, frame: Frame) -> Frame:
        return dataclasses.replace(frame, data=bytes(frame.data)[::-1])

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return frame


# -- the bridge, on an in-memory socket with a direct path


class FakeDirect:
    """A direct path: ``send_now`` succeeds unless ``paused``; what it sends goes to the
    socket's ``sent`` list, as what the socket sends does."""

    def __init__(self, sent: list[bytes | str]) -> None:
        self.receiver: Callable[[bytes | str], bool] | None = None
        self.paused = False
        self.sent = sent
        self.sent_now = 0

    def send_now(self, data: bytes | str) -> bool:
        if self.paused:
            return False
        self.sent.append(data)
        self.sent_now += 1
        return True


class DirectSocket(GatedSocket):
    def __init__(self) -> None:
        super().__init__()
        self.direct = FakeDirect(self.sent)


def _bridge(**limits: Any) -> tuple[WebSocketBridge, DirectSocket, list[object]]:
    s, services = session()
    ws = DirectSocket()
    return WebSocketBridge(s, ws, limits=BridgeLimits(**limits)), ws, services


async def _until_reading(ws: DirectSocket) -> Callable[[bytes | str], bool]:
    await until(lambda: ws.direct.receiver is not None, timeout=10)
    receiver = ws.direct.receiver
    assert receiver is not None
    return receiver


@pytest.mark.virtual_time
async def test_a_call_on_the_direct_path_is_answered_and_sends_in_order() -> None:
    leaks = LeakCheck()
    bridge, ws, services = _bridge()
    await bridge.session.start()
    run = asyncio.create_task(bridge.run())
    take = await _until_reading(ws)
    for frame in speech(0.6).split(0.02) + silence(0.6).split(0.02):
        assert take(frame.data)
        await asyncio.sleep(0.02)
    await until(lambda: sum(isinstance(m, bytes) for m in ws.sent) >= 20, timeout=30)
    assert bridge.frames_received == 60
    assert ws.direct.sent_now == len(ws.sent)  # nothing held the socket back
    ws.inbox.put_nowait(None)  # the client leaves
    assert await asyncio.wait_for(run, 20) == 1000
    texts = [json.loads(m) for m in ws.sent if isinstance(m, str)]
    assert texts[0]["type"] == "ready"
    first_audio = next(i for i, m in enumerate(ws.sent) if isinstance(m, bytes))
    heard = [
        i
        for i, m in enumerate(ws.sent)
        if isinstance(m, str) and json.loads(m).get("role") == "user"
    ]
    assert heard and heard[0] < first_audio  # the user's transcript before the reply
    assert ws.direct.receiver is None  # released when the reader ended
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]
    await leaks.assert_clean(settle=1.0)


class Tape:
    """A recorder double: the agent's frames it was given."""

    path = "tape.wav"

    def __init__(self) -> None:
        self.agent_frames: list[AudioFrame] = []

    def user(self, frame: AudioFrame) -> None:
        pass

    def agent(self, frame: AudioFrame) -> None:
        self.agent_frames.append(frame)

    async def aclose(self) -> None:
        pass


@pytest.mark.virtual_time
async def test_agent_audio_is_counted_and_recorded_as_sent_the_direct_way_or_queued() -> None:
    s, services = session()
    ws = DirectSocket()
    tape = Tape()
    bridge = WebSocketBridge(s, ws, recorder=tape)  # type: ignore[arg-type]
    await s.start()
    run = asyncio.create_task(bridge.run())
    await _until_reading(ws)
    output = s.output
    samples = round(output.sample_rate * 0.02)
    for _ in range(5):
        await output.write(AudioFrame(b"\x01\x00" * samples, output.sample_rate))
    await until(lambda: bridge.frames_sent == 5, timeout=10)
    assert ws.direct.sent_now == 6  # "ready", then every frame as it was due
    ws.direct.paused = True  # the transport's buffer is full
    ws.gate.clear()  # and the queued send waits for it
    for _ in range(3):
        await output.write(AudioFrame(b"\x02\x00" * samples, output.sample_rate))
    await until(lambda: bridge._sending and output.buffered == 0, timeout=10)
    assert bridge.frames_sent == 5 and len(tape.agent_frames) == 5  # queued: not yet sent
    ws.direct.paused = False  # the frames queued behind the held one stay behind it
    ws.gate.set()
    await until(lambda: bridge.frames_sent == 8, timeout=10)
    audio = [m for m in ws.sent if isinstance(m, bytes)]
    assert [m[:2] for m in audio] == [b"\x01\x00"] * 5 + [b"\x02\x00"] * 3
    assert [f.data for f in tape.agent_frames] == audio
    assert ws.direct.sent_now == 6
    ws.inbox.put_nowait(None)
    assert await asyncio.wait_for(run, 20) == 1000
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]


@pytest.mark.virtual_time
async def test_a_send_held_back_keeps_the_later_ones_behind_it() -> None:
    bridge, ws, services = _bridge()
    await bridge.session.start()
    run = asyncio.create_task(bridge.run())
    await _until_reading(ws)
    ws.direct.paused = True  # the transport's buffer is full
    ws.gate.clear()  # and the queued send waits for it
    bridge._queue("m1")
    await until(lambda: bridge._sending, timeout=10)
    ws.direct.paused = False
    bridge._queue("m2")  # m1 is in flight: m2 may not pass it
    await asyncio.sleep(0.1)
    assert "m1" not in ws.sent and "m2" not in ws.sent
    ws.gate.set()
    await until(lambda: "m2" in ws.sent, timeout=10)
    bridge._queue("m3")  # nothing queued or in flight: written now
    assert ws.sent[-3:] == ["m1", "m2", "m3"]
    ws.inbox.put_nowait(None)
    assert await asyncio.wait_for(run, 20) == 1000
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]


@pytest.mark.virtual_time
async def test_audio_waits_behind_a_command_the_reader_is_acting_on() -> None:
    bridge, ws, services = _bridge()
    await bridge.session.start()
    run = asyncio.create_task(bridge.run())
    take = await _until_reading(ws)
    ws.inbox.put_nowait(json.dumps({"type": "say", "text": "Welcome to the line."}))
    ws.inbox.put_nowait(json.dumps({"type": "end"}))  # waits until the welcome is spoken
    await until(lambda: bridge._reader_busy, timeout=10)
    assert not take(b"\x00\x00" * 320)  # left for the reader, which never reads it
    assert await asyncio.wait_for(run, 20) == 1000
    assert bridge.frames_received == 0
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]


@pytest.mark.virtual_time
@pytest.mark.parametrize(
    ("data", "code"),
    [(b"\x00" * 3, 1008), (b"\x00\x00" * 40000, 1009)],
    ids=["odd-length", "too-big"],
)
async def test_audio_over_a_limit_on_the_direct_path_ends_the_call_as_the_reader_would(
    data: bytes, code: int
) -> None:
    bridge, ws, services = _bridge()
    await bridge.session.start()
    run = asyncio.create_task(bridge.run())
    take = await _until_reading(ws)
    assert take(data)
    assert await asyncio.wait_for(run, 20) == code
    assert ws.closed is not None and ws.closed[0] == code
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]


# -- a call through the real server


@pytest.mark.realtime  # a real server on loopback; nothing here is timed
async def test_a_call_through_the_server_takes_and_sends_its_frames_directly() -> None:
    agent = doubles_agent(["what time is it"], [], min_silence=0.3, default_reply="It is noon.")
    app = create_app(agent, max_sessions=2)
    paths: list[DirectPath] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            paths.append(scope["extensions"][DIRECT])
        await app(scope, receive, send)

    turn = speech(0.6).split(0.02) + silence(0.5).split(0.02)
    audio = 0
    async with serve_app(recording) as host, connect(f"ws://{host}/ws/agent") as ws:
        for frame in turn:
            await ws.send(frame.data)
        async for message in ws:
            if isinstance(message, bytes):
                audio += 1
            elif audio and json.loads(message).get("state") == "listening":
                break
    assert audio >= 10
    (path,) = paths
    assert path.taken > len(turn) // 2  # most frames, at least: none queue behind a command
    assert path.sent_now >= audio


@pytest.mark.realtime  # a real server on loopback; nothing here is timed
async def test_a_phone_call_through_the_server_takes_and_sends_its_messages_directly() -> None:
    reply = "Thanks for calling. How can I help?"
    app = create_app(doubles_agent(["hello"], [reply]), max_sessions=2)
    paths: list[DirectPath] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            paths.append(scope["extensions"][DIRECT])
        await app(scope, receive, send)

    async with serve_app(recording) as host:
        async with SimulatedTwilioCall(f"ws://{host}/twilio/media") as call:
            await call.speak(speech(0.6, 8000))
            await call.speak(silence(0.6, 8000))
            await until(lambda: "turn-1" in call.received.marks, 20)
            assert len(call.received.media) * 0.02 == pytest.approx(len(reply) * 0.06, abs=0.1)
            await call.hang_up()
        assert call.close_code == 1000
    (path,) = paths
    assert path.taken > 30  # the caller's media (1.2 s), after the start the server read
    assert path.sent_now >= len(call.received.media)
