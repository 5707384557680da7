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
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError, ProviderError
from antiphon.protocols.tts_session import Act, Action, CharWords, ProtocolStateError, WordTiming

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

PROVIDER = "elevenlabs"
DEFAULT_BASE_URL = "wss://api.elevenlabs.io"
PATH_TEMPLATE = "/v1/text-to-speech/{voice_id}/multi-stream-input"
DEFAULT_MODEL = "eleven_flash_v2_5"
#: A premade voice ("George") used in ElevenLabs' own streaming examples.
DEFAULT_VOICE = "JBFqnCBsd6RMkjVDRZzb"
DEFAULT_ENCODING = "linear16"
DEFAULT_SAMPLE_RATE = 24000
#: Raw encodings the multi-context endpoint streams, and their sample rates.
ENCODINGS: dict[str, tuple[int, ...]] = {
    "linear16": (8000, 16000, 22050, 24000, 44100),
    "mulaw": (8000,),
    "alaw": (8000,),
}
_FORMAT_PREFIX = {"linear16": "pcm", "mulaw": "ulaw", "alaw": "alaw"}
_PREFIX_ENCODING = {v: k for k, v in _FORMAT_PREFIX.items()}
#: Contexts one connection may have open at once (the server refuses a sixth).
MAX_CONTEXTS = 5
DEFAULT_INACTIVITY_TIMEOUT = 20
MAX_INACTIVITY_TIMEOUT = 180
TEXT_NORMALIZATION = ("auto", "on", "off")
#: Models the multi-context endpoint refuses, with what to use instead.
UNSUPPORTED_MODELS = {
    "eleven_v3": "multi-context WebSockets are not available for eleven_v3; use "
    "eleven_flash_v2_5 (lowest latency), eleven_turbo_v2_5 or eleven_multilingual_v2",
}
_VOICE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


# --------------------------------------------------------------------------- config


def output_format(encoding: str, sample_rate: int) -> str:
    """The ``output_format`` value for a wire encoding and rate (``pcm_24000``)."""
    return f"{_FORMAT_PREFIX[encoding]}_{sample_rate}"


def parse_output_format(value: str) -> tuple[str, int]:
    """``"pcm_24000"`` → ``("linear16", 24000)``; compressed formats are refused."""
    prefix, _, rest = value.partition("_")
    if prefix in ("mp3", "opus"):
        raise ConfigError(
            f"ElevenLabs output_format {value!r} is compressed; antiphon streams raw audio "
            "frames: use pcm_24000 (encoding='linear16') or ulaw_8000 / alaw_8000 for telephony"
        )
    encoding = _PREFIX_ENCODING.get(prefix)
    rate = rest.split("_", 1)[0]
    if encoding is None or not rate.isdigit():
        raise ConfigError(
            f"unknown ElevenLabs output_format {value!r}; use one of "
            + ", ".join(output_format(e, r) for e, rates in ENCODINGS.items() for r in rates)
        )
    return encoding, int(rate)


def resolve_format(
    encoding: str | None, sample_rate: int | None, fmt: str | None
) -> tuple[str, int]:
    """The wire encoding and rate from either ``output_format`` or encoding/sample_rate.

    Without a rate, linear16 defaults to 24 kHz and mulaw/alaw to 8 kHz.
    """
    if fmt is not None:
        enc, rate = parse_output_format(fmt)
        if (encoding is not None and encoding != enc) or (
            sample_rate is not None and sample_rate != rate
        ):
            raise ConfigError(
                f"output_format={fmt!r} contradicts encoding={encoding!r}/sample_rate="
                f"{sample_rate!r}; pass either output_format or encoding and sample_rate"
            )
        return enc, rate
    enc = encoding or DEFAULT_ENCODING
    if sample_rate is None:
        sample_rate = DEFAULT_SAMPLE_RATE if enc == "linear16" else 8000
    return enc, sample_rate


def _unit(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"ElevenLabs voice setting {name} must be between 0 and 1, got {value}")


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    """Per-context voice settings; ``None`` leaves the voice's own setting."""

    stability: float | None = None
    similarity_boost: float | None = None
    style: float | None = None
    use_speaker_boost: bool | None = None
    speed: float | None = None

    def __post_init__(self) -> None:
        _unit("stability", self.stability)
        _unit("similarity_boost", self.similarity_boost)
        _unit("style", self.style)
        if self.speed is not None and not 0.7 <= self.speed <= 1.2:
            raise ConfigError(f"ElevenLabs speed must be between 0.7 and 1.2, got {self.speed}")

    def to_json(self) -> dict[str, float | bool]:
        names = ("stability", "similarity_boost", "style", "use_speaker_boost", "speed")
        return {n: v for n in names if (v := getattr(self, n)) is not None}


