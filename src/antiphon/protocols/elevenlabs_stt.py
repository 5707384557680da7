"""ElevenLabs Scribe realtime STT (WebSocket ``/v1/speech-to-text/realtime``), sans I/O.

The protocol of ``wss://api.elevenlabs.io/v1/speech-to-text/realtime``, as documented in
the realtime guides (https://elevenlabs.io/docs/eleven-api/guides/how-to/speech-to-text/realtime/server-side-streaming,
"Transcripts and commit strategies" and the event reference beside it), and typed by the
``elevenlabs`` SDK (2.78: ``realtime/scribe.py``, ``realtime/connection.py`` and the
``ReceiveTranscription`` union of payload models):

- :class:`ScribeOptions` is the query (``model_id``, ``audio_format`` ``pcm_<rate>`` or
  ``ulaw_8000``, ``commit_strategy`` ``manual`` or ``vad`` with its thresholds,
  ``language_code``, ``keyterms`` repeated, ``include_timestamps``); the key goes in the
  ``xi-api-key`` header, or a single-use ``token`` in the query.
- Client messages are JSON only: ``input_audio_chunk`` with base64 PCM, ``commit``
  (true on an empty chunk: end the segment now) and ``sample_rate``.
- :func:`parse` turns a server frame into a typed event: :class:`SessionStarted`,
  :class:`Partial` (``partial_transcript``), :class:`Committed`
  (``committed_transcript``, and ``committed_transcript_with_timestamps`` with its
  ``words``), :class:`ErrorMessage` (the fourteen error types, each its own
  ``message_type``), :class:`Unknown` or :class:`Malformed`.
- :class:`ScribeSession` is the state machine of one recognition. A committed segment
  is antiphon's final transcript (the timed copy: it follows the plain one, which is
  dropped); partials are interim transcripts of the open segment. A flush is a commit;
  each commit the client sends is owed one committed transcript, in order. The protocol
  has no end-of-session message: after ``end_input`` the last commit's answer completes
  the stream, and the client closes. With ``commit_strategy="manual"`` (the default here)
  only the client commits, so the accounting is exact; with ``vad`` the server commits
  on silence too, and a server commit answering before the client's cannot be told apart
  (no segment id): the stream may then complete one answer early.

Un-committed audio is kept in a bounded journal so that a dropped connection can be
replaced and the audio replayed (word times on the new connection shifted to the
stream's). No I/O and no asyncio here; the plugin is ``antiphon.plugins.elevenlabs.stt``.
"""

from __future__ import annotations

import base64
import json
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from antiphon.errors import (
    AuthError,
    ConfigError,
    ProtocolStateError,
    ProviderConnectionError,
    ProviderError,
)
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
)

__all__ = [
    "AUDIO_FORMATS",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "ERROR_TYPES",
    "PATH",
    "PROVIDER",
    "Act",
    "Action",
    "Committed",
    "ErrorMessage",
    "Malformed",
    "Partial",
    "Phase",
    "ProtocolStateError",
    "Recognized",
    "ScribeOptions",
    "ScribeSession",
    "ServerEvent",
    "SessionStarted",
    "Unknown",
    "Word",
    "audio_chunk",
    "auth_headers",
    "build_url",
    "close_error",
    "commit",
    "error_for",
    "options_from_query",
    "parse",
]

