"""What the streaming-STT protocol machines share: vocabulary, JSON frames, the journal,
and the skeleton of a session.

Sans-I/O, like the machines that use it (one module per provider: ``deepgram_stt``,
``assemblyai_stt``, ``speechmatics_stt``, ``gladia_stt``, ``cartesia_stt``,
``elevenlabs_stt``, ``openai_transcription``): each parses its own server messages, but all
of them answer ``feed(frame)`` with the same :class:`Action`\\ s (a transcript to emit, the
end, a failure, something to log or drop), move through the same :class:`Phase`\\ s, read
JSON frames the same way (:func:`json_object`, :func:`json_number`, :class:`Malformed`),
build the handshake URL the same way (:func:`ws_url`), cut the caller's audio
into wire messages the same way (:class:`AudioChunker`: each protocol wraps a chunk its own
way, binary or base64 in JSON), and keep the audio that no final result has answered yet
in an :class:`AudioJournal`, so that a dropped connection can be replaced and that audio
replayed. The driver (:mod:`antiphon.services.ws_stt`) reads only this vocabulary.

:class:`RecognitionSession` is what their state machines have in common, written once: the
phase, the audio clock (``sent``, ``finalized``, the current connection's ``offset``), the
journal fed by every audio message, and the move to a new connection (the journal's audio,
then the requests still owed an answer). They differ in what a flush is and how its answer
is known (a mark per ``Finalize``, a flag for an open turn, a queue of commits, pending
items): that stays in each subclass, which answers what the skeleton asks (is a flush
owed its answer, what must a new connection be asked again, what to forget on it).
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from antiphon.audio.codecs import encode_pcm
from antiphon.errors import ConfigError, ProtocolStateError

__all__ = [
    "SEND_CHUNK_SECONDS",
    "TIME_TOLERANCE",
    "Act",
    "Action",
    "AudioChunker",
    "AudioJournal",
    "Malformed",
    "Message",
    "Phase",
    "RecognitionSession",
    "Recognized",
    "json_number",
    "json_object",
    "ws_url",
]

#: Audio goes to a streaming STT in messages of this many seconds (the services advise
#: 50-100 ms; shorter costs overhead per message, longer adds latency).
SEND_CHUNK_SECONDS = 0.05
#: Slack when comparing result times with the audio sent (providers round their times).
TIME_TOLERANCE = 0.02

#: A WebSocket message: text (JSON) or binary (audio).
Message = str | bytes


class Phase(enum.Enum):
    OPEN = "open"  # audio may be sent
    CLOSING = "closing"  # the input ended: waiting for the last results
    DONE = "done"  # nothing more is owed


class Act(enum.Enum):
    EMIT = "emit"  # a transcript for the caller (Action.transcript)
    DONE = "done"  # the recognition is complete
    FAIL = "fail"  # the server reported an error (Action.note)
    NOTICE = "notice"  # informational: log at most
    DROP = "drop"  # stale, unknown or malformed: discard (Action.note)


@dataclass(frozen=True, slots=True)
class Recognized:
    """A transcript in seconds of the *stream's* audio (offsets of reconnects applied)."""

    text: str
    is_final: bool
    start: float
    end: float
    confidence: float
    utterance: int


@dataclass(frozen=True, slots=True)
class Action:
    act: Act
    event: object = None
    transcript: Recognized | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A server frame that is no message of the protocol: ``reason``, and its start."""

    reason: str
    raw: str = ""


def json_number(value: object) -> float | None:
    """A JSON number as a float; None for anything else (a bool is no number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def ws_url(
    base_url: str,
    path: str,
    query: Mapping[str, str] | Sequence[tuple[str, str]],
    *,
    example: str,
) -> str:
    """The handshake URL: ``base_url`` (a ``ws``/``wss`` origin, ``path`` optional in it),
    then ``path`` and ``query``.

    Raises:
        ConfigError: ``base_url`` is no WebSocket URL (the message shows ``example``).
    """
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"base_url must be a WebSocket URL such as {example!r} or "
            f"'ws://127.0.0.1:PORT', got {base_url!r}"
        )
    full = parts.path.rstrip("/")
    if not full.endswith(path):
        full += path
    return f"{parts.scheme}://{parts.netloc}{full}?{urlencode(query)}"


def json_object(frame: str | bytes) -> dict[str, Any] | Malformed:
    """A server text frame's JSON object, or why it is none (never raises)."""
    if isinstance(frame, bytes):
        return Malformed("a binary frame from the server")
    try:
        msg = json.loads(frame)
    except ValueError:
        return Malformed("not JSON", frame[:200])
    if not isinstance(msg, dict):
        return Malformed("not a JSON object", frame[:200])
    return msg


@dataclass(slots=True)
class _Chunk:
    start: float  # stream seconds
    data: bytes