@dataclass(frozen=True, slots=True)
class PronunciationDictionary:
    """A pronunciation dictionary (id and version) applied to every context."""

    dictionary_id: str
    version_id: str


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """The query parameters of a connection and the settings every context opens with.

    ``None`` leaves the server's default (and sends nothing).
    """

    voice: str = DEFAULT_VOICE
    model: str = DEFAULT_MODEL
    encoding: str = DEFAULT_ENCODING
    sample_rate: int = DEFAULT_SAMPLE_RATE
    language_code: str | None = None
    inactivity_timeout: int | None = None
    auto_mode: bool | None = None
    enable_ssml_parsing: bool | None = None
    apply_text_normalization: str | None = None
    enable_logging: bool | None = None
    seed: int | None = None
    voice_settings: VoiceSettings | None = None
    chunk_length_schedule: tuple[int, ...] | None = None
    pronunciation_dictionaries: tuple[PronunciationDictionary, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.voice, str) or not _VOICE_ID.match(self.voice):
            raise ConfigError(
                f"ElevenLabs voice must be a voice id such as {DEFAULT_VOICE!r} "
                f"(see the voice library), got {self.voice!r}"
            )
        if not isinstance(self.model, str) or not self.model.strip() or " " in self.model:
            raise ConfigError(f"ElevenLabs model must be a model id such as {DEFAULT_MODEL!r}")
        if self.model in UNSUPPORTED_MODELS:
            raise ConfigError(f"ElevenLabs model {self.model!r}: {UNSUPPORTED_MODELS[self.model]}")
        rates = ENCODINGS.get(self.encoding)
        if rates is None:
            raise ConfigError(
                f"ElevenLabs streaming in antiphon does not support encoding {self.encoding!r}; "
                f"use one of {', '.join(ENCODINGS)} (mp3/opus are compressed, not raw frames)"
            )
        if self.sample_rate not in rates:
            raise ConfigError(
                f"ElevenLabs encoding {self.encoding!r} does not support sample_rate "
                f"{self.sample_rate}; use one of {', '.join(map(str, rates))}"
            )
        if self.inactivity_timeout is not None and not (
            1 <= self.inactivity_timeout <= MAX_INACTIVITY_TIMEOUT
        ):
            raise ConfigError(
                f"ElevenLabs inactivity_timeout must be 1 to {MAX_INACTIVITY_TIMEOUT} seconds, "
                f"got {self.inactivity_timeout}"
            )
        if (
            self.apply_text_normalization is not None
            and self.apply_text_normalization not in TEXT_NORMALIZATION
        ):
            raise ConfigError(
                "ElevenLabs apply_text_normalization must be one of "
                f"{', '.join(TEXT_NORMALIZATION)}, got {self.apply_text_normalization!r}"
            )
        if self.seed is not None and not 0 <= self.seed <= 4294967295:
            raise ConfigError(f"ElevenLabs seed must be between 0 and 4294967295, got {self.seed}")
        if self.chunk_length_schedule is not None and (
            not self.chunk_length_schedule
            or not all(50 <= n <= 500 for n in self.chunk_length_schedule)
        ):
            raise ConfigError(
                "ElevenLabs chunk_length_schedule must be a non-empty list of character counts "
                f"between 50 and 500 (default [120, 160, 250, 290]), got "
                f"{list(self.chunk_length_schedule)}"
            )
        if self.language_code is not None and not re.match(r"^[a-z]{2,3}$", self.language_code):
            raise ConfigError(
                f"ElevenLabs language_code must be an ISO 639-1 code such as 'en', "
                f"got {self.language_code!r}"
            )

    @property
    def output_format(self) -> str:
        return output_format(self.encoding, self.sample_rate)

    def query(self) -> dict[str, str]:
        q = {"model_id": self.model, "output_format": self.output_format}
        flags = {
            "auto_mode": self.auto_mode,
            "enable_ssml_parsing": self.enable_ssml_parsing,
            "enable_logging": self.enable_logging,
        }
        for name, flag in flags.items():
            if flag is not None:
                q[name] = "true" if flag else "false"
        if self.language_code is not None:
            q["language_code"] = self.language_code
        if self.inactivity_timeout is not None:
            q["inactivity_timeout"] = str(self.inactivity_timeout)
        if self.apply_text_normalization is not None:
            q["apply_text_normalization"] = self.apply_text_normalization
        if self.seed is not None:
            q["seed"] = str(self.seed)
        return q

    def init_fields(self) -> dict[str, Any]:
        """What the first message of every context carries besides text and id."""
        fields: dict[str, Any] = {}
        if self.voice_settings is not None and self.voice_settings.to_json():
            fields["voice_settings"] = self.voice_settings.to_json()
        if self.chunk_length_schedule is not None:
            fields["generation_config"] = {
                "chunk_length_schedule": list(self.chunk_length_schedule)
            }
        if self.pronunciation_dictionaries:
            fields["pronunciation_dictionary_locators"] = [
                {"pronunciation_dictionary_id": d.dictionary_id, "version_id": d.version_id}
                for d in self.pronunciation_dictionaries
            ]
        return fields