PROVIDER = "elevenlabs"
DEFAULT_BASE_URL = "wss://api.elevenlabs.io"
PATH = "/v1/speech-to-text/realtime"
DEFAULT_MODEL = "scribe_v2_realtime"
#: ``audio_format`` → (sample rate, bytes per sample on the wire).
AUDIO_FORMATS: dict[str, tuple[int, int]] = {
    "pcm_8000": (8000, 2),
    "pcm_16000": (16000, 2),
    "pcm_22050": (22050, 2),
    "pcm_24000": (24000, 2),
    "pcm_44100": (44100, 2),
    "pcm_48000": (48000, 2),
    "ulaw_8000": (8000, 1),
}
COMMIT_STRATEGIES = ("manual", "vad")
#: Error ``message_type``s (the SDK's ``ReceiveTranscription`` union) and what they mean.
ERROR_TYPES = (
    "error",
    "auth_error",
    "quota_exceeded",
    "commit_throttled",
    "transcriber_error",
    "unaccepted_terms",
    "rate_limited",
    "input_error",
    "invalid_request",
    "queue_overflow",
    "resource_exhausted",
    "session_time_limit_exceeded",
    "chunk_size_exceeded",
    "insufficient_audio_activity",
)
_AUTH_TYPES = {"auth_error", "quota_exceeded", "unaccepted_terms"}
_RETRY_TYPES = {"transcriber_error", "resource_exhausted", "session_time_limit_exceeded"}
AUTH_HINT = "check ELEVENLABS_API_KEY (or the api_key argument)"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class ScribeOptions:
    """Query parameters of a realtime connection (``None``: the service's default)."""

    model_id: str = DEFAULT_MODEL
    audio_format: str = "pcm_16000"
    commit_strategy: str = "manual"
    language_code: str | None = None
    keyterms: tuple[str, ...] = ()
    vad_silence_threshold_secs: float | None = None
    vad_threshold: float | None = None
    min_speech_duration_ms: int | None = None
    min_silence_duration_ms: int | None = None
    include_timestamps: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not self.model_id.strip():
            raise ConfigError(f"model_id must be a model name, e.g. {DEFAULT_MODEL!r}")
        if self.audio_format not in AUDIO_FORMATS:
            raise ConfigError(
                f"audio_format {self.audio_format!r} is not one of {', '.join(AUDIO_FORMATS)}"
            )
        if self.commit_strategy not in COMMIT_STRATEGIES:
            raise ConfigError("commit_strategy must be 'manual' or 'vad'")
        if isinstance(self.keyterms, str) or not all(
            isinstance(k, str) and k.strip() and len(k) <= 20 for k in self.keyterms
        ):
            raise ConfigError("keyterms must be non-blank words of at most 20 characters")
        if len(self.keyterms) > 50:
            raise ConfigError("ElevenLabs takes at most 50 keyterms")
        checks: list[tuple[str, float, float]] = [
            ("vad_silence_threshold_secs", 0.3, 3.0),
            ("vad_threshold", 0.1, 0.9),
            ("min_speech_duration_ms", 50, 2000),
            ("min_silence_duration_ms", 50, 2000),
        ]
        for name, low, high in checks:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not low <= value <= high
            ):
                raise ConfigError(f"{name} must be {low} to {high}, got {value!r}")

    @property
    def sample_rate(self) -> int:
        return AUDIO_FORMATS[self.audio_format][0]

    @property
    def width(self) -> int:
        return AUDIO_FORMATS[self.audio_format][1]

    def query(self) -> list[tuple[str, str]]:
        q = [
            ("model_id", self.model_id),
            ("audio_format", self.audio_format),
            ("commit_strategy", self.commit_strategy),
        ]
        for name in (
            "vad_silence_threshold_secs",
            "vad_threshold",
            "min_speech_duration_ms",
            "min_silence_duration_ms",
            "language_code",
        ):
            value = getattr(self, name)
            if value is not None:
                q.append((name, str(value)))
        q.append(("include_timestamps", "true" if self.include_timestamps else "false"))
        q.extend(("keyterms", k) for k in self.keyterms)
        return q


