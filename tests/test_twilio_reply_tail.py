"""The end of a reply reaches the carrier: the bridge's converter is flushed at a turn's end.

The agent's 24 kHz frames are resampled to 8 kHz, which holds back the filter's delay, and
cut into media frames, which holds back a partial one; both are the reply's last audio and
are sent when the turn completes (the frame padded with silence), also when the bridge
still waits for room to send the reply's last frame then. On virtual time, through a real
session and bridge; the carrier is a socket that records what it gets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest

from antiphon.agent.events import AgentPaused, Interrupted
from antiphon.agent.options import AgentOptions, InterruptionOptions
from antiphon.agent.session import AgentSession
from antiphon.audio.codecs import ulaw_decode, ulaw_encode
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import StreamResampler
from antiphon.protocols import exotel
from antiphon.protocols import twilio as tw
from antiphon.protocols.media_stream import Dialect
from antiphon.services.tts import TTS, EndInput, SynthesisStream
from antiphon.testing.agent import EnergyVAD, ScriptedLLM, ScriptedSTT, silence, speech
from antiphon.testing.poll import until
from antiphon.transports.twilio import TwilioBridge

pytestmark = pytest.mark.virtual_time

RATE = 24000
#: 0.3337 s: no whole number of 20 ms frames (the track pads it to 17); the bridge sends
#: 15 frames (300 ms) ahead of the marks echoed, so without echoes it waits for room
#: with the last frame in hand when the turn completes
CLIP_SAMPLES = 8009


def clip() -> bytes:
    """A steady tone to its last sample (its end is as loud as the rest)."""
    t = np.arange(CLIP_SAMPLES) / RATE
    wave = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    wave[:120] *= np.linspace(0.0, 1.0, 120)
    return (wave * 32767).astype("<i2").tobytes()


class ClipTTS(TTS):
    """Says any text as the same clip, in one chunk."""

    provider: ClassVar[str] = "clip-tts"

    def __init__(self, pcm: bytes) -> None:
        super().__init__(sample_rate=RATE)
        self.pcm = pcm

    def _new_stream(self, generation: int) -> SynthesisStream:
        return _ClipStream(self, generation)


class _ClipStream(SynthesisStream):
    def __init__(self, tts: ClipTTS, generation: int) -> None:
        self._pcm = tts.pcm
        super().__init__(
            provider=tts.provider,
            sample_rate=RATE,
            channels=1,
            generation=generation,
            owner=tts._tasks,
            close_timeout=1.0,
        )

    async def _run(self) -> None:
        async for item in self._mailbox:
            if isinstance(item, EndInput):
                self._emit(AudioFrame(self._pcm, RATE, 1, self.generation))
                return


class Carrier:
    """The carrier's side of the socket: what it was sent; marks echoed at once if
    ``echo`` (else never: the bridge waits for room, then gives tracking up)."""

    def __init__(self, dialect: Dialect, echo: bool) -> None:
        self.dialect = dialect
        self.echo = echo
        self.inbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self.sent: list[Any] = []  # the events sent, as parsed

    async def receive(self) -> bytes | str | None:
        return await self.inbox.get()

    async def send_text(self, data: str) -> None:
        event = self.dialect.parse(data, max_depth=8)
        self.sent.append(event)
        if isinstance(event, tw.Mark) and self.echo:
            self.inbox.put_nowait(data)  # an echo is spelled as the mark

    async def send_bytes(self, data: bytes) -> None:
        raise AssertionError("these carriers take JSON text only")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


def start_message(dialect: Dialect) -> str:
    if dialect is exotel.DIALECT:
        start = {
            "stream_sid": "MZ1",
            "call_sid": "CA1",
            "account_sid": "AC1",
            "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000"},
        }
        return json.dumps({"event": "start", "stream_sid": "MZ1", "start": start})
    start = {
        "streamSid": "MZ1",
        "callSid": "CA1",
        "accountSid": "AC1",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    return json.dumps({"event": "start", "streamSid": "MZ1", "start": start})  # fmt: skip


def samples(dialect: Dialect, payload: bytes) -> npt.NDArray[np.float64]:
    pcm = ulaw_decode(payload) if dialect.codec == "mulaw" else payload
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


@pytest.mark.parametrize(
    ("dialect", "echo"),
    [(tw.DIALECT, True), (tw.DIALECT, False), (exotel.DIALECT, True)],
    ids=["twilio", "twilio-no-echo", "exotel-100ms"],
)
async def test_a_reply_reaches_the_carrier_whole(dialect: Dialect, echo: bool) -> None:
    tts = ClipTTS(clip())
    session = AgentSession(vad=EnergyVAD(), stt=ScriptedSTT([]), llm=ScriptedLLM([]), tts=tts)
    carrier = Carrier(dialect, echo)
    bridge = TwilioBridge(session, carrier, dialect=dialect)
    await session.start()
    run = asyncio.create_task(bridge.run())
    carrier.inbox.put_nowait(start_message(dialect))
    await until(lambda: bridge.state.start is not None, 5)
    session.say("The reply.")
    await until(lambda: tw.Mark("turn-1") in carrier.sent, 30)
    media = [e for e in carrier.sent if isinstance(e, tw.Media)]
    got = samples(dialect, b"".join(e.payload for e in media))

    # what the reply is at 8 kHz: the track's 17 whole frames, resampled, filter tail and all
    whole = clip().ljust(math.ceil(CLIP_SAMPLES / 480) * 960, b"\0")
    resampler = StreamResampler(RATE, 8000)
    reply = resampler.process(AudioFrame(whole, RATE)).data + resampler.flush().data
    want = np.frombuffer(reply, dtype="<i2").astype(np.float64)
    assert len(want) == 17 * 160

    frame = dialect.frame_bytes // (1 if dialect.codec == "mulaw" else 2)
    assert all(len(samples(dialect, e.payload)) == frame for e in media)  # whole frames
    assert len(got) == math.ceil(len(want) / frame) * frame  # the reply, its last padded
    energy = float(np.sum(got**2))
    assert energy == pytest.approx(float(np.sum(want**2)), rel=0.01)  # all of its sound
    assert not got[len(want) :].any()  # and the padding is silence
    # the turn's mark follows its last audio
    assert carrier.sent.index(tw.Mark("turn-1")) > carrier.sent.index(media[-1])

    bridge.end(1000, "done")
    assert await asyncio.wait_for(run, 10) == 1000
    await tts.aclose()


def caller_media(pcm: bytes) -> list[str]:
    """The caller's 8 kHz audio as Twilio media messages of 20 ms."""
    ulaw = ulaw_encode(pcm)
    return [
        json.dumps({"event": "media", "streamSid": "MZ1",
                    "media": {"track": "inbound", "chunk": str(i), "timestamp": str(20 * i),
                              "payload": base64.b64encode(ulaw[at : at + 160]).decode()}})
        for i, at in enumerate(range(0, len(ulaw), 160))
    ]  # fmt: skip