def build_url(base_url: str, options: StreamOptions) -> str:
    """``wss://host/v1/text-to-speech/{voice}/multi-stream-input?model_id=...``.

    ``base_url`` is a ws(s) origin (``wss://api.elevenlabs.io``, a residency host, or
    ``ws://127.0.0.1:PORT`` for a local fake), optionally with a path prefix.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(
            "ElevenLabs base_url must look like 'wss://api.elevenlabs.io' (or "
            f"ws://127.0.0.1:PORT for a local fake), got {base_url!r}"
        )
    path = parts.path.rstrip("/")
    if path.endswith("/multi-stream-input"):
        path = path[: path.rfind("/v1/text-to-speech/")]
    elif path.endswith("/v1"):
        path = path[:-3]
    path += PATH_TEMPLATE.format(voice_id=quote(options.voice, safe=""))
    return f"{parts.scheme}://{parts.netloc}{path}?{urlencode(options.query())}"


def auth_headers(api_key: str) -> dict[str, str]:
    """``xi-api-key: <key>``."""
    return {"xi-api-key": api_key}


# --------------------------------------------------------------------------- messages


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def encode_init(context_id: str, options: StreamOptions | None = None) -> str:
    """Open a context: text ``" "`` plus voice settings etc. (its first message)."""
    msg: dict[str, Any] = {"text": " ", "context_id": context_id}
    if options is not None:
        msg.update(options.init_fields())
    return _dumps(msg)


def encode_text(context_id: str, text: str, *, flush: bool = False) -> str:
    """Text for a context; ``flush`` makes the server speak everything buffered now."""
    msg: dict[str, Any] = {"text": text, "context_id": context_id}
    if flush:
        msg["flush"] = True
    return _dumps(msg)


def encode_flush(context_id: str) -> str:
    return _dumps({"context_id": context_id, "flush": True})


def encode_close_context(context_id: str) -> str:
    return _dumps({"context_id": context_id, "close_context": True})


def encode_keepalive(context_id: str) -> str:
    """Reset a context's inactivity timer (empty text; never a context's first message)."""
    return _dumps({"text": "", "context_id": context_id})


CLOSE_SOCKET = _dumps({"close_socket": True})


# --------------------------------------------------------------------------- events


#: Characters with their (start, end) in seconds from the start of the message's audio.
Alignment = tuple[tuple[str, float, float], ...]


@dataclass(frozen=True, slots=True)
class Audio:
    """Audio of a context; ``alignment`` times its characters, relative to this chunk."""

    data: bytes
    context_id: str | None
    alignment: Alignment | None = None


@dataclass(frozen=True, slots=True)
class Final:
    """``isFinal``: the last message of a context (may carry a last audio chunk)."""

    context_id: str | None
    data: bytes = b""
    alignment: Alignment | None = None


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    error: str
    message: str
    context_id: str | None = None
    code: int | None = None


@dataclass(frozen=True, slots=True)
class FlushDone:
    """``{"type": "flush_done"}``: seen by clients, undocumented; informational."""

    context_id: str | None


@dataclass(frozen=True, slots=True)
class Unknown:
    type: str
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str
    text: str = field(repr=False)


ServerEvent = Audio | Final | ErrorMessage | FlushDone | Unknown | Malformed


def _context_id(msg: dict[str, Any]) -> str | None:
    # The schema says contextId; clients report snake_case context_id too.
    for key in ("contextId", "context_id"):
        value = msg.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _alignment(value: object) -> Alignment | None:
    """``alignment``: ``chars``, ``charStartTimesMs``, ``charDurationsMs`` (per chunk).

    The times count from the start of the message's own audio chunk (clients add up the
    chunks, as the SDK's examples do); ``None`` when absent or inconsistent.
    """
    if not isinstance(value, dict):
        return None
    chars = value.get("chars")
    starts = value.get("charStartTimesMs")
    durations = value.get("charDurationsMs", value.get("charsDurationsMs"))
    if not (isinstance(chars, list) and isinstance(starts, list) and isinstance(durations, list)):
        return None
    if not len(chars) == len(starts) == len(durations):
        return None
    out: list[tuple[str, float, float]] = []
    for c, a, d in zip(chars, starts, durations, strict=True):
        if not isinstance(c, str) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in (a, d)
        ):
            return None
        out.append((c, a / 1000.0, (a + d) / 1000.0))
    return tuple(out)


def parse(frame: str | bytes) -> ServerEvent:
    """Turn one WebSocket message into a typed event (the server sends JSON text only)."""
    if isinstance(frame, bytes | bytearray | memoryview):
        return Malformed("binary frame; ElevenLabs sends JSON text frames", repr(bytes(frame)[:50]))
    try:
        msg = json.loads(frame)
    except ValueError as exc:
        return Malformed(f"invalid JSON: {exc}", frame[:200])
    if not isinstance(msg, dict):
        return Malformed("JSON message that is not an object", frame[:200])
    ctx = _context_id(msg)
    if msg.get("error"):
        code = msg.get("code")
        return ErrorMessage(
            str(msg["error"]),
            str(msg.get("message") or ""),
            ctx,
            code if isinstance(code, int) and not isinstance(code, bool) else None,
        )
    data = b""
    audio = msg.get("audio")
    if isinstance(audio, str) and audio:
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            return Malformed(f"audio is not base64: {exc}", frame[:200])
    alignment = _alignment(msg.get("alignment"))
    if msg.get("isFinal") is True or msg.get("is_final") is True:
        return Final(ctx, data, alignment)
    if data:
        return Audio(data, ctx, alignment)
    kind = msg.get("type")
    if kind == "flush_done":
        return FlushDone(ctx)
    return Unknown(str(kind or ""), msg)


def _reason_has(reason: str, *words: str) -> bool:
    low = reason.lower()
    return any(w in low for w in words)


KEY_HINT = "check ELEVEN_API_KEY (or ELEVENLABS_API_KEY, or the api_key argument)"


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``.

    ElevenLabs closes with 1008 (policy violation) for many things; the reason tells them
    apart: a bad key is an :class:`AuthError`, an idle timeout or a transient server fault
    is retryable, too many contexts, quota and voice-settings misuse are not.
    """
    reason = reason or "no reason given"
    msg = f"the server closed the connection: {reason}"
    if code == 1008:
        if _reason_has(
            reason, "api key", "api_key", "unauthorized", "credential", "authenticat", "forbidden"
        ):
            return AuthError(msg, provider=PROVIDER, stage=stage, code=code, hint=KEY_HINT)
        if _reason_has(reason, "max_active_conversations", "simultaneous contexts"):
            hint = (
                f"at most {MAX_CONTEXTS} contexts may be open on one connection; contexts of "
                "cancelled streams must be closed first (please report this)"
            )
            retryable = False
        elif _reason_has(reason, "quota", "credits", "exceeds your"):
            hint = "the account's character quota is used up; check the ElevenLabs plan"
            retryable = False
        elif _reason_has(reason, "voice_settings"):
            hint = "voice settings may only come with a context's first message (please report)"
            retryable = False
        elif _reason_has(reason, "timeout", "have not received", "inactiv"):
            hint = (
                "the server closed an idle connection or context (inactivity_timeout, default "
                f"{DEFAULT_INACTIVITY_TIMEOUT} s, at most {MAX_INACTIVITY_TIMEOUT} s)"
            )
            retryable = True
        elif _reason_has(reason, "something went wrong", "not charged"):
            hint = "a transient server fault; retrying usually helps"
            retryable = True
        else:
            hint = "a policy violation: check the voice id, model_id and output_format"
            retryable = False
        return ProviderConnectionError(
            msg, provider=PROVIDER, stage=stage, code=code, hint=hint, retryable=retryable
        )
    hints = {
        1000: "the server ended the connection",
        1001: "the server is going away; retrying usually helps",
        1009: "a message was too large for the server; send shorter text",
        1011: "the server had an internal error; retrying usually helps",
        1012: "the service is restarting; retrying usually helps",
        1013: "the service is overloaded; try again later",
    }
    return ProviderConnectionError(
        msg,
        provider=PROVIDER,
        stage=stage,
        code=code if code is not None else 1006,
        hint=hints.get(code or 0, "the connection dropped; check the network"),
        retryable=code in (None, 1001, 1006, 1011, 1012, 1013),
    )


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
        width = 2 if self._options.encoding == "linear16" else 1
        self._bytes_per_second = float(width * self._options.sample_rate)

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