def options_from_query(q: Mapping[str, list[str]]) -> ScribeOptions:
    """The options a query names (what a server reads); ConfigError if one is invalid."""

    def one(name: str) -> str | None:
        values = q.get(name)
        return values[-1] if values else None

    try:
        model = one("model_id")
        if model is None:
            raise ConfigError("model_id is required")
        numbers: dict[str, Any] = {}
        for name, kind in (
            ("vad_silence_threshold_secs", float),
            ("vad_threshold", float),
            ("min_speech_duration_ms", int),
            ("min_silence_duration_ms", int),
        ):
            raw = one(name)
            if raw is not None:
                numbers[name] = kind(raw)
        return ScribeOptions(
            model_id=model,
            audio_format=one("audio_format") or "pcm_16000",
            commit_strategy=one("commit_strategy") or "manual",
            language_code=one("language_code"),
            keyterms=tuple(q.get("keyterms", [])),
            include_timestamps=one("include_timestamps") == "true",
            **numbers,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid query: {exc}") from None


def build_url(base_url: str, options: ScribeOptions, *, token: str | None = None) -> str:
    """``{base_url}/v1/speech-to-text/realtime?...``."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"base_url must be a WebSocket URL such as {DEFAULT_BASE_URL!r} or "
            f"'ws://127.0.0.1:PORT', got {base_url!r}"
        )
    query = options.query()
    if token:
        query.append(("token", token))
    path = parts.path.rstrip("/")
    if not path.endswith(PATH):
        path += PATH
    return f"{parts.scheme}://{parts.netloc}{path}?{urlencode(query)}"


def auth_headers(api_key: str) -> dict[str, str]:
    return {"xi-api-key": api_key}


def audio_chunk(wire: bytes, sample_rate: int) -> str:
    """``input_audio_chunk`` carrying ``wire`` (encoded audio)."""
    return json.dumps(
        {
            "message_type": "input_audio_chunk",
            "audio_base_64": base64.b64encode(wire).decode("ascii"),
            "commit": False,
            "sample_rate": sample_rate,
        }
    )


def commit(sample_rate: int) -> str:
    """An empty ``input_audio_chunk`` with ``commit``: end the segment now."""
    return json.dumps(
        {
            "message_type": "input_audio_chunk",
            "audio_base_64": "",
            "commit": True,
            "sample_rate": sample_rate,
        }
    )


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start: float  # seconds of the connection's audio
    end: float
    logprob: float | None


@dataclass(frozen=True, slots=True)
class SessionStarted:
    session_id: str


@dataclass(frozen=True, slots=True)
class Partial:
    text: str


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed segment: ``timed`` for ``committed_transcript_with_timestamps``."""

    text: str
    timed: bool
    words: tuple[Word, ...] = ()
    language_code: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    type: str
    error: str


@dataclass(frozen=True, slots=True)
class Unknown:
    type: str


ServerEvent = SessionStarted | Partial | Committed | ErrorMessage | Unknown | Malformed


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def parse(frame: str | bytes) -> ServerEvent:
    """One server frame as a typed event (never raises)."""
    msg = json_object(frame)
    if isinstance(msg, Malformed):
        return msg
    raw = frame[:200] if isinstance(frame, str) else ""
    kind = msg.get("message_type")
    text = msg.get("text")
    if kind in ("partial_transcript", "committed_transcript"):
        if not isinstance(text, str):
            return Malformed(f"a {kind} without text", raw)
        return Partial(text) if kind == "partial_transcript" else Committed(text, False)
    if kind == "committed_transcript_with_timestamps":
        words_raw = msg.get("words") or []
        if not isinstance(text, str) or not isinstance(words_raw, list):
            return Malformed("a timed committed transcript without text or words", raw)
        words: list[Word] = []
        for w in words_raw:
            if not isinstance(w, dict):
                return Malformed("a malformed word", raw)
            if w.get("type", "word") != "word":
                continue  # spacing, audio events
            start, end = _num(w.get("start")), _num(w.get("end"))
            if not isinstance(w.get("text"), str) or start is None or end is None or end < start:
                return Malformed("a malformed word", raw)
            words.append(Word(w["text"], start, end, _num(w.get("logprob"))))
        lang = msg.get("language_code")
        return Committed(text, True, tuple(words), lang if isinstance(lang, str) else None)
    if kind == "session_started":
        return SessionStarted(str(msg.get("session_id", "")))
    if kind in ERROR_TYPES or kind == "commit_throttled":
        return ErrorMessage(str(kind), str(msg.get("error") or "no detail"))
    return Unknown(str(kind))


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
    """The typed error for an error message."""
    text = f"the server reported {event.type}: {event.error}"
    if event.type in _AUTH_TYPES:
        return AuthError(text, provider=PROVIDER, stage=stage, hint=AUTH_HINT)
    if event.type in _RETRY_TYPES:
        return ProviderConnectionError(
            text,
            provider=PROVIDER,
            stage=stage,
            code=None,
            hint="a new session usually works",
            retryable=True,
        )
    return ProviderError(
        text, provider=PROVIDER, stage=stage, hint="see ElevenLabs' error message above"
    )


# --------------------------------------------------------------------------- state machine


class ScribeSession(RecognitionSession):
    """State of one recognition, possibly across reconnects.

    Time is in seconds of the stream's audio: ``sent`` (audio sent so far) and
    ``finalized`` (where the last answered commit cut; also ``committed``). ``commits``
    holds the stream time of each commit the client sent that no committed transcript has
    answered yet (in order: the service answers commits in order). Audio goes as
    base64 in ``input_audio_chunk`` messages.
    """

    def __init__(self, options: ScribeOptions, *, journal_seconds: float = 30.0) -> None:
        super().__init__(
            sample_rate=options.sample_rate, width=options.width, journal_seconds=journal_seconds
        )
        self.options = options
        self.last_commit = 0.0  # stream time of the last commit sent (or answered)
        self.commits: deque[float] = deque()
        self._partial = ""

    @property
    def committed(self) -> float:
        """Where the last answered commit cut (:attr:`finalized`, by the protocol's word)."""
        return self.finalized

    def _owes_answer(self) -> bool:
        return bool(self.commits)  # the end of input is owed the last commit's answer too

    def _owed_requests(self) -> list[Message]:
        return [commit(self.options.sample_rate)] if self.commits else []

    def _reconnected(self, replayed: list[Message]) -> None:
        if self.commits:  # the commits owed become one (the replayed audio is committed once)
            self.commits = deque([self.commits[-1]])
        self._partial = ""

    def _wire(self, chunk: bytes) -> Message:
        return audio_chunk(chunk, self.options.sample_rate)

    def lost_is_harmless(self) -> bool:
        """A drop now loses nothing: the input ended and every commit was answered."""
        return self.phase is not Phase.OPEN and not self.commits

    # -- client side
    def _commit(self) -> list[Message]:
        msgs = self._tail()
        if self.sent - self.last_commit <= TIME_TOLERANCE:
            return msgs  # nothing new to commit
        self.commits.append(self.sent)
        self.last_commit = self.sent
        return [*msgs, commit(self.options.sample_rate)]

    def flush(self) -> list[Message]:
        """The audio left, then a commit (owed its committed transcript)."""
        self._require_open("flush")
        return self._commit()

    def end_input(self) -> list[Message]:
        """The last commit; the stream completes when every commit is answered."""
        self._require_open("end the input")
        msgs = self._commit()
        self.phase = Phase.DONE if not self.commits else Phase.CLOSING
        return msgs

    # -- server side
    def feed(self, frame: str | bytes) -> list[Action]:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> list[Action]:
        if self.phase is Phase.DONE:
            return [Action(Act.DROP, event, note="message after the last answer")]
        match event:
            case Partial():
                return self._partial_text(event)
            case Committed():
                if event.timed is not self.options.include_timestamps:
                    return [Action(Act.DROP, event, note="the other copy of the segment")]
                return self._committed(event)
            case SessionStarted():
                return [Action(Act.NOTICE, event)]
            case ErrorMessage():
                return [Action(Act.FAIL, event, note=f"{event.type}: {event.error}")]
            case Unknown():
                return [Action(Act.DROP, event, note=f"unknown message type {event.type!r}")]
            case Malformed():
                return [Action(Act.DROP, event, note=event.reason)]
        return [Action(Act.DROP, event, note="unexpected event")]  # pragma: no cover

    def _partial_text(self, event: Partial) -> list[Action]:
        text = event.text.strip()
        if not text or text == self._partial:
            return []
        self._partial = text
        start = self.finalized
        rec = Recognized(text, False, start, max(start, self.sent), 0.0, self.utterance)
        return [Action(Act.EMIT, event, transcript=rec)]

    def _committed(self, event: Committed) -> list[Action]:
        words_end = event.words[-1].end + self.offset if event.words else None
        if self.commits:
            cut = self.commits.popleft()  # the answer of the oldest commit sent
        else:  # the server committed (``vad``): up to its last word
            cut = words_end if words_end is not None else self.finalized
        self._partial = ""
        actions: list[Action] = []
        text = event.text.strip()
        if text:
            if event.words:
                start = event.words[0].start + self.offset
                end = event.words[-1].end + self.offset
            else:
                start, end = self.finalized, cut
            probs = [w.logprob for w in event.words if w.logprob is not None]
            conf = min(1.0, math.exp(sum(probs) / len(probs))) if probs else 1.0
            rec = Recognized(text, True, start, max(start, end), conf, self.utterance)
            self.utterance += 1
            actions.append(Action(Act.EMIT, event, transcript=rec))
        self._finalize_to(min(cut, self.sent))
        if self.phase is Phase.CLOSING and not self.commits:
            self.phase = Phase.DONE
            actions.append(Action(Act.DONE, event))
        return actions
