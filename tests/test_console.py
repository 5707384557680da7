"""The console transport with a stand-in for sounddevice (no sound device in CI).

The stand-in runs each stream's callback on a thread of its own every 20 ms, as
PortAudio does: the microphone plays a prepared signal, the speaker records what it got.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from antiphon.agent import AgentSession, AgentState, Interrupted, TurnCompleted
from antiphon.errors import ConfigError
from antiphon.services.vad import VADOptions
from antiphon.testing.agent import EnergyVAD, ScriptedLLM, ScriptedSTT, ToneTTS, silence, speech
from antiphon.testing.poll import until
from antiphon.transports.console import ConsoleAudio

#: Real threads and wall-clock time: the sound device stand-in runs on its own thread.
pytestmark = pytest.mark.realtime


class _Stream:
    def __init__(self, *, samplerate: int, blocksize: int, callback: Any, **_: Any) -> None:
        self.rate, self.block, self.callback = samplerate, blocksize, callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def close(self) -> None:
        self.stop()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            next_at += self.block / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))

    def tick(self) -> None:
        raise NotImplementedError


class FakeSoundDevice:
    """The part of sounddevice's API the console uses."""

    def __init__(self, mic: bytes) -> None:
        self.mic = mic
        self.played = bytearray()
        self.streams: list[_Stream] = []
        fake = self

        class RawInputStream(_Stream):
            pos = 0

            def tick(self) -> None:
                n = self.block * 2
                chunk = fake.mic[self.pos : self.pos + n].ljust(n, b"\x00")
                self.pos += n
                self.callback(chunk, self.block, None, None)

        class RawOutputStream(_Stream):
            def tick(self) -> None:
                out = bytearray(self.block * 2)
                self.callback(out, self.block, None, None)
                fake.played.extend(out)

        def make(kind: type[_Stream]) -> Any:
            def build(**kwargs: Any) -> _Stream:
                s = kind(**kwargs)
                fake.streams.append(s)
                return s

            return build

        self.RawInputStream = make(RawInputStream)
        self.RawOutputStream = make(RawOutputStream)


def agent(script: list[str], replies: list[str]) -> tuple[AgentSession, list[Any]]:
    services: list[Any] = [ScriptedSTT(script), ScriptedLLM(replies), ToneTTS()]
    vad = EnergyVAD(VADOptions(min_speech_duration=0.06, min_silence_duration=0.4))
    return AgentSession(vad=vad, stt=services[0], llm=services[1], tts=services[2]), services


async def test_mic_in_speaker_out_and_interruption_stops_the_speaker() -> None:
    long_reply = "This is a long reply from the agent, long enough to be interrupted."
    mic = b"".join(f.data for f in (speech(0.6), silence(1.6), speech(0.8, freq=500), silence(3.0)))
    session, services = agent(["question", "stop"], [long_reply, "Okay."])
    sd = FakeSoundDevice(mic)
    events: list[object] = []
    session.on_event(events.append)
    await session.start()
    console = ConsoleAudio(session, sd=sd)
    await console.start()
    try:
        await until(lambda: any(isinstance(e, Interrupted) for e in events), 15)
        await until(lambda: sum(isinstance(e, TurnCompleted) for e in events) == 2, 15)
        await until(lambda: session.state is AgentState.LISTENING, 5)
    finally:
        await console.aclose()
        await session.aclose()
        for s in services:
            await s.aclose()
    assert all(not s._thread.is_alive() for s in sd.streams)  # both streams stopped
    played = bytes(sd.played)
    loud = sum(1 for i in range(0, len(played), 640) if any(played[i : i + 640]))
    # the speaker played part of the long reply (cut) and all of "Okay." (0.3 s)
    assert 0.5 < loud * 0.02 < len(long_reply) * 0.06


def test_a_missing_sounddevice_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "sounddevice", None)
    session, _ = agent([], [])
    with pytest.raises(ConfigError, match=r"antiphon\[console\]"):
        ConsoleAudio(session)
