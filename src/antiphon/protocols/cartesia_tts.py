"""Cartesia streaming TTS (``/tts/websocket``) wire protocol, sans I/O.

Options validation, URL and handshake headers, encoders for the client messages (a
generation request per piece of text, a flush, the end of a context, a cancel), a parser
that turns a frame into a typed event, and :class:`ContextSession`, the state machine of one
stream. Every stream is one Cartesia *context* with its own ``context_id``; whatever the
server sends for another context, or for this one after it finished or was cancelled, is
stale and dropped. The state is updated when the client *decides* to send, before any
await, so a ``flush_done`` can never arrive "before we noted the flush". See
``docs/cartesia-tts.md`` for sources.

Built from three modules: :mod:`~antiphon.protocols.cartesia_tts_options` (options, URL,
headers), :mod:`~antiphon.protocols.cartesia_tts_wire` (encoders, events, parser, close
codes) and this one, the state machine of one stream; every name is importable from here
as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from antiphon.protocols.cartesia_tts_options import (
    CARTESIA_ENCODINGS,
    DEFAULT_API_VERSION,
    DEFAULT_BASE_URL,
    DEFAULT_ENCODING,
    DEFAULT_LANGUAGE,
    DEFAULT_MODEL,
    DEFAULT_SAMPLE_RATE,
    DEFAULT_VOICE,
    ENCODINGS,
    PATH,
    PROVIDER,
    SAMPLE_RATES,
    CartesiaOptions,
    auth_headers,
    build_url,
)
from antiphon.protocols.cartesia_tts_wire import (
    Chunk,
    Done,
    ErrorMessage,
    FlushDone,
    Malformed,
    ServerEvent,
    Timestamps,
    Unknown,
    close_error,
    encode_cancel,
    encode_generation,
    parse,
)
from antiphon.protocols.cartesia_tts_wire import _word_timestamps as _word_timestamps
from antiphon.protocols.tts_session import Act, Action, ContextLedger, ProtocolStateError
from antiphon.protocols.tts_session import ContextPhase as Phase
from antiphon.protocols.tts_session import new_context_id as new_context_id
from antiphon.protocols.tts_wire import wire_bytes_per_second

__all__ = [
    "CARTESIA_ENCODINGS",
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_ENCODING",
    "DEFAULT_LANGUAGE",
    "DEFAULT_MODEL",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_VOICE",
    "ENCODINGS",
    "PATH",
    "PROVIDER",
    "SAMPLE_RATES",
    "CartesiaOptions",
    "Chunk",
    "ContextSession",
    "Done",
    "ErrorMessage",
    "FlushDone",
    "Malformed",
    "Message",
    "Phase",
    "ServerEvent",
    "Timestamps",
    "Unknown",
    "auth_headers",
    "build_url",
    "close_error",
    "encode_cancel",
    "encode_generation",
    "new_context_id",
    "parse",
]


# --------------------------------------------------------------------------- state machine


Message = str | bytes
_Op = tuple[Literal["speak", "flush", "end"], str]
_FLUSH: _Op = ("flush", "")


class ContextSession(ContextLedger[_Op]):
    """State of one stream: one Cartesia context on one (pooled) connection.

    Implements :class:`~antiphon.protocols.tts_session.TTSSession`. Client-side methods
    return the messages to send and update the state *now*; :meth:`receive` decides what
    an incoming event means. A flush is answered by ``flush_done``, the end of input
    (``continue: false``) by ``done``; both count in :attr:`pending_flushes`.

    Word timings count from the start of the context's audio; the session keeps the
    context's audio seconds (from the raw encoding's bytes) and where the current
    segment began, and hands them on segment-relative in :attr:`Action.words`.
    """

    def __init__(
        self,
        options: CartesiaOptions | None = None,
        *,
        context_ids: Callable[[], str] = new_context_id,
    ) -> None:
        # The journal holds operations, encoded again with a new context id if the
        # connection drops before any audio of them arrived.
        super().__init__(_FLUSH, context_ids)
        self.options = options or CartesiaOptions()
        self._next_context_id: str | None = None
        self._end_owed = False  # ``continue: false`` sent, its ``done`` not yet received
        self._audio_seconds = 0.0  # of this context
        self._segment_at = 0.0  # where the current segment's audio began in it
        self._bytes_per_second = wire_bytes_per_second(
            self.options.encoding, self.options.sample_rate
        )

    # -- encoding
    def _encode(self, op: _Op, context_id: str) -> str:
        kind, text = op
        if kind == "speak":
            return encode_generation(self.options, context_id, text)
        if kind == "flush":
            return encode_generation(self.options, context_id, "", flush=True)
        return encode_generation(self.options, context_id, "", cont=False)

    # -- client side
    def speak(self, text: str) -> list[Message]:
        """A generation request appending ``text`` (leading blank text is not sent)."""
        op: _Op = ("speak", text)
        return [self._encode(op, self.context_id)] if self._speaking(text, op) else []

    def flush(self) -> list[Message]:
        """``flush: true`` if any non-blank text was sent since the last flush."""
        self._require_open("flush")
        return [self._encode(_FLUSH, self.context_id)] if self._flushed() else []

    def end_input(self) -> list[Message]:
        """``continue: false``: the server speaks what is left, then sends ``done``."""
        self._require_open("end input")
        self.input_ended = True
        if self.phase is Phase.IDLE:  # nothing was ever sent: nothing owed
            self.phase = Phase.DONE
            return []
        op: _Op = ("end", "")
        self._unflushed = False
        self._end_owed = True
        self.pending_flushes += 1  # the end is owed its answer too
        self._journal.append(op)
        return [self._encode(op, self.context_id)]

    def clear(self) -> list[Message]:
        """Cancel the context; nothing to send if it never started or already finished."""
        self._end_owed = False
        return [encode_cancel(self.context_id)] if self._cancelled() else []

    def replay(self) -> list[Message] | None:
        """Messages to resend on a new connection, or None if audio was already received.

        The replay uses a new context id (the old context died with its connection).
        """
        if not self._replayable:
            return None
        if self._next_context_id is None:
            self._next_context_id = self._context_ids()
        return [self._encode(op, self._next_context_id) for op in self._journal]

    def reset_for_replay(self) -> list[Message]:
        """Start over on a fresh connection under a new context id; returns what to send."""
        msgs = self.replay()
        if msgs is None:
            raise ProtocolStateError("nothing can be replayed: audio was already received")
        assert self._next_context_id is not None
        self.context_id, self._next_context_id = self._next_context_id, None
        self._audio_seconds = self._segment_at = 0.0  # the new context's timings start at 0
        ops = self._journal
        self._end_owed = any(kind == "end" for kind, _ in ops)
        self.pending_flushes = sum(1 for kind, _ in ops if kind == "flush") + int(self._end_owed)
        last_flush = max((i for i, (kind, _) in enumerate(ops) if kind == "flush"), default=-1)
        self._unflushed = not self._end_owed and any(
            kind == "speak" and text.strip() for kind, text in ops[last_flush + 1 :]
        )
        self.phase = Phase.ACTIVE if ops else Phase.IDLE
        self.audio_since_ack = False
        return msgs

    # -- server side
    def feed(self, frame: str | bytes) -> Action:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> Action:
        if isinstance(event, Malformed):
            return Action(Act.DROP, event, event.reason)
        if isinstance(event, Unknown):
            return Action(Act.DROP, event, f"unknown message type {event.type!r}")
        phase = self.phase
        if isinstance(event, ErrorMessage):
            if event.context_id not in (None, self.context_id):
                return Action(Act.DROP, event, f"error of another context {event.context_id!r}")
            if phase in (Phase.DONE, Phase.CANCELLED):
                return Action(Act.DROP, event, f"error while {phase.value}: {event.describe()}")
            return Action(Act.FAIL, event, event.describe())
        if event.context_id != self.context_id:
            return Action(Act.DROP, event, f"message of another context {event.context_id!r}")
        if phase is not Phase.ACTIVE:
            return Action(Act.DROP, event, f"{type(event).__name__} while {phase.value}")
        if isinstance(event, Chunk):
            if not event.audio:
                return Action(Act.NOTICE, event, "chunk without audio")
            self.audio_since_ack = True
            self._audio_seconds += len(event.audio) / self._bytes_per_second
            return Action(Act.DELIVER, event, audio=event.audio)
        if isinstance(event, FlushDone):
            if self.pending_flushes == int(self._end_owed):  # no flush owed, only the end
                return Action(Act.DROP, event, f"flush_done {event.flush_id}, none owed")
            self._segment_at = self._audio_seconds
            return self._answered(event)  # a segment: the end, still owed, ends the stream
        if isinstance(event, Done):
            if not self._end_owed:
                return Action(
                    Act.FAIL, event, "the server ended the context before the input ended"
                )
            self._end_owed = False
            self.pending_flushes = 0  # nothing more comes for this context
            self._journal.clear()
            self.phase = Phase.DONE
            return Action(Act.STREAM_DONE, event)
        if isinstance(event, Timestamps) and event.words:
            at = -self._segment_at
            return Action(Act.NOTICE, event, words=tuple(w.shifted(at) for w in event.words))
        return Action(Act.NOTICE, event)
