"""Cartesia Ink STT (WebSocket ``/stt/websocket``, manual finalize), sans I/O.

The protocol of ``wss://api.cartesia.ai/stt/websocket`` as the ``cartesia`` SDK (4.2:
``resources/stt/manual_finalize.py`` and the ``types/stt`` models, which cite
https://docs.cartesia.ai/build-with-cartesia/stt-models/latest and
https://docs.cartesia.ai/use-the-api/stt/keyterms) types it:

- :class:`InkOptions` is the query (``model`` ``ink-2`` or ``ink-whisper``,
  ``encoding`` ``pcm_s16le`` or ``pcm_mulaw``, ``sample_rate``, ``language``,
  ``keyterm`` repeated, and for ink-whisper the silence that finalizes on its own);
  :func:`auth_headers` are those of the TTS (``Authorization: Bearer`` and
  ``Cartesia-Version``).
- Client messages: binary audio, and the text commands ``finalize`` (transcribe what
  is buffered now) and ``close`` (finalize, then end the session).
- :func:`parse` turns a server frame into a typed event: :class:`TranscriptChunk`
  (``is_final``; ``text`` is a delta from the last final chunk; ``words``, a list of
  ``WordTimestamps`` groups of parallel lists),
  :class:`FlushDone` (the answer of ``finalize``), :class:`Done` (the answer of
  ``close``), :class:`ErrorMessage`, :class:`Unknown` or :class:`Malformed`.
- :class:`InkSession` is the state machine of one recognition. The final chunks of an
  utterance are joined as the SDK says (concatenated as they are); antiphon's final
  transcript is emitted at ``flush_done`` — the answer of the flush — or ``done``; the
  chunks before are interim transcripts (the finalized text so far plus the newest
  non-final delta). Each ``finalize`` is owed one ``flush_done``, in order; ``close`` is
  owed its ``done``. Unanswered audio is kept in a bounded journal for a replay on a new
  connection (times shifted to the stream's).

No I/O and no asyncio here; the plugin is ``antiphon.plugins.cartesia.stt``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from antiphon.errors import AuthError, ConfigError, ProtocolStateError, ProviderError
from antiphon.protocols.cartesia_tts import DEFAULT_API_VERSION
from antiphon.protocols.cartesia_tts import auth_headers as auth_headers
from antiphon.protocols.close_codes import closed_error
from antiphon.protocols.stt_session import (
    TIME_TOLERANCE,
    Act,
    Action,
    Malformed,
    Message,
    Phase,
    RecognitionSession,
    Recognized,
    json_object,
    ws_url,
)

__all__ = [
    "CLOSE",
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "FINALIZE",
    "PATH",
    "PROVIDER",
    "Act",
    "Action",
    "Done",
    "ErrorMessage",
    "FlushDone",
    "InkOptions",
    "InkSession",
    "Malformed",
    "Phase",
    "ProtocolStateError",
    "Recognized",
    "ServerEvent",
    "TranscriptChunk",
    "Unknown",
    "auth_headers",
    "build_url",
    "close_error",
    "error_for",
    "options_from_query",
    "parse",
]

PROVIDER = "cartesia"
DEFAULT_BASE_URL = "wss://api.cartesia.ai"
PATH = "/stt/websocket"
DEFAULT_MODEL = "ink-2"
MODELS = ("ink-2", "ink-whisper")
ENCODINGS: dict[str, int] = {"pcm_s16le": 2, "pcm_mulaw": 1}
FINALIZE = "finalize"
CLOSE = "close"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class InkOptions:
    """Query parameters of a ``/stt/websocket`` connection (``None``: the default)."""

    model: str = DEFAULT_MODEL
    encoding: str = "pcm_s16le"
    sample_rate: int = 16000
    language: str | None = "en"
    keyterms: tuple[str, ...] = ()
    max_silence_duration_secs: float | None = None
    min_volume: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.startswith("ink-"):
            raise ConfigError(f"Cartesia STT model must be an Ink model, e.g. {DEFAULT_MODEL!r}")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"encoding must be one of {', '.join(ENCODINGS)}")
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
            raise ConfigError(f"sample_rate must be an int from 8000 to 48000 Hz, got {rate!r}")
        if isinstance(self.keyterms, str) or not all(
            isinstance(k, str) and k.strip() for k in self.keyterms
        ):
            raise ConfigError("keyterms must be a list of non-blank words or phrases")
        if len(self.keyterms) > 100 or sum(len(k) for k in self.keyterms) > 1200:
            raise ConfigError("Cartesia takes at most 100 keyterms of 1200 characters in all")
        for name in ("max_silence_duration_secs", "min_volume"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")

    @property
    def width(self) -> int:
        return ENCODINGS[self.encoding]

    def query(self) -> list[tuple[str, str]]:
        q = [
            ("model", self.model),
            ("encoding", self.encoding),
            ("sample_rate", str(self.sample_rate)),
        ]
        if self.language is not None:
            q.append(("language", self.language))
        q.extend(("keyterm", k) for k in self.keyterms)
        for name in ("max_silence_duration_secs", "min_volume"):
            value = getattr(self, name)
            if value is not None:
                q.append((name, str(value)))
        return q


def options_from_query(q: Mapping[str, list[str]]) -> InkOptions:
    """The options a query names (what a server reads); ConfigError if one is invalid."""

    def one(name: str) -> str | None:
        values = q.get(name)
        return values[-1] if values else None

    try:
        for name in ("model", "encoding", "sample_rate"):
            if one(name) is None:
                raise ConfigError(f"{name} is required")
        silence, volume = one("max_silence_duration_secs"), one("min_volume")
        return InkOptions(
            model=str(one("model")),
            encoding=str(one("encoding")),
            sample_rate=int(str(one("sample_rate"))),
            language=one("language"),
            keyterms=tuple(q.get("keyterm", [])),
            max_silence_duration_secs=float(silence) if silence is not None else None,
            min_volume=float(volume) if volume is not None else None,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid query: {exc}") from None


def build_url(base_url: str, options: InkOptions) -> str:
    """``{base_url}/stt/websocket?...``."""
    return ws_url(base_url, PATH, options.query(), example=DEFAULT_BASE_URL)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class TranscriptChunk:
    is_final: bool
    text: str  # a delta from the last final chunk, whitespace as sent
    words: tuple[tuple[str, float, float], ...] = ()  # seconds of the connection's audio


@dataclass(frozen=True, slots=True)
class FlushDone:
    pass


@dataclass(frozen=True, slots=True)
class Done:
    pass


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    message: str
    status_code: int | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class Unknown:
    type: str


ServerEvent = TranscriptChunk | FlushDone | Done | ErrorMessage | Unknown | Malformed


def _floats(value: Any) -> list[float] | None:
    if not isinstance(value, list):
        return None
    out: list[float] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        out.append(float(v))
    return out


def parse(frame: str | bytes) -> ServerEvent:
    """One server frame as a typed event (never raises)."""
    msg = json_object(frame)
    if isinstance(msg, Malformed):
        return msg
    raw = frame[:200] if isinstance(frame, str) else ""
    kind = msg.get("type")
    if kind == "transcript":
        text = msg.get("text")
        if not isinstance(text, str) or not isinstance(msg.get("is_final"), bool):
            return Malformed("a transcript without text or is_final", raw)
        words: list[tuple[str, float, float]] = []
        timing = msg.get("words") or []
        if not isinstance(timing, list):
            return Malformed("a transcript with malformed word timing", raw)
        for group in timing:  # WordTimestamps: parallel lists of words, starts, ends
            if not isinstance(group, dict):
                return Malformed("a transcript with malformed word timing", raw)
            names, starts = group.get("words"), _floats(group.get("start"))
            ends = _floats(group.get("end"))
            if (
                not isinstance(names, list)
                or starts is None
                or ends is None
                or not len(names) == len(starts) == len(ends)
            ):
                return Malformed("a transcript with malformed word timing", raw)
            words.extend(
                (str(n), s, max(s, e)) for n, s, e in zip(names, starts, ends, strict=True)
            )
        return TranscriptChunk(msg["is_final"], text, tuple(words))
    if kind == "flush_done":
        return FlushDone()
    if kind == "done":
        return Done()
    if kind == "error":
        code = msg.get("status_code")
        err = msg.get("error_code")
        return ErrorMessage(
            str(msg.get("message") or msg.get("title") or "no detail"),
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            err if isinstance(err, str) else None,
        )
    return Unknown(str(kind))


AUTH_HINT = "check CARTESIA_API_KEY (or the api_key argument)"


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``."""
    return closed_error(
        code,
        reason,
        provider=PROVIDER,
        stage=stage,
        auth_codes=(1008, 4001, 4003),
        auth_hint=AUTH_HINT,
    )


