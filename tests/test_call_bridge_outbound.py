"""The outbound path of a call: the output pulled without a task, one send deadline per call.

On virtual time: the deadline is asserted to fire exactly ``send_timeout`` after the send
that stalled began, however many sends came before it.
"""

from __future__ import annotations

import asyncio

import pytest

from antiphon.aio.clock import VirtualClock
from antiphon.audio.frame import AudioFrame
from antiphon.audio.track import OutputTrack
from antiphon.errors import StreamClosedError
from antiphon.testing.agent import speech
from antiphon.testing.leaks import LeakCheck
from antiphon.transports.websocket import BridgeLimits, WebSocketBridge
from test_transport_ws import MemorySocket, session

pytestmark = pytest.mark.virtual_time
STALL = "the one that stalls"


class TimedSocket(MemorySocket):
    """Each send takes ``per_send`` seconds; sending ``STALL`` never ends.

    Records when the stalled send began and when it was cancelled, the task of every
    binary send, and the send deadline's timer seen at each send."""

    def __init__(self, per_send: float) -> None:
        super().__init__()
        self.per_send = per_send
        self.stalled_at: float | None = None
        self.cancelled_at: float | None = None
        self.timers: list[object] = []
        self.bridge: WebSocketBridge | None = None
        self.progress = asyncio.Event()  # set at every send done

    async def _send(self, data: bytes | str) -> None:
        loop = asyncio.get_running_loop()
        assert self.bridge is not None
        self.timers.append(self.bridge._watchdog)
        if data == STALL:
            self.stalled_at = loop.time()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled_at = loop.time()
                raise
        await asyncio.sleep(self.per_send)
        self.sent.append(data)
        self.progress.set()


@pytest.mark.parametrize("send_timeout", [0.5, 5.0])
async def test_one_lazily_rearmed_deadline_ends_a_stalled_send_at_the_configured_time(
    send_timeout: float,
) -> None:
    leaks = LeakCheck()
    s, services = session()
    ws = TimedSocket(per_send=0.01)  # 4 s of quick sends, then a stall
    bridge = WebSocketBridge(s, ws, limits=BridgeLimits(send_timeout=send_timeout))
    ws.bridge = bridge
    await s.start()
    run = asyncio.create_task(bridge.run())
    for i in range(400):  # a message at a time, each sent before the next is queued
        bridge._queue(f"m{i}")
        while not ws.sent or ws.sent[-1] != f"m{i}":
            ws.progress.clear()
            await ws.progress.wait()
    bridge._queue(STALL)
    assert await asyncio.wait_for(run, 60) == 1008
    assert ws.closed == (1008, "the peer stopped reading")
    assert ws.stalled_at is not None and ws.cancelled_at is not None
    assert ws.cancelled_at - ws.stalled_at == pytest.approx(send_timeout, abs=1e-6)
    # one timer per call, set again only when it fired: not one per send
    distinct = {id(t) for t in ws.timers if t is not None}
    assert len(ws.timers) > 400 and len(distinct) <= 4.0 / send_timeout + 2
    assert bridge._watchdog is None
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]
    await leaks.assert_clean(settle=1.0)


async def test_a_peer_idle_for_longer_than_the_deadline_is_not_ended() -> None:
    s, services = session()
    ws = TimedSocket(per_send=0.0)
    bridge = WebSocketBridge(s, ws, limits=BridgeLimits(send_timeout=0.5))
    ws.bridge = bridge
    await s.start()
    run = asyncio.create_task(bridge.run())
    for i in range(3):
        bridge._queue(f"m{i}")
        await asyncio.sleep(2.0)  # nothing to send for four deadlines
    assert not run.done()
    assert [m for m in ws.sent if m in ("m0", "m1", "m2")] == ["m0", "m1", "m2"]
    bridge.end(1000, "done")
    assert await asyncio.wait_for(run, 10) == 1000
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]


async def test_agent_audio_reaches_the_socket_from_the_sender_without_an_audio_task() -> None:
    s, services = session()
    senders: set[str] = set()
    audio_tasks: list[str] = []
    twenty = asyncio.Event()

    class Recording(MemorySocket):
        async def send_bytes(self, data: bytes) -> None:
            task = asyncio.current_task()
            assert task is not None
            senders.add(task.get_name())
            audio_tasks.extend(
                t.get_name() for t in asyncio.all_tasks() if t.get_name().endswith("-audio")
            )
            await super().send_bytes(data)
            if sum(isinstance(m, bytes) for m in self.sent) >= 20:
                twenty.set()

    ws = Recording()
    bridge = WebSocketBridge(s, ws)
    await s.start()
    run = asyncio.create_task(bridge.run())
    for frame in speech(0.6).split(0.02):
        ws.inbox.put_nowait(frame.data)
    for _ in range(40):
        ws.inbox.put_nowait(b"\x00\x00" * 320)
    await asyncio.wait_for(twenty.wait(), 30)
    assert senders == {f"{bridge.name}-send"}
    assert audio_tasks == []
    bridge.end(1000, "done")
    assert await asyncio.wait_for(run, 10) == 1000
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]