async def test_a_barge_in_drops_what_the_converter_holds() -> None:
    """What the converter holds of an interrupted reply is not sent after the clear: the
    first audio after it is the next reply's start, not the old reply's end."""
    t = np.arange(2 * RATE) / RATE
    loud = (0.3 * np.sin(2 * np.pi * 440.0 * t) * 32767).astype("<i2").tobytes()
    tts = ClipTTS(clip()[:240] + loud)  # a fade-in, then 2 s of steady tone
    session = AgentSession(
        vad=EnergyVAD(), stt=ScriptedSTT(["stop"]), llm=ScriptedLLM(["Okay."]), tts=tts
    )
    carrier = Carrier(tw.DIALECT, echo=True)
    bridge = TwilioBridge(session, carrier)
    await session.start()
    run = asyncio.create_task(bridge.run())
    carrier.inbox.put_nowait(start_message(tw.DIALECT))
    await until(lambda: bridge.state.start is not None, 5)
    session.say("A long reply.")
    await until(lambda: sum(isinstance(e, tw.Media) for e in carrier.sent) >= 25, 10)
    over = speech(0.8, 8000, freq=300).data + silence(1.0, 8000).data
    for message in caller_media(over):  # the caller talks over it, 20 ms every 20 ms
        carrier.inbox.put_nowait(message)
        await asyncio.sleep(0.02)
    await until(lambda: tw.Mark("turn-2") in carrier.sent, 30)

    clear = carrier.sent.index(tw.Unknown("clear"))
    before = [e for e in carrier.sent[:clear] if isinstance(e, tw.Media)]
    after = [e for e in carrier.sent[clear:] if isinstance(e, tw.Media)]
    # the next reply (the same clip) starts as the first did: no old audio ahead of it
    assert after and after[0] == before[0]
    assert tw.Mark("turn-1") in carrier.sent[clear:]  # the interrupted turn's mark

    bridge.end(1000, "done")
    assert await asyncio.wait_for(run, 10) == 1000
    await tts.aclose()


