"""ElevenLabs multi-context input-streaming TTS (``/multi-stream-input``) wire protocol, sans I/O.

One WebSocket carries several *contexts*; every stream of antiphon gets its own context id,
so audio of an interrupted turn (another context) can never be delivered to the next one:
:class:`ContextSession` drops anything not of its own context. Encoders build the client
messages (initialise a context, text, flush, close the context), :func:`parse` turns a frame
into a typed event, :func:`close_error` maps close codes and reasons to typed errors.

The protocol has no per-flush acknowledgement: ``isFinal`` arrives once, after
``close_context``, when all audio of the context was sent. So a flush only makes the server
speak; the stream completes at the ``isFinal`` that answers the ``close_context`` sent at
the end of input. See ``docs/elevenlabs-tts.md`` for the sources of every detail.

Built from three modules: :mod:`~antiphon.protocols.elevenlabs_tts_options` (options,
formats, URL), :mod:`~antiphon.protocols.elevenlabs_tts_wire` (encoders, events, parser,
close codes) and this one, the state machine of one stream; every name is importable from
here as before.
"""

from __future__ import annotations

import enum
import uuid

from antiphon.protocols.elevenlabs_tts_options import (
    DEFAULT_BASE_URL,
    DEFAULT_ENCODING,
    DEFAULT_INACTIVITY_TIMEOUT,
    DEFAULT_MODEL,
    DEFAULT_SAMPLE_RATE,
    DEFAULT_VOICE,
    ENCODINGS,
    MAX_CONTEXTS,
    MAX_INACTIVITY_TIMEOUT,
    PATH_TEMPLATE,
    PROVIDER,
    TEXT_NORMALIZATION,
    UNSUPPORTED_MODELS,
    PronunciationDictionary,
    StreamOptions,
    VoiceSettings,
    auth_headers,
    build_url,
    output_format,
    parse_output_format,
    resolve_format,
)
from antiphon.protocols.elevenlabs_tts_wire import (
    CLOSE_SOCKET,
    KEY_HINT,
    Alignment,
    Audio,
    ErrorMessage,
    Final,
    FlushDone,
    Malformed,
    ServerEvent,
    Unknown,
    close_error,
    encode_close_context,
    encode_flush,
    encode_init,
    encode_keepalive,
    encode_text,
    parse,
)
from antiphon.protocols.elevenlabs_tts_wire import _alignment as _alignment
from antiphon.protocols.tts_session import Act, Action, CharWords, ProtocolStateError, WordTiming
from antiphon.protocols.tts_wire import wire_bytes_per_second

__all__ = [
    "CLOSE_SOCKET",
    "DEFAULT_BASE_URL",
    "DEFAULT_ENCODING",
    "DEFAULT_INACTIVITY_TIMEOUT",
    "DEFAULT_MODEL",
    "DEFAULT_SAMPLE_RATE",
    "DEFAULT_VOICE",
    "ENCODINGS",
    "KEY_HINT",
    "MAX_CONTEXTS",
    "MAX_INACTIVITY_TIMEOUT",
    "PATH_TEMPLATE",
    "PROVIDER",
    "TEXT_NORMALIZATION",
    "UNSUPPORTED_MODELS",
    "Alignment",
    "Audio",
    "ContextSession",
    "ErrorMessage",
    "Final",
    "FlushDone",
    "Malformed",
    "Message",
    "Phase",
    "PronunciationDictionary",
    "ServerEvent",
    "StreamOptions",
    "Unknown",
    "VoiceSettings",
    "auth_headers",
    "build_url",
    "close_error",
    "encode_close_context",
    "encode_flush",
    "encode_init",
    "encode_keepalive",
    "encode_text",
    "output_format",
    "parse",
    "parse_output_format",
    "resolve_format",
]


# --------------------------------------------------------------------------- state machine


class Phase(enum.Enum):
    NEW = "new"  # no context opened yet: nothing sent
    OPEN = "open"  # context initialised, input not ended
    CLOSING = "closing"  # close_context sent at the end of input; isFinal owed
    DONE = "done"  # isFinal received (or the input ended with nothing to say)
    CANCELLED = "cancelled"  # close_context sent on a cancel: everything now is stale


