"""What the fake streaming STT servers share: deterministic recognition and the audio loop.

Test speech is :func:`antiphon.testing.synth.tone_for_text`, one tone per phrase whose
pitch follows the text (:func:`phrase_pitch`). :func:`voiced_runs` cuts received audio
into voiced runs by energy; :meth:`ListenerConnection.heard` names a run's phrase by its
pitch (zero crossings) from the fake's vocabulary and spreads its words evenly over the
run. :class:`ListenerConnection` is the connection base of the STT fakes: binary frames
are audio (with the plan's ``close_mid_audio``/``error_mid_stream`` counted in audio
messages), text frames are control messages handed to the protocol by type.
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import ServerConnection

from antiphon.testing.faults import FaultPlan
from antiphon.testing.server import FakeWsServer, WsConnection
from antiphon.testing.synth import tone_duration

__all__ = [
    "FakeListenServer",
    "ListenStats",
    "ListenerConnection",
    "ListenerStats",
    "Run",
    "identify",
    "phrase_pitch",
    "voiced_runs",
]

#: Energy analysis block and the RMS above which a block is voiced.
BLOCK_SECONDS = 0.01
VOICED_RMS = 500.0
#: Silence shorter than this does not split a voiced run.
MIN_GAP = 0.1
#: A phrase matches a run whose pitch is within this many Hz of the phrase's.
PITCH_TOLERANCE = 6.0


def phrase_pitch(text: str) -> float:
    """The pitch of :func:`~antiphon.testing.synth.tone_for_text` for ``text``."""
    return 220.0 + (zlib.crc32(text.encode("utf-8")) % 500)


def identify(vocabulary: Iterable[str], pitch: float) -> str:
    """The phrase of ``vocabulary`` whose tone has ``pitch`` (``"unknown"`` if none)."""
    best = min(vocabulary, key=lambda p: abs(phrase_pitch(p) - pitch), default=None)
    if best is None or abs(phrase_pitch(best) - pitch) > PITCH_TOLERANCE:
        return "unknown"
    return best


@dataclass(frozen=True, slots=True)
class Run:
    """A voiced run, in samples from the connection's first sample."""

    start: int
    end: int


def voiced_runs(x: npt.NDArray[np.int16], rate: int, base: int) -> list[Run]:
    """Voiced runs of ``x`` (which starts at sample ``base``), short gaps merged."""
    block = max(1, round(BLOCK_SECONDS * rate))
    n = len(x) // block
    if n == 0:
        return []
    blocks = x[: n * block].astype(np.float64).reshape(n, block)
    voiced = np.sqrt((blocks**2).mean(axis=1)) > VOICED_RMS
    runs: list[Run] = []
    gap = max(1, round(MIN_GAP / BLOCK_SECONDS)) * block
    i = 0
    while i < n:
        if not voiced[i]:
            i += 1
            continue
        j = i
        while j < n and voiced[j]:
            j += 1
        if runs and (i * block + base) - runs[-1].end < gap:
            runs[-1] = Run(runs[-1].start, j * block + base)
        else:
            runs.append(Run(i * block + base, j * block + base))
        i = j
    return runs


class ListenStats(Protocol):
    """The statistics every STT fake keeps."""

    connections: int
    open_connections: int
    closes_sent: list[int]
    audio_messages: int
    audio_bytes: int
    control: list[str]


@dataclass
class ListenerStats:
    """The statistics every STT fake keeps; a fake's own stats add to them."""

    connections: int = 0
    open_connections: int = 0
    audio_messages: int = 0
    audio_bytes: int = 0
    control: list[str] = field(default_factory=list)
    """Types of the JSON messages received, in order."""
    closes_sent: list[int] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return self.control.count(kind)


class FakeListenServer(FakeWsServer):
    """A fake STT server: a vocabulary of phrases it can recognise."""

    stats: ListenStats

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        vocabulary: Iterable[str] = (),
        api_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(plan, host=host, port=port)
        self.vocabulary: list[str] = list(vocabulary)
        self.api_key = api_key

    def identify(self, pitch: float) -> str:
        """The phrase of the vocabulary whose tone has ``pitch`` (``"unknown"`` if none)."""
        return identify(self.vocabulary, pitch)


