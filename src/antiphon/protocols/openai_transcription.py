"""OpenAI realtime transcription (a Realtime *transcription* session), sans I/O.

The protocol of ``wss://api.openai.com/v1/realtime?intent=transcription`` (GA), as
documented in the realtime transcription guide
(https://developers.openai.com/api/docs/guides/realtime-transcription: connect with
``intent=transcription`` and no model in the URL, then ``session.update`` with
``session.type = "transcription"``), the client events reference
(https://developers.openai.com/api/reference/resources/realtime/client-events:
``session.update``, ``input_audio_buffer.append``/``commit``) and the server events
reference (https://developers.openai.com/api/reference/resources/realtime/server-events:
``input_audio_buffer.speech_started``/``speech_stopped``/``committed``,
``conversation.item.input_audio_transcription.delta``/``completed``/``failed``,
``error``), and typed by the ``openai`` SDK's ``openai.types.realtime`` models (the
witness, ``tests/test_sdk_openai_stt.py``). The beta protocol of the same endpoint
(``OpenAI-Beta: realtime=v1``, ``transcription_session.update``) is not spoken.

- :class:`TranscriptionOptions` is the session: the model (``gpt-4o-transcribe`` by
  default), ``language``, ``prompt``, ``turn_detection`` (server VAD by default, None:
  the client commits), ``noise_reduction``; :func:`session_update` encodes it. Audio is
  PCM16 at 24 kHz (the only PCM rate the GA API takes), base64 in
  ``input_audio_buffer.append``.
- :func:`parse` turns a server frame into a typed event; :func:`close_error` maps close
  codes to typed errors.
- :class:`TranscriptionSession` is the state machine of one recognition. The service
  transcribes *committed* audio: the server's VAD commits each speech run by itself;
  a flush commits what the server has not (only speech in progress when VAD is on), the
  end of input all that is left, and each ``committed`` item is owed its ``completed``
  transcript. Deltas of an item are
  antiphon's interim transcripts (the text so far), ``completed`` its final one. The
  protocol has no end-of-session message: after the end of input the last commits are
  answered, and the stream is complete when no transcript is owed (the client closes).
  Audio not yet covered by a completed transcript is kept in a bounded journal, so a
  dropped connection can be replaced: the session configured again and the audio
  replayed, times shifted to the stream's.

No I/O and no asyncio here; the plugin is ``antiphon.plugins.openai.stt``.
"""

from __future__ import annotations

import base64
import json
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from antiphon.errors import ConfigError, ProviderError
from antiphon.protocols.close_codes import closed_error
from antiphon.protocols.stt_session import (
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
    "COMMIT",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "PATH",
    "PROVIDER",
    "SAMPLE_RATE",
    "Act",
    "Action",
    "Committed",
    "ErrorMessage",
    "Informational",
    "Malformed",
    "Phase",
    "Recognized",
    "ServerEvent",
    "SpeechStarted",
    "SpeechStopped",
    "TranscriptCompleted",
    "TranscriptDelta",
    "TranscriptFailed",
    "TranscriptionOptions",
    "TranscriptionSession",
    "Unknown",
    "append",
    "auth_headers",
    "build_url",
    "close_error",
    "parse",
    "session_update",
]

PROVIDER = "openai"
DEFAULT_BASE_URL = "wss://api.openai.com"
PATH = "/v1/realtime"
DEFAULT_MODEL = "gpt-4o-transcribe"
#: The GA API's only PCM rate (``audio/pcm`` with ``rate: 24000``).
SAMPLE_RATE = 24000
BYTES_PER_SECOND = SAMPLE_RATE * 2
#: The service refuses to commit less than 100 ms (``input_audio_buffer_commit_empty``).
MIN_COMMIT_SECONDS = 0.1
#: One ``input_audio_buffer.append`` carries at most this much audio.
MAX_APPEND_SECONDS = 0.5
COMMIT_EMPTY = "input_audio_buffer_commit_empty"

COMMIT = json.dumps({"type": "input_audio_buffer.commit"})