class AudioJournal:
    """Audio messages sent and not yet covered by a final result, at most ``seconds``.

    ``add`` notes each message with its start (stream seconds); ``trim(until)`` forgets
    what final results covered. With ``cut`` the first message is cut at ``until`` (to a
    whole sample of ``width`` bytes), else only whole messages go (protocols that bound a
    message's length). Past ``seconds`` the oldest audio is dropped and ``overflowed`` is
    set: a replay would then miss audio (``seconds=0``: never journal).
    """

    def __init__(
        self, seconds: float, *, bytes_per_second: int, width: int, cut: bool = True
    ) -> None:
        if not isinstance(seconds, int | float) or seconds < 0:
            raise ConfigError("journal_seconds must be >= 0 (0: never replay audio)")
        self.seconds = float(seconds)
        self.overflowed = False
        self._bps = bytes_per_second
        self._width = width
        self._cut = cut
        self._chunks: deque[_Chunk] = deque()
        self._bytes = 0

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def __iter__(self) -> Iterator[bytes]:
        return (c.data for c in self._chunks)

    @property
    def start(self) -> float | None:
        """Stream seconds of the first sample kept (None when empty)."""
        return self._chunks[0].start if self._chunks else None

    def add(self, start: float, data: bytes) -> None:
        if self.seconds <= 0:
            self.overflowed = True
            return
        self._chunks.append(_Chunk(start, data))
        self._bytes += len(data)
        while self._chunks and self._bytes > self.seconds * self._bps:
            self._bytes -= len(self._chunks.popleft().data)
            self.overflowed = True

    def trim(self, until: float) -> None:
        """Forget the audio before ``until`` (stream seconds)."""
        while self._chunks:
            head = self._chunks[0]
            if head.start + len(head.data) / self._bps <= until + 1e-9:
                self._chunks.popleft()
                self._bytes -= len(head.data)
                continue
            if self._cut and head.start < until:
                cut = round((until - head.start) * self._bps / self._width) * self._width
                cut = min(cut, len(head.data) - self._width)
                if cut > 0:
                    head.data = head.data[cut:]
                    head.start += cut / self._bps
                    self._bytes -= cut
            break


class AudioChunker:
    """The caller's int16 PCM in, wire audio out in messages of ``seconds`` (whole samples).

    ``width`` is the wire's bytes per sample: 2 sends the PCM as it is, 1 encodes it to
    G.711 mu-law. :meth:`push` returns the whole messages the audio so far fills and keeps
    the rest; :meth:`tail` returns that rest (at a flush or the end), padded with silence
    to ``min_bytes`` for services that refuse a short message. The protocol wraps each
    chunk its own way (a binary frame, base64 in JSON) and notes it in its journal.
    """

    def __init__(
        self, *, sample_rate: int, width: int, seconds: float = SEND_CHUNK_SECONDS
    ) -> None:
        if width not in (1, 2):
            raise ConfigError(f"a wire sample is 1 (mu-law) or 2 (int16) bytes, not {width}")
        self.width = width
        self.step = max(width, round(seconds * sample_rate) * width)
        self._pending = bytearray()

    def __len__(self) -> int:
        """Bytes of wire audio held back for the next message."""
        return len(self._pending)

    def push(self, pcm: bytes) -> list[bytes]:
        """The whole messages that int16 ``pcm`` completes (wire-encoded)."""
        wire = pcm if self.width == 2 else encode_pcm("mulaw", pcm)
        if len(wire) % self.width:
            raise ConfigError(f"audio of {len(wire)} bytes is not whole samples")
        self._pending += wire
        chunks: list[bytes] = []
        while len(self._pending) >= self.step:
            chunks.append(bytes(self._pending[: self.step]))
            del self._pending[: self.step]
        return chunks

    def tail(self, min_bytes: int = 0) -> list[bytes]:
        """What is held back (none, or one message), padded with silence to ``min_bytes``."""
        if not self._pending:
            return []
        silence = b"\x00\x00" if self.width == 2 else b"\xff"
        pad = max(0, min_bytes - len(self._pending)) // self.width
        piece = bytes(self._pending) + silence * pad
        self._pending.clear()
        return [piece]


