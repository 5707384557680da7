"""The STT stream's direct path for audio (``RecognizeStream._take_audio_now``).

A stream may take a pushed frame in the caller's ``push_audio`` instead of waking its task
through the mailbox; it is offered the frame only while its task waits on an empty
mailbox. These tests drive a recording stream through every mix of the two paths and
check the contract: the stream sees audio, flushes and the end in the order they were
pushed; ``behind`` and the queued flushes stay exact; the mailbox's bound still fails the
stream; a failure on the direct path fails the stream once, with its typed error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.protocol import State

from antiphon.audio.frame import AudioFrame
from antiphon.errors import (
    ChannelFull,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    StreamClosedError,
)
from antiphon.plugins.deepgram import DeepgramSTT
from antiphon.services.stt import (
    STT,
    AudioInput,
    EndInput,
    FlushInput,
    RecognizeStream,
    StreamState,
    Transcript,
)
from antiphon.services.ws_stt import WebSocketRecognizeStream
from antiphon.testing import FaultPlan, serving
from antiphon.testing.conformance.stt_ws import FAST, speech
from antiphon.testing.deepgram_stt import DEFAULT_API_KEY as DG_KEY
from antiphon.testing.deepgram_stt import FakeDeepgramSTT
from antiphon.testing.doubles import ScriptedSTT
from antiphon.testing.poll import until

RATE = 8000


def frame(n: int) -> AudioFrame:
    """20 ms of audio whose samples all say ``n`` (so the stream can log which it got)."""
    return AudioFrame((n % 30000).to_bytes(2, "little", signed=True) * 160, RATE)


def number(f: AudioFrame) -> int:
    return int.from_bytes(f.data[:2], "little", signed=True)


class Recording(RecognizeStream):
    """Logs what it takes, in order, and by which path; faults on cue.

    ``accept``: whether the direct path takes the next frame offered. ``hold``: the task
    waits on it after taking a flush (busy). ``raise_on``: the frame whose direct take
    raises. ``misuse``: direct takes made while the mailbox held something or the task
    was busy (must stay empty).
    """

    max_input: ClassVar[int] = 64  # above what the property test queues

    def __init__(self, stt: RecordingSTT, generation: int) -> None:
        self.log: list[tuple[str, int]] = []
        self.accept: Iterator[bool] = iter(lambda: True, None)
        self.hold: asyncio.Event | None = None
        self.busy = False
        self.raise_on: tuple[int, Exception] | None = None
        self.misuse: list[int] = []
        super().__init__(
            provider="recording", generation=generation, owner=stt._tasks, close_timeout=1.0
        )

    def _take_audio_now(self, frame: AudioFrame) -> bool:
        n = number(frame)
        if self.busy or self._mailbox.qsize():
            self.misuse.append(n)
        if not next(self.accept):
            return False
        if self.raise_on is not None and self.raise_on[0] == n:
            raise self.raise_on[1]
        self.log.append(("direct", n))
        self._emit(Transcript(str(n), False, 0.0, 0.0))
        return True

    async def _run(self) -> None:
        async for item in self._mailbox:
            if isinstance(item, AudioInput):
                self.log.append(("mailbox", number(item.frame)))
            elif isinstance(item, FlushInput):
                self._took_flush()
                self.log.append(("flush", 0))
                if self.hold is not None:
                    self.busy = True
                    await self.hold.wait()
                    self.busy = False
            elif isinstance(item, EndInput):
                self.log.append(("end", 0))
                return


class RecordingSTT(STT):
    provider: ClassVar[str] = "recording"

    def _new_stream(self, generation: int) -> RecognizeStream:
        return Recording(self, generation)

    def open(self) -> Recording:
        s = self.stream()
        assert isinstance(s, Recording)
        return s


async def settle(s: RecognizeStream) -> None:
    """Let the stream's task take what is queued (a few loop turns, no time)."""
    for _ in range(5):
        await asyncio.sleep(0)