#: Server events that carry nothing a transcription stream acts on.
INFORMATIONAL = frozenset(
    {
        "session.created",
        "session.updated",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.created",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "conversation.item.input_audio_transcription.segment",
        "rate_limits.updated",
    }
)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class TranscriptionOptions:
    """The transcription session (``session.update`` with ``type: "transcription"``).

    ``turn_detection``: a ``server_vad``/``semantic_vad`` object, or None to commit only
    on the client's flush. ``noise_reduction``: ``{"type": "near_field"|"far_field"}``
    or None. ``logprobs``: ask for log probabilities (the final's confidence).
    """

    model: str = DEFAULT_MODEL
    language: str | None = None
    prompt: str | None = None
    turn_detection: Mapping[str, Any] | None = field(default_factory=lambda: {"type": "server_vad"})
    noise_reduction: Mapping[str, Any] | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must name a transcription model, e.g. 'gpt-4o-transcribe'")
        td = self.turn_detection
        if td is not None and (
            not isinstance(td, Mapping) or td.get("type") not in ("server_vad", "semantic_vad")
        ):
            raise ConfigError(
                "turn_detection must be None or an object with type 'server_vad' or 'semantic_vad'"
            )
        nr = self.noise_reduction
        if nr is not None and (
            not isinstance(nr, Mapping) or nr.get("type") not in ("near_field", "far_field")
        ):
            raise ConfigError("noise_reduction must be None or {'type': 'near_field'|'far_field'}")

    @property
    def vad(self) -> bool:
        return self.turn_detection is not None


def session_update(options: TranscriptionOptions) -> str:
    """The ``session.update`` that configures the transcription session."""
    transcription: dict[str, Any] = {"model": options.model}
    if options.language:
        transcription["language"] = options.language
    if options.prompt:
        transcription["prompt"] = options.prompt
    audio_input: dict[str, Any] = {
        "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
        "transcription": transcription,
        "turn_detection": dict(options.turn_detection) if options.turn_detection else None,
    }
    if options.noise_reduction is not None:
        audio_input["noise_reduction"] = dict(options.noise_reduction)
    session: dict[str, Any] = {"type": "transcription", "audio": {"input": audio_input}}
    if options.logprobs:
        session["include"] = ["item.input_audio_transcription.logprobs"]
    return json.dumps({"type": "session.update", "session": session})


def append(pcm: bytes) -> str:
    """``input_audio_buffer.append`` of int16 PCM at 24 kHz."""
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")}
    )


