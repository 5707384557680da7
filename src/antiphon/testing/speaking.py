"""The connection base of the fake streaming TTS servers: a speaker task per connection.

:class:`SpeakerConnection` is to the TTS fakes what
:class:`~antiphon.testing.listening.ListenerConnection` is to the STT fakes: a
:class:`~antiphon.testing.server.WsConnection` that queues the texts a client sends and
speaks them one after another on its own task, so a fake adds only its protocol
(:meth:`~SpeakerConnection.synthesize`, :meth:`~SpeakerConnection.send_audio`,
:meth:`~SpeakerConnection.speak`). The audio goes out through
:meth:`~antiphon.testing.server.WsConnection.stream_audio`, so the plan's mid-stream
faults apply; a clear abandons the job at its next chunk (a generation counter, not a
cancellation, so the speaker never dies mid-send), with the plan's ``ignore_clear``,
``audio_after_clear`` and ``audio_after_done`` faults. Cut from
:mod:`antiphon.testing.server`, which holds what every WebSocket fake shares.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from antiphon.testing.server import FakeWsServer, WsConnection

__all__ = ["SpeakerConnection"]


class SpeakerConnection(WsConnection):
    """A TTS connection that speaks queued texts one after another (a speaker task).

    Subclasses provide :meth:`synthesize`, :meth:`send_audio` and :meth:`speak` (one
    job: usually :meth:`speak_audio` and a done marker); :meth:`clear` drops the queue
    with the plan's ``ignore_clear``/``audio_after_clear``.
    """

    #: Seconds of audio per chunk.
    chunk_seconds = 0.02

    def __init__(
        self,
        server: FakeWsServer,
        ws: ServerConnection,
        *,
        index: int,
        encoding: str,
        sample_rate: int,
    ) -> None:
        super().__init__(server, ws, index=index)
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.width = 2 if encoding == "linear16" else 1
        self.buffer: list[str] = []
        self.jobs: deque[str] = deque()
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()  # no job queued or in progress
        self.drained.set()
        self.speaking = False
        self.clear_gen = 0
        self.current_audio = b""
        self.current_pos = 0

    def synthesize(self, text: str) -> bytes:
        raise NotImplementedError

    async def send_audio(self, chunk: bytes) -> None:
        raise NotImplementedError

    async def speak(self, text: str) -> None:
        raise NotImplementedError

    async def on_open(self) -> None:
        self.spawn(self._speak_loop())

    def busy(self) -> bool:
        return self.speaking or bool(self.jobs)

    def chunk_bytes(self) -> int:
        n = max(1, round(self.chunk_seconds * self.sample_rate)) * self.width
        return n + 1 if self.plan.odd_chunking and self.width == 2 else n

    def queue(self, text: str) -> None:
        self.jobs.append(text)
        self.drained.clear()
        self.wake.set()

    def flush_buffer(self) -> str:
        text = "".join(self.buffer)
        self.buffer.clear()
        return text

    async def _speak_loop(self) -> None:
        try:
            while True:
                while not self.jobs:
                    self.drained.set()
                    self.wake.clear()
                    await self.wake.wait()
                text = self.jobs.popleft()
                self.speaking = True
                await self.speak(text)
                self.speaking = False
        except ConnectionClosed:
            return

    async def speak_audio(self, text: str, *, gen: int, **faults: Any) -> bool:
        """Send the audio of ``text`` with the plan's faults; False if cleared (since
        ``gen``) or closed meanwhile. ``faults``: :meth:`stream_audio`'s ``error`` and
        ``malformed``."""
        audio = self.synthesize(text) if text.strip() or self.SPEAK_BLANK else b""
        self.current_audio = audio

        def at(pos: int) -> None:
            self.current_pos = pos

        done = await self.stream_audio(
            audio,
            self.chunk_bytes(),
            self.send_audio,
            stopped=lambda: self.clear_gen != gen,
            at=at,
            **faults,
        )
        if done:
            self.current_audio = b""
        return done

    #: Synthesize blank text too (else it has no audio).
    SPEAK_BLANK = True

    async def send_stale(self) -> None:
        """The plan's ``audio_after_done``: stale chunks after the done marker."""
        step = self.chunk_bytes()
        for _ in range(self.plan.audio_after_done):
            await self.send_audio(self.synthesize("stale audio")[:step])

    async def clear(self) -> bool:
        """Drop the buffer and the queue, abandon the current job; False under
        ``ignore_clear`` (send no acknowledgement)."""
        if self.plan.ignore_clear:
            return False
        self.buffer.clear()
        self.jobs.clear()
        if not self.speaking:
            self.drained.set()
        old_audio, pos = self.current_audio, self.current_pos
        self.clear_gen += 1  # the speaker abandons its job at the next chunk
        step = self.chunk_bytes()
        for _ in range(self.plan.audio_after_clear):
            chunk = old_audio[pos : pos + step] or bytes(step)
            pos += step
            await self.send_audio(chunk)
        return True