class ListenerConnection(WsConnection):
    """One connection of a fake STT server.

    Subclasses decode audio (:meth:`decode`), may refuse it (:meth:`check_audio`),
    recognise (:meth:`advance`, from :attr:`samples` and :meth:`heard`), answer control
    messages (:meth:`on_control`) and say how they fail (:meth:`send_failure`).
    """

    DRAIN_ON_CLOSE = True
    #: The reason of the close when the plan drops a connection before answering.
    DROP_REASON = "dropped by fault plan"

    def __init__(
        self,
        server: FakeListenServer,
        ws: ServerConnection,
        *,
        index: int,
        rate: int,
    ) -> None:
        super().__init__(server, ws, index=index)
        self.rate = rate
        self._listener = server
        self._listen = server.stats
        self.pcm = np.zeros(0, dtype=np.int16)
        self.chunks: list[npt.NDArray[np.int16]] = []
        self.samples = 0  # received so far
        self.finalized = 0
        self.last_interim = 0
        self.audio_messages = 0
        self.answered_once = False
        self.errored = False

    # -- protocol hooks
    def decode(self, wire: bytes) -> npt.NDArray[np.int16]:
        """The mono 16-bit samples of an audio message."""
        raise NotImplementedError

    async def check_audio(self, wire: bytes) -> bool:
        """Refuse an audio message (close and return False)."""
        return True

    async def advance(self) -> None:
        """Recognise what the new audio allows (interim and final results)."""

    async def on_control(self, kind: str | None, msg: Any, raw: str) -> bool:
        """Answer a control message; False ends the connection."""
        raise NotImplementedError

    async def send_failure(self) -> None:
        """The protocol's error message and close (``error_mid_stream``)."""
        raise NotImplementedError

    # -- reading
    async def on_frame(self, raw: str | bytes) -> bool:
        silent = self.silent
        if isinstance(raw, bytes):
            self._listen.audio_messages += 1
            self._listen.audio_bytes += len(raw)
            if self.closed:
                return True
            if not await self.check_audio(raw):
                return False
            self.audio_messages += 1
            x = self.decode(raw)
            self.chunks.append(x)
            self.samples += len(x)
            if silent:
                return True
            if not await self._audio_faults():
                return False
            await self.advance()
            return True
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        kind = msg.get("type") if isinstance(msg, dict) else None
        self._listen.control.append(str(kind))
        if isinstance(msg, dict):
            self.record(msg)
        if silent or kind == "KeepAlive":
            return True
        return await self.on_control(kind, msg, raw)

    async def _audio_faults(self) -> bool:
        """Apply the faults counted in audio messages; False when the connection ended."""
        plan = self.plan
        if plan.close_mid_audio is not None and self.audio_messages >= plan.close_after_chunks:
            await self.close(plan.close_mid_audio, plan.close_reason)
            return False
        if plan.error_mid_stream and self.audio_messages >= plan.close_after_chunks:
            if not self.errored:
                self.errored = True
                await self.send_failure()
            return False
        return True

    async def answer_gate(self) -> bool:
        """Before answering a finalize/terminate: drop or delay per plan."""
        if self.index < self.plan.drop_before_audio:
            await self.close(1011, self.DROP_REASON)
            return False
        if self.plan.first_audio_delay:
            await asyncio.sleep(self.plan.first_audio_delay)
        return True

    async def first_answer(self) -> None:
        """Before the first answer: the plan's ``first_audio_delay``, then (with
        ``malformed_mid_stream``) invalid JSON and an unknown message type."""
        if self.answered_once:
            return
        self.answered_once = True
        if self.plan.first_audio_delay:
            await asyncio.sleep(self.plan.first_audio_delay)
        if self.plan.malformed_mid_stream:
            await self.ws.send("{this is not json")
            await self.ws.send(json.dumps({"type": "SomethingNew", "value": 1}))

    # -- recognition
    def samples_array(self) -> npt.NDArray[np.int16]:
        """All audio received so far."""
        if self.chunks:
            self.pcm = np.concatenate([self.pcm, *self.chunks])
            self.chunks = []
        return self.pcm

    def runs(self, since: int) -> list[Run]:
        """Voiced runs from sample ``since`` to the end of the audio received."""
        return voiced_runs(self.samples_array()[since : self.samples], self.rate, since)

    def heard(self, run: Run, upto: int) -> list[tuple[str, float, float]]:
        """The words of ``run`` heard up to sample ``upto``: (token, start, end) in
        seconds of the connection's audio."""
        x = self.samples_array()[run.start : min(run.end, upto)]
        if len(x) < 2:
            return []
        signs = np.signbit(x)
        crossings = int(np.count_nonzero(signs[1:] != signs[:-1]))
        phrase = self._listener.identify(crossings / 2 / (len(x) / self.rate))
        tokens = phrase.split()
        heard = len(x) / self.rate
        expected = tone_duration(phrase) if phrase != "unknown" else heard
        # Energy detection trims the tone's fade-in/out: 90% heard is the whole phrase.
        if heard >= 0.9 * expected:
            n = len(tokens)
        else:
            n = max(1, math.floor(len(tokens) * heard / expected))
        step = expected / len(tokens)
        t0 = run.start / self.rate
        out = []
        for i, tok in enumerate(tokens[:n]):
            start = t0 + i * step
            end = min(t0 + (i + 1) * step, (run.start + len(x)) / self.rate)
            out.append((tok, start, max(start, end)))
        return out