def build_url(base_url: str, path: str = PATH) -> str:
    """``wss://host/v1/realtime?intent=transcription`` (no model: the session names it)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(f"base_url must be ws:// or wss://host[:port], got {base_url!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}?intent=transcription"


def auth_headers(api_key: str) -> dict[str, str]:
    """``Authorization: Bearer`` with an API key or an ephemeral client secret."""
    return {"Authorization": f"Bearer {api_key}"}


# --------------------------------------------------------------------------- server events


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class Committed:
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptCompleted:
    item_id: str
    transcript: str
    logprobs: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class TranscriptFailed:
    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    type: str
    code: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Informational:
    type: str


@dataclass(frozen=True, slots=True)
class Unknown:
    type: object


ServerEvent = (
    SpeechStarted
    | SpeechStopped
    | Committed
    | TranscriptDelta
    | TranscriptCompleted
    | TranscriptFailed
    | ErrorMessage
    | Informational
    | Unknown
    | Malformed
)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _logprobs(value: object) -> tuple[float, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for entry in value:
        lp = entry.get("logprob") if isinstance(entry, dict) else None
        if isinstance(lp, int | float) and not isinstance(lp, bool):
            out.append(float(lp))
    return tuple(out)


def parse(frame: str | bytes) -> ServerEvent:
    """One server frame as a typed event (never raises)."""
    msg = json_object(frame)
    if isinstance(msg, Malformed):
        return msg
    raw = frame[:200] if isinstance(frame, str) else ""
    kind = msg.get("type")
    item = _str(msg.get("item_id"))
    if kind in INFORMATIONAL:
        return Informational(str(kind))
    if kind == "error":
        err = msg.get("error")
        if not isinstance(err, dict):
            return Malformed("an error without its error object", raw)
        return ErrorMessage(
            _str(err.get("type")) or "error",
            _str(err.get("code")),
            _str(err.get("message")) or "no message",
        )
    if (
        item is None
        and isinstance(kind, str)
        and kind.startswith(("input_audio_buffer.", "conversation.item.input_audio_transcription."))
    ):
        return Malformed(f"{kind} without item_id", raw)
    if item is None:
        return Unknown(kind)
    if kind == "input_audio_buffer.speech_started":
        ms = _int(msg.get("audio_start_ms"))
        return SpeechStarted(item, ms) if ms is not None else Malformed("no audio_start_ms")
    if kind == "input_audio_buffer.speech_stopped":
        ms = _int(msg.get("audio_end_ms"))
        return SpeechStopped(item, ms) if ms is not None else Malformed("no audio_end_ms")
    if kind == "input_audio_buffer.committed":
        return Committed(item)
    if kind == "conversation.item.input_audio_transcription.delta":
        return TranscriptDelta(item, _str(msg.get("delta")) or "")
    if kind == "conversation.item.input_audio_transcription.completed":
        text = _str(msg.get("transcript"))
        if text is None:
            return Malformed("a completed transcription without transcript", raw)
        return TranscriptCompleted(item, text, _logprobs(msg.get("logprobs")))
    if kind == "conversation.item.input_audio_transcription.failed":
        err = msg.get("error")
        detail = _str(err.get("message")) if isinstance(err, dict) else None
        return TranscriptFailed(item, detail or "no detail")
    return Unknown(kind)


def close_error(code: int | None, reason: str, *, stage: str) -> ProviderError:
    """The typed error for a server close with ``code``/``reason``.

    ``retryable`` where a new connection may help (drops, going away, internal errors,
    the session's maximum duration); 1008 (policy: credentials) is an :class:`AuthError`.
    """
    return closed_error(
        code,
        reason,
        provider=PROVIDER,
        stage=stage,
        auth_codes=(1008,),
        auth_hint="check OPENAI_API_KEY (or the api_key argument)",
    )


# --------------------------------------------------------------------------- state machine


@dataclass(slots=True)
class _Item:
    start: float  # stream seconds
    end: float
    text: str = ""


class TranscriptionSession(RecognitionSession):
    """State of one recognition, possibly across reconnects.

    Stream seconds: ``sent`` (audio appended), ``buffer_start`` (where the audio not yet
    committed begins), ``finalized`` (where the audio a transcript still needs begins).
    ``items`` are the committed (or VAD-stopped) speech runs whose transcript has not
    completed, in audio order; ``commits`` the ends of the client's commits not yet
    acknowledged. A flush or the end makes every item then pending *owed* (a deadline
    runs until they complete).
    """

    def __init__(self, options: TranscriptionOptions, *, journal_seconds: float = 30.0) -> None:
        super().__init__(
            sample_rate=SAMPLE_RATE,
            width=2,
            journal_seconds=journal_seconds,
            chunked=False,  # every push goes at once, in appends of MAX_APPEND_SECONDS at most
        )
        self.options = options
        self.buffer_start = 0.0
        self.items: dict[str, _Item] = {}
        self.commits: deque[float] = deque()
        self.owed: set[str] = set()
        self.speaking: tuple[str, float] | None = None  # VAD: item and start of speech

    def _owes_answer(self) -> bool:
        return bool(self.commits or self.owed)

    def _owed_requests(self) -> list[Message]:
        return [COMMIT] if self.journal and (self.awaiting or self.items) else []

    def _reconnected(self, replayed: list[Message]) -> None:
        self.buffer_start = self.offset
        self.items.clear()
        self.owed.clear()
        self.speaking = None
        self.commits.clear()
        if replayed[-1] == COMMIT:
            self.commits.append(self.sent)  # owed: its item's transcript becomes owed

    def _wire(self, chunk: bytes) -> Message:
        return append(chunk)

    @property
    def uncommitted(self) -> float:
        return max(0.0, self.sent - self.buffer_start)

    def lost_is_harmless(self) -> bool:
        """A drop now loses nothing: the input ended and every transcript arrived."""
        return self.phase is Phase.CLOSING and not self.commits and not self.items

    # -- client side
    def start(self) -> list[Message]:
        """What opens a connection: the session's configuration."""
        return [session_update(self.options)]

    def audio(self, pcm: bytes) -> list[Message]:
        """``input_audio_buffer.append`` messages for int16 PCM at 24 kHz."""
        self._require_open("send audio")
        if len(pcm) % 2:
            raise ConfigError(f"audio of {len(pcm)} bytes is not whole 16-bit samples")
        step = round(MAX_APPEND_SECONDS * SAMPLE_RATE) * 2
        return [self._send(pcm[i : i + step]) for i in range(0, len(pcm), step)]

    def _commit(self, *, last: bool) -> list[Message]:
        """A commit of the buffer, when it holds what the server has not committed.

        With VAD a flush commits only speech in progress (the server commits each run it
        heard; what follows is silence). The ``last`` commit, at the end of input, takes
        whatever is left: a server that never reported on it owes an answer for it.
        """
        if self.options.vad and self.speaking is None and not last:
            return []
        if self.uncommitted < MIN_COMMIT_SECONDS - 1e-9:
            return []  # too short to commit: it stays in the buffer
        if self.commits and self.commits[-1] >= self.sent - 1e-9:
            return []  # already asked
        self.commits.append(self.sent)
        return [COMMIT]

    def flush(self) -> list[Message]:
        """Commit what is uncommitted; every transcript pending now is owed."""
        self._require_open("flush")
        msgs = self._commit(last=False)
        self.owed.update(self.items)
        return msgs

    def end_input(self) -> list[Message]:
        """The last commit; the stream completes once every transcript owed arrived."""
        self._require_open("end the input")
        msgs = self._commit(last=True)
        self.owed.update(self.items)
        self.phase = Phase.CLOSING
        self._check_done()
        return msgs

    # -- journal and replay
    def _journal_trim(self) -> None:
        """Forget audio before every pending item and the uncommitted buffer."""
        keep = min(
            [self.buffer_start, *(i.start for i in self.items.values())]
            + ([self.speaking[1]] if self.speaking else [])
        )
        # not _finalize_to: a new connection's buffer starts again at the replay's start
        self.finalized = keep
        self.journal.trim(keep)

    def replay(self) -> list[Message] | None:
        """What to send on a new connection to recover (the session's configuration first),
        or None if audio was lost."""
        msgs = super().replay()
        return None if msgs is None else [*self.start(), *msgs]

    # -- server side
    def feed(self, frame: str | bytes) -> list[Action]:
        return self.receive(parse(frame))

    def receive(self, event: ServerEvent) -> list[Action]:
        if self.phase is Phase.DONE:
            return [Action(Act.DROP, event, note="message after the stream completed")]
        match event:
            case SpeechStarted(item_id=item, audio_start_ms=ms):
                self.speaking = (item, self.offset + ms / 1000)
                return [Action(Act.NOTICE, event)]
            case SpeechStopped(item_id=item, audio_end_ms=ms):
                start = self.speaking[1] if self.speaking else self.buffer_start
                end = max(start, self.offset + ms / 1000)
                self.speaking = None
                self.items.setdefault(item, _Item(start, end))
                self.buffer_start = max(self.buffer_start, end)
                return [Action(Act.NOTICE, event)]
            case Committed(item_id=item):
                return self._committed(item, event)
            case TranscriptDelta(item_id=item, delta=delta):
                pending = self.items.get(item)
                if pending is None:
                    return [Action(Act.DROP, event, note=f"a delta for unknown item {item!r}")]
                pending.text += delta
                if not pending.text.strip():
                    return []
                rec = Recognized(
                    pending.text.strip(), False, pending.start, pending.end, 0.0, self.utterance
                )
                return [Action(Act.EMIT, event, transcript=rec)]
            case TranscriptCompleted(item_id=item, transcript=text, logprobs=lps):
                return self._completed(item, text, lps, event)
            case TranscriptFailed(item_id=item, message=message):
                return [Action(Act.FAIL, event, note=f"transcription of {item} failed: {message}")]
            case ErrorMessage(code=code, message=message, type=kind):
                if code == COMMIT_EMPTY and self.commits:
                    self.commits.popleft()  # nothing to transcribe: the commit is answered
                    return [Action(Act.NOTICE, event), *self._check_done()]
                return [Action(Act.FAIL, event, note=f"{code or kind}: {message}")]
            case Informational():
                return [Action(Act.NOTICE, event)]
            case Unknown(type=kind):
                return [Action(Act.DROP, event, note=f"unknown message type {kind!r}")]
            case Malformed(reason=reason):
                return [Action(Act.DROP, event, note=reason)]
        return [Action(Act.DROP, event, note="unexpected event")]  # pragma: no cover

    def _committed(self, item: str, event: Committed) -> list[Action]:
        ours = bool(self.commits) and (
            item not in self.items or (self.speaking is not None and self.speaking[0] == item)
        )
        if ours:
            end = self.commits.popleft()
            start = self.speaking[1] if self.speaking else self.buffer_start
            self.speaking = None
            self.items[item] = _Item(min(start, end), end)
            self.buffer_start = max(self.buffer_start, end)
            self.owed.add(item)
        elif item not in self.items:  # a VAD commit we did not see stop (or speech at once)
            start = self.speaking[1] if self.speaking else self.buffer_start
            self.speaking = None
            self.items[item] = _Item(start, max(start, self.sent))
            self.buffer_start = max(self.buffer_start, self.sent)
            if self.phase is Phase.CLOSING:
                self.owed.add(item)
        self._journal_trim()
        return [Action(Act.NOTICE, event)]

    def _completed(
        self, item: str, text: str, logprobs: tuple[float, ...], event: TranscriptCompleted
    ) -> list[Action]:
        pending = self.items.pop(item, None)
        if pending is None:
            return [Action(Act.DROP, event, note=f"a transcript for unknown item {item!r}")]
        self.owed.discard(item)
        out: list[Action] = []
        if text.strip():
            conf = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 1.0
            rec = Recognized(
                text.strip(), True, pending.start, pending.end, min(1.0, conf), self.utterance
            )
            self.utterance += 1
            out.append(Action(Act.EMIT, event, transcript=rec))
        self._journal_trim()
        return [*out, *self._check_done()]

    def _check_done(self) -> list[Action]:
        if self.phase is Phase.CLOSING and not self.commits and not self.items and not self.owed:
            self.phase = Phase.DONE
            return [Action(Act.DONE)]
        return []
