"""Talk to an agent with this computer's microphone and speaker (``sounddevice``).

PortAudio calls the stream callbacks on its own threads: the microphone's blocks are
handed to the event loop with ``call_soon_threadsafe`` (in order, never a task per
block), and the speaker takes 20 ms frames from a thread-safe queue that a pump task
fills from the session's paced output. When the user interrupts, the queue is emptied
at once, so the speaker stops within a frame. ``aclose`` stops and closes both streams.

Needs ``pip install 'antiphon[console]'`` (sounddevice) and PortAudio (Debian:
``libportaudio2``) and a sound device.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from types import ModuleType
from typing import Any

from antiphon.agent.events import AgentEvent, Interrupted
from antiphon.agent.session import AgentSession
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, StreamClosedError

__all__ = ["BLOCK", "INSTALL_HINT", "ConsoleAudio"]

INSTALL_HINT = (
    "the console needs sounddevice and PortAudio: pip install 'antiphon[console]' "
    "(and on Debian: apt-get install libportaudio2)"
)
BLOCK = 0.02


def _sounddevice() -> ModuleType:
    try:
        import sounddevice  # type: ignore[import-not-found,unused-ignore,import-untyped]
    except (ImportError, OSError) as exc:
        raise ConfigError(f"{INSTALL_HINT} ({exc})") from None
    return sounddevice  # type: ignore[no-any-return,unused-ignore]


class ConsoleAudio:
    """The microphone into ``session``, its output to the speaker, until :meth:`aclose`.

    ``sd``: the sounddevice module (tests pass a stand-in). ``input_device`` /
    ``output_device``: PortAudio device names or indexes (default devices if None).
    """

    def __init__(
        self,
        session: AgentSession,
        *,
        sample_rate: int = 16000,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
        sd: Any = None,
    ) -> None:
        self.session = session
        self.sample_rate = sample_rate
        self._sd = sd if sd is not None else _sounddevice()
        self._devices = (input_device, output_device)
        self._speaker: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._held = b""  # the part of a frame the speaker has not taken yet
        self._streams: list[Any] = []
        self._pump: asyncio.Task[None] | None = None
        self._remove: Any = None
        self.underruns = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        rate = self.sample_rate
        out_rate = self.session.output.sample_rate
        block = round(BLOCK * rate)

        def heard(indata: Any, frames: int, _time: Any, _status: Any) -> None:
            data = bytes(indata)
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._push, data)

        def play(outdata: Any, frames: int, _time: Any, _status: Any) -> None:
            need = frames * 2
            out = self._held
            while len(out) < need:
                try:
                    out += self._speaker.get_nowait()
                except queue.Empty:
                    self.underruns += out == b""
                    break
            self._held = out[need:]
            chunk = out[:need]
            outdata[: len(chunk)] = chunk
            outdata[len(chunk) :] = bytes(need - len(chunk))

        self._remove = self.session.on_event(self._on_event)
        self._pump = loop.create_task(self._feed_speaker(), name="console-speaker")
        mic = self._sd.RawInputStream(
            samplerate=rate, channels=1, dtype="int16", blocksize=block,
            device=self._devices[0], callback=heard,
        )  # fmt: skip
        speaker = self._sd.RawOutputStream(
            samplerate=out_rate, channels=1, dtype="int16", blocksize=round(BLOCK * out_rate),
            device=self._devices[1], callback=play,
        )  # fmt: skip
        self._streams = [mic, speaker]
        for stream in self._streams:
            stream.start()

    def _push(self, data: bytes) -> None:
        with contextlib.suppress(StreamClosedError):
            self.session.push_audio(AudioFrame(data, self.sample_rate, 1))

    def _on_event(self, event: AgentEvent) -> None:
        if isinstance(event, Interrupted):  # the speaker stops within a frame
            with contextlib.suppress(queue.Empty):
                while True:
                    self._speaker.get_nowait()

    async def _feed_speaker(self) -> None:
        async for frame in self.session.output:
            self._speaker.put(frame.data)

    async def aclose(self) -> None:
        """Stop and close both streams and the speaker pump; idempotent."""
        streams, self._streams = self._streams, []
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.stop()
            with contextlib.suppress(Exception):
                stream.close()
        if self._remove is not None:
            self._remove()
            self._remove = None
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None