class RecognitionSession(ABC):
    """State of one recognition, possibly across reconnects: what every machine keeps.

    Time is in seconds of the *stream's* audio: ``sent`` (audio sent so far, padding
    included) and ``finalized`` (up to where results, or answered flushes, covered it);
    ``offset`` is the stream time of the current connection's time 0. Every audio message
    goes out through :meth:`_send`, which notes it in :attr:`journal` (at most
    ``journal_seconds``; ``cut``: see :class:`AudioJournal`); :meth:`_finalize_to` forgets
    what a result covered. ``utterance`` numbers the final transcripts, ``connections``
    counts the connections used.

    :meth:`audio` cuts the caller's int16 PCM into ~50 ms messages (``chunked``; a
    protocol that splits its own way overrides it) and :meth:`_tail` sends what is held
    back. :meth:`replay` and :meth:`begin_replay` move the recognition to a new
    connection: the journal's audio, each chunk as :meth:`_wire` carries it, then
    :meth:`_owed_requests`; :meth:`_reconnected` forgets what belonged to the old one.

    A subclass is the protocol: its messages, ``feed``/``receive``, what a flush and the end
    of input send, and :meth:`_owes_answer` (a flush waits for its answer; the end's is
    the ``CLOSING`` phase).

    Args:
        sample_rate: Samples per second on the wire.
        width: Bytes of one sample on the wire, all channels.
        journal_seconds: Audio kept for a replay (0: never replay).
        cut: Whether the journal may cut a message where an answer ends (False: whole
            messages only, for services that bound a message's length).
        chunked: Cut pushes into ~50 ms messages (False: the subclass splits them).

    Raises:
        ConfigError: ``journal_seconds`` below 0, or a chunked ``width`` not 1 or 2.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        width: int,
        journal_seconds: float,
        cut: bool = True,
        chunked: bool = True,
    ) -> None:
        self._bps = sample_rate * width
        self._width = width
        self.journal = AudioJournal(
            journal_seconds, bytes_per_second=self._bps, width=width, cut=cut
        )
        self._chunker = AudioChunker(sample_rate=sample_rate, width=width) if chunked else None
        self.phase = Phase.OPEN
        self.sent = 0.0
        self.finalized = 0.0
        self.offset = 0.0  # stream time of the current connection's time 0
        self.utterance = 0
        self.connections = 1

    # -- what the protocol says
    @abstractmethod
    def _owes_answer(self) -> bool:
        """A flush sent is still owed its answer (the end's answer is the CLOSING phase)."""

    @abstractmethod
    def _owed_requests(self) -> list[Message]:
        """What a new connection is asked again after the replayed audio (a flush still
        owed, the end of input)."""

    @abstractmethod
    def _reconnected(self, replayed: list[Message]) -> None:
        """Forget what belonged to the old connection (``replayed`` went on the new one)."""

    def _wire(self, chunk: bytes) -> Message:
        """The message that carries a chunk of wire audio (a binary frame here)."""
        return chunk

    # -- queries
    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    @property
    def awaiting(self) -> bool:
        """The server owes an answer (to a flush or to the end of input): a deadline runs."""
        return self._owes_answer() or self.phase is Phase.CLOSING

    @property
    def unfinalized(self) -> float:
        """Seconds of audio sent that no final result has covered yet."""
        return max(0.0, self.sent - self.finalized)

    def lost_is_harmless(self) -> bool:
        """A drop now loses nothing: the input ended and every sample was finalized."""
        return (
            self.phase is Phase.CLOSING
            and not self._owes_answer()
            and self.unfinalized <= TIME_TOLERANCE
        )

    # -- client side
    def _require_open(self, what: str) -> None:
        if self.phase is not Phase.OPEN:
            raise ProtocolStateError(f"cannot {what} in phase {self.phase.value}")

    def _send(self, chunk: bytes) -> Message:
        """``chunk`` of wire audio as its message, noted in the journal and the clock."""
        self.journal.add(self.sent, chunk)
        self.sent += len(chunk) / self._bps
        return self._wire(chunk)

    def _chunks(self) -> AudioChunker:
        if self._chunker is None:
            raise NotImplementedError(f"{type(self).__name__} splits its audio itself")
        return self._chunker

    def audio(self, pcm: bytes) -> list[Message]:
        """Messages for int16 PCM ``pcm`` (wire-encoded, ~50 ms each; the rest held back)."""
        self._require_open("send audio")
        return [self._send(c) for c in self._chunks().push(pcm)]

    def _tail(self, min_bytes: int = 0) -> list[Message]:
        """The audio held back (at a flush or the end), padded to ``min_bytes``."""
        return [self._send(c) for c in self._chunks().tail(min_bytes)]

    def keepalive(self) -> list[Message]:
        """The protocol has no keep-alive message (WebSocket pings keep the connection)."""
        return []

    # -- server side
    def _finalize_to(self, until: float) -> None:
        """Results cover the stream's audio up to ``until``: the journal forgets it."""
        self.finalized = max(self.finalized, until)
        self.journal.trim(self.finalized)

    # -- replay
    def replay(self) -> list[Message] | None:
        """What to send on a new connection to recover, or None if audio was lost."""
        if self.journal.overflowed or self.phase is Phase.DONE:
            return None
        return [*map(self._wire, self.journal), *self._owed_requests()]

    def begin_replay(self) -> list[Message]:
        """Switch to a new connection: its times start at the journal's first sample."""
        msgs = self.replay()
        if msgs is None:
            raise ProtocolStateError("nothing can be replayed: audio was lost")
        start = self.journal.start
        self.offset = start if start is not None else self.sent
        self._reconnected(msgs)
        self.connections += 1
        return msgs