async def test_poll_and_notify_pace_like_read() -> None:
    clock = VirtualClock(10.0)
    track = OutputTrack(16000, clock=clock)
    frame = AudioFrame(b"\x01\x00" * 320, 16000)  # 20 ms
    woken: list[float] = []

    def wake() -> None:
        woken.append(clock.now())

    for _ in range(3):
        await track.write(frame)
    got = [track.poll()]
    assert got[0] is not None and track.poll() is None
    for _ in range(2):
        track.notify(wake)
        await clock.advance(0.02)
        got.append(track.poll())
    assert all(f is not None for f in got)
    assert woken == pytest.approx([10.02, 10.04])
    # an underrun: nothing queued, so the callback waits for audio, and pacing restarts
    assert track.poll() is None
    track.notify(wake)
    await clock.advance(1.0)
    assert len(woken) == 2
    await track.write(frame)
    await track.write(frame)
    await asyncio.sleep(0)
    assert woken[-1] == pytest.approx(11.04)
    assert track.poll() is not None and track.poll() is None  # no burst of "late" frames
    # closing wakes a waiting callback; poll then says the track is closed
    track.notify(wake)
    await track.aclose()
    await asyncio.sleep(0)
    assert len(woken) == 4
    with pytest.raises(StreamClosedError):
        track.poll()


async def test_poll_each_gives_the_frames_poll_would_with_one_clock_read() -> None:
    clock = VirtualClock(5.0)
    track = OutputTrack(16000, clock=clock)
    reads = 0
    now = clock.now

    def counted() -> float:
        nonlocal reads
        reads += 1
        return now()

    clock.now = counted  # type: ignore[method-assign]
    for i in range(6):
        await track.write(AudioFrame(bytes([i, 0]) * 320, 16000, generation=i // 3))
    got: list[tuple[bytes, int]] = []

    def take(data: bytes, generation: int) -> None:
        got.append((data[:2], generation))

    track.poll_each(take)  # the first frame only: the rest are not due yet
    assert got == [(b"\x00\x00", 0)] and reads == 1
    await clock.advance(0.045)  # two more are due: given at once, in order
    track.poll_each(take)
    assert got[1:] == [(b"\x01\x00", 0), (b"\x02\x00", 0)] and reads == 2
    woken: list[float] = []
    track.notify(lambda: woken.append(now()))  # at the fourth frame's release time
    await asyncio.sleep(0)  # its timer task starts
    await clock.advance(0.02)
    assert woken == pytest.approx([5.06])
    track.interrupt(2)  # nothing of what was queued is given after an interruption
    track.poll_each(take)
    assert len(got) == 3 and track.buffered == 0
    # with a mixer, the mixed frames' bytes
    track.mixer = lambda frame, voiced: AudioFrame(b"\x07\x00" * 320, 16000, generation=9)
    await track.write(AudioFrame(b"\x03\x00" * 320, 16000, generation=2))
    await clock.advance(0.02)
    track.poll_each(take)
    assert got[3:] == [(b"\x07\x00", 9)]
    # an interruption from within take: no more of the queued audio is given
    track.mixer = None
    for _ in range(3):
        await track.write(AudioFrame(b"\x04\x00" * 320, 16000, generation=2))
    await clock.advance(1.0)  # all three are due

    def barge_in(data: bytes, generation: int) -> None:
        take(data, generation)
        track.interrupt(3)

    track.poll_each(barge_in)
    assert got[4:] == [(b"\x04\x00", 2)] and track.buffered == 0
    await track.aclose()
    with pytest.raises(StreamClosedError):
        track.poll_each(take)


async def test_interrupt_between_polls_drops_the_queued_audio_at_once() -> None:
    clock = VirtualClock()
    track = OutputTrack(16000, clock=clock)
    for _ in range(10):
        await track.write(AudioFrame(b"\x01\x00" * 320, 16000))
    assert track.poll() is not None
    track.notify(lambda: None)
    track.interrupt(1)
    await clock.advance(0.02)
    assert track.poll() is None and track.buffered == 0
    await track.write(AudioFrame(b"\x02\x00" * 320, 16000, generation=1))
    nxt = track.poll()
    assert nxt is not None and nxt.data[:2] == b"\x02\x00" and nxt.generation == 1
    track.cancel_notify()
    await track.aclose()


async def test_a_failure_while_queueing_agent_audio_ends_the_call_with_1011() -> None:
    leaks = LeakCheck()
    s, services = session()

    class Broken(WebSocketBridge):
        def _audio_out(self, pcm: bytes, generation: int) -> None:
            raise RuntimeError("cannot encode")

    ws = MemorySocket()
    bridge = Broken(s, ws)
    await s.start()
    run = asyncio.create_task(bridge.run())
    await s.output.write(AudioFrame(b"\x01\x00" * 320, s.output.sample_rate))
    assert await asyncio.wait_for(run, 10) == 1011
    assert ws.closed == (1011, "internal error")
    for service in services:
        await service.aclose()  # type: ignore[attr-defined]
    await leaks.assert_clean(settle=1.0)