def error_for(event: ErrorMessage, *, stage: str) -> ProviderError:
    """The typed error for an ``error`` message (its HTTP-like ``status_code`` decides)."""
    text = f"the server reported an error: {event.message}"
    if event.status_code in (401, 402, 403):
        return AuthError(
            text, provider=PROVIDER, stage=stage, code=event.status_code, hint=AUTH_HINT
        )
    return ProviderError(
        text,
        provider=PROVIDER,
        stage=stage,
        code=event.status_code,
        hint="see Cartesia's error message above",
        retryable=event.status_code in (429, 500, 502, 503, 504),
    )


# --------------------------------------------------------------------------- state machine


class InkSession(RecognitionSession):
    """State of one recognition, possibly across reconnects.

    Time is in seconds of the stream's audio: ``sent`` and ``finalized`` (where the last
    answered ``finalize`` cut). ``flushes`` holds the stream time of each ``finalize``
    not yet answered by ``flush_done`` (in order); ``close`` is owed its ``done``.
    """

    def __init__(self, options: InkOptions, *, journal_seconds: float = 30.0) -> None:
        super().__init__(
            sample_rate=options.sample_rate, width=options.width, journal_seconds=journal_seconds
        )
        self.options = options
        self.last_flush = 0.0
        self.flushes: deque[float] = deque()
        self._final = ""  # the finalized text of the open utterance
        self._interim = ""
        self._span: tuple[float, float] | None = None

    def _owes_answer(self) -> bool:
        return bool(self.flushes)

    def _owed_requests(self) -> list[Message]:
        return [
            *([FINALIZE] if self.flushes else []),
            *([CLOSE] if self.phase is Phase.CLOSING else []),
        ]

    def _reconnected(self, replayed: list[Message]) -> None:
        if self.flushes:  # the flushes owed become one
            self.flushes = deque([self.flushes[-1]])
        self._interim = ""

    def lost_is_harmless(self) -> bool:
        return False  # ``done`` is owed until it arrives: replay rather than guess

    # -- client side
    def finalize(self) -> list[Message]:
        """The audio left, then ``finalize`` (owed its ``flush_done``) if audio went since
        the last one."""
        self._require_open("finalize")
        msgs = self._tail()
        if self.sent - self.last_flush <= TIME_TOLERANCE:
            return msgs
        self.flushes.append(self.sent)
        self.last_flush = self.sent
        return [*msgs, FINALIZE]

    def close(self) -> list[Message]:
        """The audio left, then ``close`` (owed its ``done``)."""
        self._require_open("close")
        msgs = self._tail()
        self.phase = Phase.CLOSING
        return [*msgs, CLOSE]

    # -- server side
    def feed(self, frame: str | bytes) -> list[Action]:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> list[Action]:
        if self.phase is Phase.DONE:
            return [Action(Act.DROP, event, note="message after done")]
        match event:
            case TranscriptChunk():
                return self._chunk_event(event)
            case FlushDone():
                cut = self.flushes.popleft() if self.flushes else self.sent
                self._finalize_to(min(cut, self.sent))
                return self._end_utterance(event)
            case Done():
                if self.phase is not Phase.CLOSING:
                    return [Action(Act.FAIL, event, note="the server ended the session")]
                actions = self._end_utterance(event)
                self.phase = Phase.DONE
                self.flushes.clear()
                return [*actions, Action(Act.DONE, event)]
            case ErrorMessage():
                return [Action(Act.FAIL, event, note=event.message)]
            case Unknown():
                return [Action(Act.DROP, event, note=f"unknown message type {event.type!r}")]
            case Malformed():
                return [Action(Act.DROP, event, note=event.reason)]
        return [Action(Act.DROP, event, note="unexpected event")]  # pragma: no cover

    def _chunk_event(self, chunk: TranscriptChunk) -> list[Action]:
        if chunk.words:
            start = chunk.words[0][1] + self.offset
            end = chunk.words[-1][2] + self.offset
            first = self._span[0] if self._span else start
            self._span = (first, max(end, self._span[1] if self._span else end))
        if chunk.is_final:
            self._final += chunk.text
            self._interim = ""
        else:
            self._interim = chunk.text
        text = (self._final + self._interim).strip()
        if not text:
            return []
        first, last = self._span or (self.finalized, self.sent)
        rec = Recognized(
            " ".join(text.split()), False, first, max(first, last), 0.0, self.utterance
        )
        return [Action(Act.EMIT, chunk, transcript=rec)]

    def _end_utterance(self, event: object) -> list[Action]:
        text = " ".join(self._final.split())
        span = self._span
        self._final, self._interim, self._span = "", "", None
        if not text:
            return []
        first, last = span or (self.finalized, self.finalized)
        rec = Recognized(text, True, first, max(first, last), 1.0, self.utterance)
        self.utterance += 1
        return [Action(Act.EMIT, event, transcript=rec)]