def taken(s: Recording) -> list[tuple[str, int]]:
    """The log without the path: what the stream saw, in order."""
    return [("audio", n) if what in ("direct", "mailbox") else (what, n) for what, n in s.log]


# -- ordering, over every mix of the two paths

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.booleans()),  # the direct path accepts it or not
        st.tuples(st.just("flush"), st.booleans()),  # the task is busy after it or not
        st.tuples(st.just("turn"), st.just(False)),  # the task runs (and a busy one ends)
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_order_kept_whatever_path_each_frame_takes(ops: list[tuple[str, bool]]) -> None:
    async def scenario() -> None:
        async with RecordingSTT() as stt:
            s = stt.open()
            accepts: list[bool] = []
            s.accept = iter(accepts.pop, None)
            expected: list[tuple[str, int]] = []
            pushed = 0
            hold: asyncio.Event | None = None
            for op, flag in ops:
                if op == "push":
                    accepts[:] = [flag]
                    waiting = s._mailbox.receiver_waiting()
                    s.push_audio(frame(pushed))
                    expected.append(("audio", pushed))
                    # offered only to a waiting task; behind exactly when it went to the mailbox
                    assert accepts == ([] if waiting else [flag])
                    assert s.behind is not (waiting and flag)
                    pushed += 1
                elif op == "flush":
                    if flag and hold is None:
                        hold = s.hold = asyncio.Event()
                    s.flush()
                    expected.append(("flush", 0))
                else:
                    if hold is not None:
                        hold.set()
                        hold = s.hold = None
                    await settle(s)
                    assert s._flushes_queued == sum(
                        1 for item in s._mailbox._items if isinstance(item, FlushInput)
                    )
            if hold is not None:
                hold.set()
                s.hold = None
            s.end_input()
            expected.append(("end", 0))
            assert await s.wait() is StreamState.COMPLETED
            assert taken(s) == expected
            assert s.misuse == []
            assert s._flushes_queued == 0
            assert not s.behind

    asyncio.run(scenario())


async def test_a_waiting_task_takes_audio_directly_and_a_busy_one_through_the_mailbox() -> None:
    async with RecordingSTT() as stt:
        s = stt.open()
        s.push_audio(frame(0))  # the task has not run yet: queued
        await settle(s)
        s.push_audio(frame(1))  # the task waits: taken at once
        assert s.log == [("mailbox", 0), ("direct", 1)]
        assert not s.behind
        s.hold = asyncio.Event()
        s.flush()
        s.push_audio(frame(2))  # a flush is queued: behind it
        await settle(s)
        assert s.busy
        s.push_audio(frame(3))  # the task is busy with the flush: queued
        assert s.behind
        assert s.log == [("mailbox", 0), ("direct", 1), ("flush", 0)]
        s.hold.set()
        await settle(s)
        s.push_audio(frame(4))
        s.end_input()
        assert await s.wait() is StreamState.COMPLETED
        assert [t.text async for t in s] == ["1", "4"]
        assert s.log[3:] == [("mailbox", 2), ("mailbox", 3), ("direct", 4), ("end", 0)]
        assert s.misuse == []


async def test_declined_frames_go_through_the_mailbox_in_order() -> None:
    async with RecordingSTT() as stt:
        s = stt.open()
        await settle(s)
        s.accept = iter([False, True, False, False, True].__iter__())
        for n in range(5):
            s.push_audio(frame(n))
            await settle(s)
        s.end_input()
        assert await s.wait() is StreamState.COMPLETED
        assert s.log == [
            ("mailbox", 0),
            ("direct", 1),
            ("mailbox", 2),
            ("mailbox", 3),
            ("direct", 4),
            ("end", 0),
        ]


# -- the bound


async def test_a_busy_task_still_overflows_its_mailbox_and_fails_the_stream() -> None:
    async with RecordingSTT() as stt:
        s = stt.open()
        await settle(s)
        for n in range(3 * Recording.max_input):  # a waiting task: no bound is reached
            s.push_audio(frame(n))
        assert len(s.log) == 3 * Recording.max_input
        s.hold = asyncio.Event()
        s.flush()
        await settle(s)
        for n in range(Recording.max_input):
            s.push_audio(frame(n))
        with pytest.raises(StreamClosedError, match="fell behind its input"):
            s.push_audio(frame(99))
        assert s.state is StreamState.FAILED
        assert s.error is not None and s.error.stage == "input"
        with pytest.raises(StreamClosedError):
            s.push_audio(frame(100))