class SlowCarrier(Carrier):
    """A carrier whose socket takes no media until ``gate`` opens (other messages, and
    what it sends, pass)."""

    def __init__(self, dialect: Dialect, echo: bool) -> None:
        super().__init__(dialect, echo)
        self.gate = asyncio.Event()

    async def send_text(self, data: str) -> None:
        if '"media"' in data:
            await self.gate.wait()
        await super().send_text(data)


async def test_a_barge_in_takes_back_the_media_queued_behind_a_slow_socket() -> None:
    """Media queued behind a stalled send when the caller barges in (no pause first:
    ``false_interruption="ignore"``) would only reach the carrier ahead of the clear, to
    be dropped by it: they are taken back, the marks between them kept in order, and the
    first media after the clear are the next reply's."""
    t = np.arange(2 * RATE) / RATE
    loud = (0.3 * np.sin(2 * np.pi * 440.0 * t) * 32767).astype("<i2").tobytes()
    tts = ClipTTS(clip()[:240] + loud)
    session = AgentSession(
        vad=EnergyVAD(),
        stt=ScriptedSTT(["stop"]),
        llm=ScriptedLLM(["Okay."]),
        tts=tts,
        options=AgentOptions(interruption=InterruptionOptions(false_interruption="ignore")),
    )
    carrier = SlowCarrier(tw.DIALECT, echo=True)
    bridge = TwilioBridge(session, carrier, send_timeout=60.0)
    events: list[Any] = []
    queued_at_barge_in: list[int] = []

    def listen(event: Any) -> None:
        events.append(event)
        if isinstance(event, Interrupted):
            queued_at_barge_in.append(bridge._sent)

    remove = session.on_event(listen)
    await session.start()
    run = asyncio.create_task(bridge.run())
    carrier.inbox.put_nowait(start_message(tw.DIALECT))
    await until(lambda: bridge.state.start is not None, 5)
    session.say("A long reply.")
    await until(lambda: bridge._sent >= 10, 10)  # one media in flight, the rest queued
    over = speech(0.8, 8000, freq=300).data + silence(1.0, 8000).data
    for message in caller_media(over):  # the caller talks over it
        carrier.inbox.put_nowait(message)
        await asyncio.sleep(0.02)
    await until(lambda: bool(queued_at_barge_in), 30)
    assert not any(isinstance(e, AgentPaused) for e in events)  # the path without a pause
    carrier.gate.set()
    await until(lambda: tw.Mark("turn-2") in carrier.sent, 30)

    (sent,) = queued_at_barge_in
    clear = carrier.sent.index(tw.Unknown("clear"))
    before = [e for e in carrier.sent[:clear] if isinstance(e, tw.Media)]
    after = [e for e in carrier.sent[clear:] if isinstance(e, tw.Media)]
    assert len(before) == 1  # the one in flight; the other queued media were taken back
    assert after and after[0] == before[0]  # the next reply starts as the first did
    # the playout marks queued among them still went out, in order, ahead of the clear
    marks = [e for e in carrier.sent[:clear] if isinstance(e, tw.Mark)]
    assert marks == [tw.Mark(f"p0.{n}") for n in range(2, sent + 1, 2)]
    assert bridge.media_sent == len(before) + len(after)
    assert bridge.audio_dropped == sent - 1

    remove()
    bridge.end(1000, "done")
    assert await asyncio.wait_for(run, 10) == 1000
    await tts.aclose()