Message = str | bytes


def _spaced(text: str) -> str:
    """ElevenLabs wants every text to end with a space."""
    return text if text.endswith(" ") else text + " "


class ContextSession:
    """One stream = one context on a (pooled) connection.

    Implements :class:`~antiphon.protocols.tts_session.TTSSession`. Client-side methods
    return the messages to send and update the state *now*; :meth:`receive` decides what a
    server event means. Audio, ``isFinal`` and errors of any other context are dropped.

    Text is sent in whole words, each message ending with a space; a trailing partial word
    (an LLM token cut mid-word) waits for more text, a flush or the end of input.

    Word timings: each audio message's ``alignment`` counts from the start of its own
    chunk; the session adds the seconds of the context's audio before it (from the raw
    wire encoding's bytes) and groups the characters into words on :attr:`Action.words`,
    relative to the context's start (the stream's only segment).
    """

    #: Every message carries a context id: after a cancel the connection can be reused at
    #: once, and the next stream (another context) drops whatever still arrives.
    clear_needs_ack = False

    def __init__(self, options: StreamOptions | None = None, *, context_id: str | None = None):
        self._options = options or StreamOptions()
        self._base_id = context_id or uuid.uuid4().hex
        self._incarnation = 0
        self.context_id = self._base_id
        self.phase = Phase.NEW
        self.input_ended = False
        self.flushes_sent = 0
        self._pending = ""  # text held back: no whitespace after it yet
        self._unflushed = False  # non-blank text sent since the last flush
        self._owed_first_audio = False  # flushed, and no audio since
        self._journal: list[Message] = []  # everything sent in this context
        self.audio_received = False
        self._words = CharWords()
        self._audio_seconds = 0.0  # of this context, for chunk-relative alignments
        self._bytes_per_second = wire_bytes_per_second(
            self._options.encoding, self._options.sample_rate
        )

    def _timed(self, data: bytes, alignment: Alignment | None) -> tuple[WordTiming, ...]:
        """Words completed by a chunk's alignment; advances the context's audio clock."""
        offset = self._audio_seconds
        self._audio_seconds += len(data) / self._bytes_per_second
        if alignment is None:
            return ()
        return self._words.feed((c, a + offset, b + offset) for c, a, b in alignment)

    # -- client side
    def _require_open(self, what: str) -> None:
        if self.input_ended or self.phase not in (Phase.NEW, Phase.OPEN):
            raise ProtocolStateError(f"cannot {what} in phase {self.phase.value}")

    def _send(self, msgs: list[Message]) -> list[Message]:
        self._journal.extend(msgs)
        return msgs

    def speak(self, text: str) -> list[Message]:
        """Whole words of ``text`` (the context is opened with the first non-blank text)."""
        self._require_open("speak")
        self._pending += text
        if not self._pending.strip():
            return []
        msgs = self._open_if_new()
        cut = max(self._pending.rfind(c) for c in (" ", "\n", "\t", "\r"))
        if cut >= 0 and self._pending[: cut + 1].strip():
            chunk, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
            msgs.append(encode_text(self.context_id, _spaced(chunk)))
            self._unflushed = True
        return self._send(msgs)

    def _open_if_new(self) -> list[Message]:
        if self.phase is not Phase.NEW:
            return []
        self.phase = Phase.OPEN
        return [encode_init(self.context_id, self._options)]

    def flush(self) -> list[Message]:
        """Make the server speak what was sent (with any held-back word); may be none."""
        self._require_open("flush")
        if self._pending.strip():
            msgs = self._open_if_new()
            msgs.append(encode_text(self.context_id, _spaced(self._pending), flush=True))
            self._pending = ""
        elif self._unflushed:
            msgs = [encode_flush(self.context_id)]
        else:
            return []
        self._unflushed = False
        self._owed_first_audio = True
        self.flushes_sent += 1
        return self._send(msgs)

    def end_input(self) -> list[Message]:
        """Flush what is left and close the context; done at its ``isFinal``."""
        msgs = self.flush()
        self.input_ended = True
        if self.phase is Phase.NEW:
            self.phase = Phase.DONE  # nothing was ever sent
            return msgs
        self.phase = Phase.CLOSING
        return msgs + self._send([encode_close_context(self.context_id)])

    @property
    def done(self) -> bool:
        """Input ended and the context's ``isFinal`` arrived (or nothing was sent)."""
        return self.input_ended and self.phase is Phase.DONE

    @property
    def pending_flushes(self) -> int:
        """1 while an answer is owed: the first audio after a flush, or ``isFinal``.

        The protocol acknowledges no flush, so a flush counts as answered by its first
        audio; after that no deadline runs until the input ends.
        """
        if self.phase is Phase.CLOSING:
            return 1
        return int(self.phase is Phase.OPEN and self._owed_first_audio)

    @property
    def awaiting_audio(self) -> bool:
        return self.pending_flushes > 0

    def clear(self) -> list[Message]:
        """Cancel: ``close_context`` (the next stream drops whatever still arrives)."""
        was = self.phase
        self._pending = ""
        self._owed_first_audio = False
        if was in (Phase.DONE, Phase.CANCELLED):
            return []
        self.phase = Phase.CANCELLED
        self._journal.clear()
        if was is Phase.NEW:
            return []
        return [encode_close_context(self.context_id)]

    def replay(self) -> list[Message] | None:
        """Everything sent in this context, or None once any audio arrived.

        Without a per-flush acknowledgement antiphon cannot tell which text was already
        spoken, so a stream that heard audio is never replayed.
        """
        if self.audio_received or self.phase in (Phase.DONE, Phase.CANCELLED):
            return None
        return list(self._journal)

    def reset_for_replay(self) -> list[Message]:
        """Open the same context on a fresh connection: resend the journal."""
        return list(self._journal)

    def _reopen_after_server_close(self) -> None:
        """The server closed our context on its own: the next text opens a fresh one."""
        self._incarnation += 1
        self.context_id = f"{self._base_id}-{self._incarnation}"
        self.phase = Phase.NEW
        self._journal.clear()

    # -- server side
    def feed(self, frame: str | bytes) -> Action:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> Action:
        if isinstance(event, Audio):
            if event.context_id != self.context_id:
                return Action(Act.DROP, event, f"audio of another context ({event.context_id})")
            if self.phase in (Phase.OPEN, Phase.CLOSING):
                self.audio_received = True
                self._owed_first_audio = False
                words = self._timed(event.data, event.alignment)
                return Action(Act.DELIVER, event, audio=event.data, words=words)
            return Action(Act.DROP, event, f"audio while {self.phase.value}")
        if isinstance(event, Final):
            if event.context_id != self.context_id:
                return Action(Act.DROP, event, f"isFinal of another context ({event.context_id})")
            if self.phase is Phase.CLOSING:
                self.phase = Phase.DONE
                words = self._timed(event.data, event.alignment) + self._words.finish()
                return Action(Act.STREAM_DONE, event, audio=event.data, words=words)
            if self.phase is Phase.OPEN:
                if self._unflushed or self._owed_first_audio:
                    return Action(
                        Act.FAIL,
                        event,
                        "the server closed the context before speaking all its text; was the "
                        "stream idle longer than inactivity_timeout (default 20 s, max 180 s)?",
                    )
                self._reopen_after_server_close()
                if event.data:
                    self.audio_received = True
                    return Action(Act.DELIVER, event, "context closed by the server", event.data)
                return Action(
                    Act.NOTICE, event, "context closed by the server; the next text reopens it"
                )
            return Action(Act.DROP, event, f"isFinal while {self.phase.value}")
        if isinstance(event, ErrorMessage):
            if event.context_id is not None and event.context_id != self.context_id:
                return Action(Act.DROP, event, f"error of another context: {event.error}")
            note = f"{event.error}: {event.message}" if event.message else event.error
            return Action(Act.FAIL, event, note)
        if isinstance(event, FlushDone):
            if event.context_id == self.context_id:
                return Action(Act.NOTICE, event)
            return Action(Act.DROP, event, "flush_done of another context")
        if isinstance(event, Unknown):
            return Action(Act.DROP, event, f"unknown message {event.type or sorted(event.raw)!r}")
        return Action(Act.DROP, event, event.reason)