# -- failures on the direct path


@pytest.mark.parametrize(
    ("raised", "stage"),
    [
        (ProviderError("the engine broke", provider="recording", stage="send"), "send"),
        (ChannelFull("full", maxsize=3, what="recording stream output"), "output"),
        (RuntimeError("a bug"), "stream"),
    ],
    ids=["provider-error", "output-full", "unexpected"],
)
async def test_a_failure_on_the_direct_path_fails_the_stream_once_with_its_typed_error(
    raised: Exception, stage: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with RecordingSTT() as stt:
        s = stt.open()
        s.push_audio(frame(0))
        await settle(s)
        s.raise_on = (1, raised)
        s.push_audio(frame(1))  # taken, and the stream failed on it: the push returns
        assert s.state is StreamState.FAILED
        error = s.error
        assert error is not None and error.stage == stage
        if isinstance(raised, ProviderError):
            assert error is raised
        with pytest.raises(StreamClosedError, match="failed"):
            s.push_audio(frame(2))
        with pytest.raises(StreamClosedError):
            s.flush()
        s.cancel()
        await s.aclose()
        assert s.state is StreamState.FAILED and s.error is error  # one terminal state
        assert s._task.done()
        with pytest.raises(ProviderError) as got:
            [t async for t in s]
        assert got.value is error
        assert s.log == [("mailbox", 0)]


async def test_a_stream_without_a_direct_path_queues_every_frame() -> None:
    class Plain(RecognizeStream):
        async def _run(self) -> None:
            async for item in self._mailbox:
                if isinstance(item, EndInput):
                    return

    class PlainSTT(STT):
        def _new_stream(self, generation: int) -> RecognizeStream:
            return Plain(
                provider="plain", generation=generation, owner=self._tasks, close_timeout=1.0
            )

    async with PlainSTT() as stt:
        s = stt.stream()
        await settle(s)
        assert s._mailbox.receiver_waiting()
        s.push_audio(frame(0))
        assert s.behind  # declined by the default: queued
        s.end_input()
        assert await s.wait() is StreamState.COMPLETED


# -- the scripted double


async def _scripted(direct: bool) -> tuple[list[Transcript], int]:
    stt = ScriptedSTT(["one two three", "four five"], interim_every=0.1, direct_audio=direct)
    async with stt:
        s = stt.stream()
        direct_takes = 0
        for _utterance in range(2):
            for n in range(30):
                s.push_audio(frame(n))
                direct_takes += not s.behind
                await settle(s)
            s.flush()
            await settle(s)
        s.end_input()
        got = [t async for t in s]
        return got, direct_takes


async def test_the_scripted_double_hears_the_same_on_both_paths() -> None:
    direct, taken_direct = await _scripted(True)
    queued, taken_queued = await _scripted(False)
    assert taken_queued == 0
    assert taken_direct == 59  # all but the first frame, pushed before the task ran
    assert direct == queued
    assert [t.text for t in direct if t.is_final] == ["one two three", "four five"]
    assert [t.flushed for t in direct if t.is_final] == [True, True]


async def test_the_scripted_double_fails_on_the_direct_path_with_its_injected_error() -> None:
    stt = ScriptedSTT(["hello"], fail_streams={0: 0.09})
    async with stt:
        s = stt.stream()
        s.push_audio(frame(0))
        await settle(s)
        for n in range(1, 5):
            s.push_audio(frame(n))  # the fifth frame passes 0.09 s
        assert s.state is StreamState.FAILED
        assert s.error is not None and "injected" in str(s.error)
        with pytest.raises(StreamClosedError):
            s.push_audio(frame(5))


# -- the WebSocket STTs (Deepgram's plugin and fake, on the virtual clock)

PHRASE = "What time is it?"


def _deepgram(url: str, **kw: Any) -> DeepgramSTT:
    return DeepgramSTT(api_key=DG_KEY, base_url=url, deadlines=FAST, **kw)


async def _waiting(s: RecognizeStream) -> WebSocketRecognizeStream[Any]:
    """The stream, once its task waits on its mailbox (connected, opening sent)."""
    assert isinstance(s, WebSocketRecognizeStream)
    await until(s._mailbox.receiver_waiting, every=0.001)
    return s


@pytest.mark.virtual_time
async def test_ws_audio_is_sent_in_push_audio_while_the_task_waits() -> None:
    frames = speech(PHRASE).split(0.02)
    async with (
        serving(FakeDeepgramSTT(vocabulary=[PHRASE])) as fake,
        _deepgram(fake.url) as stt,
    ):
        s = await _waiting(stt.stream())
        direct = 0
        for f in frames:
            s.push_audio(f)
            direct += not s.behind
            await asyncio.sleep(0.02)
        s.end_input()
        finals = await s.finals()
    assert [t.text for t in finals] == [PHRASE]
    assert direct == len(frames)  # each frame sent at once, none queued


@pytest.mark.virtual_time
async def test_ws_a_paused_write_buffer_queues_audio_and_its_send_keeps_the_deadline() -> None:
    async with (
        serving(FakeDeepgramSTT(vocabulary=[PHRASE])) as fake,
        _deepgram(fake.url) as stt,
    ):
        s = await _waiting(stt.stream())
        frames = speech(PHRASE).split(0.02)
        s.push_audio(frames[0])
        assert not s.behind
        conn = s._conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        conn._ws.pause_writing()  # the socket's buffer is over its high-water mark
        s.push_audio(frames[1])
        assert s.behind  # declined: the task sends it, and waits for the buffer to drain
        pushed_at = loop.time()
        with pytest.raises(ProviderTimeoutError) as info:
            await s.finals()
        waited = loop.time() - pushed_at
    assert info.value.stage == "send" and info.value.timeout == FAST.process
    assert waited == pytest.approx(FAST.process, abs=0.05)


@pytest.mark.virtual_time
async def test_ws_a_session_that_takes_no_input_is_not_written_to_directly() -> None:
    async with (
        serving(FakeDeepgramSTT(vocabulary=[PHRASE])) as fake,
        _deepgram(fake.url) as stt,
    ):
        s = await _waiting(stt.stream())
        frames = speech(PHRASE).split(0.02)
        takes = True
        stt.accepts_input = lambda session: takes  # type: ignore[method-assign]
        s.push_audio(frames[0])
        assert not s.behind
        takes = False
        s.push_audio(frames[1])
        assert s.behind  # declined: the task decides what a session not open is sent
        takes = True
        for f in frames[2:]:
            s.push_audio(f)
            await asyncio.sleep(0.02)
        s.end_input()
        assert [t.text for t in await s.finals()] == [PHRASE]


@pytest.mark.virtual_time
async def test_ws_audio_pushed_while_the_server_closes_goes_to_the_task() -> None:
    """Between the server's close frame and its reader's report, the WebSocket is
    closing: a frame pushed then is declined, and the stream ends with the typed loss."""
    plan = FaultPlan(close_mid_audio=1011, close_after_chunks=5)
    async with (
        serving(FakeDeepgramSTT(plan, vocabulary=[PHRASE])) as fake,
        _deepgram(fake.url, max_reconnects=0) as stt,
    ):
        s = await _waiting(stt.stream())
        frames = iter(speech(PHRASE).split(0.02))
        conn = s._conn
        assert conn is not None
        while conn._ws.protocol.state is State.OPEN:
            s.push_audio(next(frames))
            await asyncio.sleep(0)
        s.push_audio(next(frames))  # the WebSocket is closing: declined
        assert s.behind
        with pytest.raises(ProviderConnectionError) as info:
            await s.finals()
    assert info.value.code == 1011 and info.value.stage != "stream"
