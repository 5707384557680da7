"""Deepgram streaming STT (``/v1/listen``) wire format, sans I/O: what goes on the wire.

:class:`ListenOptions` (the query) and :func:`build_url`, the client's control messages
(``KeepAlive``, ``Finalize``, ``CloseStream``), the server events and :func:`parse`, which
turns a frame into one of them, and :func:`close_error`, the close codes as typed errors.
No state: the state machine of a recognition is :mod:`antiphon.protocols.deepgram_stt`,
which re-exports every name here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from antiphon.errors import ConfigError, ProviderError
from antiphon.protocols.close_codes import closed_error
from antiphon.protocols.json_events import Malformed, Unknown, excerpt, parse_json_event

__all__ = [
    "CLOSE_STREAM",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_SAMPLE_RATE",
    "ENCODINGS",
    "FINALIZE",
    "KEEPALIVE",
    "MAX_CHUNK_SECONDS",
    "PATH",
    "PROVIDER",
    "ErrorMessage",
    "ListenOptions",
    "Malformed",
    "Metadata",
    "Results",
    "ServerEvent",
    "SpeechStarted",
    "Unknown",
    "UtteranceEnd",
    "Word",
    "build_url",
    "close_error",
    "options_from_query",
    "parse",
]

PROVIDER = "deepgram"
DEFAULT_BASE_URL = "wss://api.deepgram.com"
PATH = "/v1/listen"
DEFAULT_MODEL = "nova-3"
DEFAULT_SAMPLE_RATE = 16000
#: Raw encodings we can send (from int16 PCM); each needs ``sample_rate`` in the query.
ENCODINGS: dict[str, int] = {"linear16": 2, "mulaw": 1, "alaw": 1}
#: Longest audio message we send; longer pushes are split (Deepgram suggests 20-250 ms).
MAX_CHUNK_SECONDS = 0.1

KEEPALIVE = json.dumps({"type": "KeepAlive"})
FINALIZE = json.dumps({"type": "Finalize"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})


# --------------------------------------------------------------------------- config


def _flag(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


@dataclass(frozen=True, slots=True)
class ListenOptions:
    """Query parameters of a ``/v1/listen`` connection (``None``: the server's default).

    ``endpointing``: milliseconds of silence that end an utterance (``speech_final``), or
    ``False`` to turn it off. ``utterance_end_ms`` (>= 1000) needs ``interim_results``.
    """

    model: str = DEFAULT_MODEL
    language: str | None = None
    encoding: str = "linear16"
    sample_rate: int = DEFAULT_SAMPLE_RATE
    channels: int = 1
    interim_results: bool = True
    punctuate: bool | None = True
    smart_format: bool | None = None
    endpointing: int | bool | None = None
    utterance_end_ms: int | None = None
    vad_events: bool | None = None
    mip_opt_out: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("Deepgram STT model must be a model name such as 'nova-3'")
        if self.language is not None and (
            not isinstance(self.language, str) or not self.language.strip()
        ):
            raise ConfigError("Deepgram language must be a BCP-47 tag such as 'en-US' (or None)")
        if self.encoding not in ENCODINGS:
            raise ConfigError(
                f"Deepgram STT encoding {self.encoding!r} is not supported here; use one of "
                f"{', '.join(ENCODINGS)} (antiphon sends raw audio it converted itself)"
            )
        rate = self.sample_rate
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
            raise ConfigError(
                f"Deepgram sample_rate must be an int between 8000 and 48000 Hz, got {rate!r}"
            )
        if not isinstance(self.channels, int) or not 1 <= self.channels <= 8:
            raise ConfigError(f"Deepgram channels must be 1 to 8, got {self.channels!r}")
        ep = self.endpointing
        if ep is not None and ep is not False and (ep is True or not isinstance(ep, int) or ep < 0):
            raise ConfigError(
                "Deepgram endpointing is milliseconds of silence (an int >= 0) or False to "
                f"turn it off, got {ep!r}"
            )
        ue = self.utterance_end_ms
        if ue is not None:
            if not isinstance(ue, int) or isinstance(ue, bool) or ue < 1000:
                raise ConfigError(f"Deepgram utterance_end_ms must be an int >= 1000, got {ue!r}")
            if not self.interim_results:
                raise ConfigError("Deepgram utterance_end_ms needs interim_results=True")

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.channels * ENCODINGS[self.encoding]

    def query(self) -> dict[str, str]:
        q: dict[str, str] = {
            "model": self.model,
            "encoding": self.encoding,
            "sample_rate": str(self.sample_rate),
            "channels": str(self.channels),
            "interim_results": "true" if self.interim_results else "false",
        }
        if self.language is not None:
            q["language"] = self.language
        if self.endpointing is False:
            q["endpointing"] = "false"
        elif self.endpointing is not None:
            q["endpointing"] = str(self.endpointing)
        if self.utterance_end_ms is not None:
            q["utterance_end_ms"] = str(self.utterance_end_ms)
        for name in ("punctuate", "smart_format", "vad_events", "mip_opt_out"):
            value = _flag(getattr(self, name))
            if value is not None:
                q[name] = value
        return q


def _bool_param(q: Mapping[str, str], name: str) -> bool | None:
    if name not in q:
        return None
    value = q[name].lower()
    if value not in ("true", "false"):
        raise ConfigError(f"{name} must be true or false, got {q[name]!r}")
    return value == "true"


def options_from_query(q: Mapping[str, str]) -> ListenOptions:
    """Parse a connection's query (what a server does); ConfigError says what is wrong."""
    if "encoding" not in q or "sample_rate" not in q:
        raise ConfigError("raw audio needs both encoding and sample_rate in the query")
    try:
        rate = int(q["sample_rate"])
        channels = int(q.get("channels", "1"))
        ue = int(q["utterance_end_ms"]) if "utterance_end_ms" in q else None
    except ValueError as exc:
        raise ConfigError(f"a numeric query parameter is not a number: {exc}") from None
    ep_raw = q.get("endpointing")
    endpointing: int | bool | None
    if ep_raw is None:
        endpointing = None
    elif ep_raw.lower() == "false":
        endpointing = False
    elif ep_raw.isdigit():
        endpointing = int(ep_raw)
    else:
        raise ConfigError(f"endpointing must be milliseconds or false, got {ep_raw!r}")
    return ListenOptions(
        model=q.get("model", DEFAULT_MODEL),
        language=q.get("language"),
        encoding=q["encoding"],
        sample_rate=rate,
        channels=channels,
        interim_results=bool(_bool_param(q, "interim_results")),
        punctuate=_bool_param(q, "punctuate"),
        smart_format=_bool_param(q, "smart_format"),
        endpointing=endpointing,
        utterance_end_ms=ue,
        vad_events=_bool_param(q, "vad_events"),
        mip_opt_out=_bool_param(q, "mip_opt_out"),
    )


def build_url(base_url: str, options: ListenOptions) -> str:
    """``wss://host/v1/listen?model=...``; ``base_url`` is a ws(s) origin, path optional."""
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"Deepgram base_url must look like 'wss://api.deepgram.com' (or ws://127.0.0.1:PORT "
            f"for a local fake), got {base_url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(PATH):
        path += PATH
    return f"{parts.scheme}://{parts.netloc}{path}?{urlencode(options.query())}"


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float = 0.0
    punctuated_word: str = ""


@dataclass(frozen=True, slots=True)
class Results:
    """A transcript of ``[start, start + duration)`` seconds of the connection's audio."""

    transcript: str
    confidence: float
    words: tuple[Word, ...]
    start: float
    duration: float
    is_final: bool
    speech_final: bool = False
    from_finalize: bool = False
    channel_index: tuple[int, ...] = (0, 1)

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class Metadata:
    """Summary of the connection, sent after ``CloseStream`` before the server closes."""

    request_id: str
    duration: float = 0.0
    channels: int = 0


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    last_word_end: float
    channel: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    timestamp: float
    channel: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """An in-band ``Error`` (e.g. variant ``SchemaError`` for a message the server could
    not parse)."""

    variant: str
    description: str
    code: str = ""


ServerEvent = Results | Metadata | UtteranceEnd | SpeechStarted | ErrorMessage | Unknown | Malformed


def _num(v: object) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _ints(v: object) -> tuple[int, ...]:
    if not isinstance(v, list):
        return ()
    return tuple(int(x) for x in v if isinstance(x, int | float) and not isinstance(x, bool))


def _parse_results(msg: dict[str, Any], frame: str | bytes) -> Results | Malformed:
    start, duration = _num(msg.get("start")), _num(msg.get("duration"))
    channel = msg.get("channel")
    alts = channel.get("alternatives") if isinstance(channel, dict) else None
    if start is None or duration is None or not isinstance(alts, list):
        return Malformed("Results without start, duration or channel.alternatives", excerpt(frame))
    alt = alts[0] if alts and isinstance(alts[0], dict) else {}
    words: list[Word] = []
    for w in alt.get("words") or ():
        if not isinstance(w, dict):
            continue
        ws, we = _num(w.get("start")), _num(w.get("end"))
        if ws is None or we is None or not isinstance(w.get("word"), str):
            continue
        pw = w.get("punctuated_word")
        words.append(
            Word(
                w["word"],
                ws,
                we,
                _num(w.get("confidence")) or 0.0,
                pw if isinstance(pw, str) else "",
            )
        )
    text = alt.get("transcript")
    return Results(
        transcript=text if isinstance(text, str) else "",
        confidence=min(1.0, max(0.0, _num(alt.get("confidence")) or 0.0)),
        words=tuple(words),
        start=start,
        duration=max(0.0, duration),
        is_final=msg.get("is_final") is True,
        speech_final=msg.get("speech_final") is True,
        from_finalize=msg.get("from_finalize") is True,
        channel_index=_ints(msg.get("channel_index")) or (0, 1),
    )


def parse(frame: str | bytes) -> ServerEvent:
    """Turn one WebSocket message into a typed event (the server sends text only)."""
    msg = parse_json_event(frame, provider="Deepgram")
    if isinstance(msg, Malformed):
        return msg
    kind = msg["type"]
    if kind == "Results":
        return _parse_results(msg, frame)
    if kind == "Metadata":
        return Metadata(
            str(msg.get("request_id", "")),
            _num(msg.get("duration")) or 0.0,
            int(_num(msg.get("channels")) or 0),
        )
    if kind == "UtteranceEnd":
        end = _num(msg.get("last_word_end"))
        if end is None:
            return Malformed("UtteranceEnd without a numeric last_word_end", excerpt(frame))
        return UtteranceEnd(end, _ints(msg.get("channel")))
    if kind == "SpeechStarted":
        ts = _num(msg.get("timestamp"))
        if ts is None:
            return Malformed("SpeechStarted without a numeric timestamp", excerpt(frame))
        return SpeechStarted(ts, _ints(msg.get("channel")))
    if kind.lower() == "error":
        return ErrorMessage(
            str(msg.get("variant", msg.get("err_code", ""))),
            str(msg.get("description", msg.get("err_msg", msg.get("message", "")))),
            str(msg.get("code", "") or ""),
        )
    return Unknown(kind, msg)


_HINTS = {
    1000: "the server ended the stream before every result was sent",
    1003: "antiphon sent a message type the server does not accept; please report it",
    1008: "the server could not decode the audio: check encoding, sample_rate and "
    "channels match what is sent",
    1009: "a message was too large for the server",
    1011: "the server had an internal error or timed out; retrying usually helps",
}
_IDLE_HINT = (
    "the server got no audio or KeepAlive for about 10 s; keep keepalive_interval below that"
)


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``.

    ``retryable`` is true where a new connection may help (drops, timeouts, internal
    errors), false where the same request would fail again (bad audio, credentials).
    1008 is about credentials unless its reason is a ``DATA-`` error (the audio).
    """
    reason = reason or "no reason given"
    idle = code == 1011 and reason.startswith("NET-0001")
    return closed_error(
        code,
        reason,
        provider=PROVIDER,
        stage=stage,
        auth_codes=() if reason.startswith("DATA-") else (1008,),
        auth_hint="check DEEPGRAM_API_KEY (or the api_key argument) and the project's access",
        hints={1011: _IDLE_HINT} if idle else _HINTS,
    )
