"""Azure Speech STT through the Speech SDK: recognition events and their meaning, sans I/O.

The plugin (``antiphon.plugins.azure.stt``) drives the Speech SDK's ``SpeechRecognizer``
(continuous recognition on a push stream) on its own thread; the SDK's events are copied
into the plain dataclasses here on the SDK's threads, and :class:`RecognitionSession`
decides, on the event loop, what each means in the shared vocabulary of
:mod:`antiphon.protocols.stt_session`:

- ``recognizing`` (:class:`RecognizingEvent`) is an interim transcript of the open
  utterance; ``recognized`` (:class:`RecognizedEvent`) its final one (``NoMatch``: the
  utterance ended without words); offsets and durations are in 100 ns ticks of the
  stream's audio.
- ``speech_end_detected`` (:class:`SpeechEnded`) is the end of speech, a notice.
- ``canceled`` (:class:`Canceled`): ``EndOfStream`` after the input ended is the end;
  ``Error`` fails the stream with the typed error of :func:`cancellation_error` (auth,
  quota, connection, service).
- ``session_stopped`` (:class:`SessionStopped`) after the input ended is the end.

The SDK has no call that ends an utterance now: utterances end on the service's
segmentation silence (``segmentation_silence_ms``, sent as
``Speech_SegmentationSilenceTimeoutMs``), so a flush writes that much silence (and a
little more) and, when an utterance is open, owes its final. Phrase hints are the SDK's
``PhraseListGrammar`` (keyterms).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from antiphon.errors import (
    AuthError,
    ConfigError,
    ProtocolStateError,
    ProviderConnectionError,
    ProviderError,
)
from antiphon.protocols.stt_session import Act, Action, Phase, Recognized

__all__ = [
    "DEFAULT_LANGUAGE",
    "FLUSH_MARGIN",
    "PROVIDER",
    "RECOGNITION_PATH",
    "SAMPLE_RATE",
    "Canceled",
    "Connection",
    "Event",
    "RecognitionSession",
    "RecognizedEvent",
    "RecognizerOptions",
    "RecognizingEvent",
    "SessionStopped",
    "SpeechEnded",
    "cancellation_error",
    "recognition_endpoint",
]

PROVIDER = "azure"
RECOGNITION_PATH = "/speech/recognition/conversation/cognitiveservices/v1"
DEFAULT_LANGUAGE = "en-US"
#: The push stream's format: 16 kHz, 16-bit, mono PCM.
SAMPLE_RATE = 16000
#: Silence written past the segmentation silence at a flush.
FLUSH_MARGIN = 0.1
TICKS = 10_000_000  # 100 ns ticks a second
AUTH_HINT = (
    "check AZURE_SPEECH_KEY (or the api_key argument) and that the key belongs to the "
    "region in AZURE_SPEECH_REGION"
)
_REGION = re.compile(r"^[a-z0-9]{2,40}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True, slots=True)
class RecognizerOptions:
    """What the recognizer is built with.

    ``language``: a BCP-47 locale (``en-US``); ``phrases``: phrase hints (keyterms);
    ``segmentation_silence_ms``: silence that ends an utterance (100 to 5000 ms).
    """

    language: str = DEFAULT_LANGUAGE
    phrases: tuple[str, ...] = ()
    segmentation_silence_ms: int = 500

    def __post_init__(self) -> None:
        if not isinstance(self.language, str) or not _LANGUAGE.match(self.language):
            raise ConfigError(f"language must be a locale such as 'en-US', got {self.language!r}")
        if isinstance(self.phrases, str) or not all(
            isinstance(p, str) and p.strip() for p in self.phrases
        ):
            raise ConfigError("keyterms must be a list of non-blank words or phrases")
        ms = self.segmentation_silence_ms
        if isinstance(ms, bool) or not isinstance(ms, int) or not 100 <= ms <= 5000:
            raise ConfigError(f"segmentation_silence_ms must be 100 to 5000, got {ms!r}")


def recognition_endpoint(*, region: str | None = None, endpoint: str | None = None) -> str:
    """The recognition WebSocket endpoint for a region, or ``endpoint`` (an origin such as
    ``ws://127.0.0.1:PORT`` gets the path appended)."""
    if endpoint:
        parts = urlsplit(endpoint.strip())
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ConfigError(
                "Azure STT endpoint must be a WebSocket URL such as "
                f"'wss://westus.stt.speech.microsoft.com{RECOGNITION_PATH}' "
                f"(ws://127.0.0.1:PORT for a local fake), got {endpoint!r}"
            )
        path = parts.path.rstrip("/") or RECOGNITION_PATH
        query = f"?{parts.query}" if parts.query else ""
        return f"{parts.scheme}://{parts.netloc}{path}{query}"
    if not region:
        raise ConfigError(
            "Azure STT needs a region: pass region=... or set AZURE_SPEECH_REGION "
            "(e.g. 'westus'), or pass endpoint"
        )
    region = region.strip().lower()
    if not _REGION.match(region):
        raise ConfigError(f"Azure region must be a name such as 'westus', got {region!r}")
    return f"wss://{region}.stt.speech.microsoft.com{RECOGNITION_PATH}"


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class RecognizingEvent:
    text: str
    offset: int  # ticks
    duration: int


@dataclass(frozen=True, slots=True)
class RecognizedEvent:
    text: str
    offset: int
    duration: int
    matched: bool  # RecognizedSpeech (else NoMatch)
    confidence: float = 1.0


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    offset: int


@dataclass(frozen=True, slots=True)
class Canceled:
    reason: str  # CancellationReason name: Error, EndOfStream, CancelledByUser
    code: str  # CancellationErrorCode name
    details: str


@dataclass(frozen=True, slots=True)
class SessionStopped:
    pass


@dataclass(frozen=True, slots=True)
class Connection:
    up: bool


Event = RecognizingEvent | RecognizedEvent | SpeechEnded | Canceled | SessionStopped | Connection


#: ``CancellationErrorCode`` names → the HTTP-like status the error carries.
_STATUS = {
    "AuthenticationFailure": 401,
    "Forbidden": 403,
    "BadRequest": 400,
    "TooManyRequests": 429,
    "ServiceError": 500,
    "ServiceUnavailable": 503,
}
_STATUS_IN_TEXT = re.compile(r"\((\d{3})\)")


def cancellation_error(code: str, details: str, *, stage: str) -> ProviderError:
    """The typed error of a recognition cancelled with ``code`` (the enum's name)."""
    details = " ".join(details.split())[:400] or "no details"
    m = _STATUS_IN_TEXT.search(details)
    status = int(m.group(1)) if m else _STATUS.get(code)
    if code in ("AuthenticationFailure", "Forbidden") or status in (401, 403):
        return AuthError(
            f"the service refused the credentials: {details}",
            provider=PROVIDER,
            stage="connect",
            code=status or 401,
            hint=AUTH_HINT,
        )
    if code == "TooManyRequests" or status == 429:
        return ProviderError(
            f"over the resource's quota: {details}",
            provider=PROVIDER,
            stage=stage,
            code=429,
            hint="too many requests or concurrent recognitions for the resource (free tier: "
            "one at a time); slow down or upgrade",
            retryable=True,
        )
    if code in ("ConnectionFailure", "ServiceTimeout") and (status is None or status >= 500):
        return ProviderConnectionError(
            f"the connection failed: {details}",
            provider=PROVIDER,
            stage=stage,
            code=status,
            hint="check the region or endpoint and the network; retrying usually helps",
            retryable=True,
        )
    retryable = status is not None and status >= 500
    return ProviderError(
        f"recognition was cancelled ({code}): {details}",
        provider=PROVIDER,
        stage=stage,
        code=status if status is not None else code,
        hint="see the SDK's details above",
        retryable=retryable,
    )


# --------------------------------------------------------------------------- state machine


class RecognitionSession:
    """State of one recognition (one recognizer, one push stream).

    Time is in seconds of the stream's audio: ``sent`` (audio written, flush silence
    included) and ``finalized`` (the end of the last final). ``forced`` is true while a
    flush written during an open utterance waits for that utterance's final.
    """

    def __init__(self, options: RecognizerOptions) -> None:
        self.options = options
        self.phase = Phase.OPEN
        self.sent = 0.0
        self.finalized = 0.0
        self.forced = False
        self.utterance = 0
        self._open = False  # an interim came and no final since

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    @property
    def awaiting(self) -> bool:
        """The service owes an answer (a flushed utterance's final, or the end)."""
        return self.forced or self.phase is Phase.CLOSING

    @property
    def utterance_open(self) -> bool:
        return self._open

    def _require_open(self, what: str) -> None:
        if self.phase is not Phase.OPEN:
            raise ProtocolStateError(f"cannot {what} in phase {self.phase.value}")

    def audio(self, pcm: bytes) -> bytes:
        """The bytes to write for int16 PCM ``pcm`` at :data:`SAMPLE_RATE`."""
        self._require_open("write audio")
        if len(pcm) % 2:
            raise ConfigError(f"audio of {len(pcm)} bytes is not whole samples")
        self.sent += len(pcm) / (2 * SAMPLE_RATE)
        return pcm

    def flush(self) -> bytes:
        """Silence past the segmentation silence, so that the service ends the utterance;
        its final is owed when an utterance is open (nothing when all is finalized)."""
        self._require_open("flush")
        if self.sent - self.finalized <= 0.02 and not self._open:
            return b""
        seconds = self.options.segmentation_silence_ms / 1000 + FLUSH_MARGIN
        silence = bytes(round(seconds * SAMPLE_RATE) * 2)
        self.sent += seconds
        if self._open:
            self.forced = True
        return silence

    def end(self) -> None:
        """The input ended (the push stream is closed): the last results and the end follow."""
        self._require_open("end the input")
        self.phase = Phase.CLOSING

    def receive(self, event: Event) -> list[Action]:
        if self.phase is Phase.DONE:
            return [Action(Act.DROP, event, note="event after the end")]
        match event:
            case RecognizingEvent():
                if not event.text.strip():
                    return []
                self._open = True
                return [Action(Act.EMIT, event, transcript=self._result(event, final=False))]
            case RecognizedEvent():
                self._open = False
                self.forced = False
                end = (event.offset + event.duration) / TICKS
                self.finalized = max(self.finalized, end)
                if not event.matched or not event.text.strip():
                    return []
                rec = self._result(event, final=True)
                self.utterance += 1
                return [Action(Act.EMIT, event, transcript=rec)]
            case SpeechEnded() | Connection():
                return [Action(Act.NOTICE, event)]
            case Canceled(reason="EndOfStream") | SessionStopped() if self.phase is Phase.CLOSING:
                self.phase = Phase.DONE
                self.forced = False
                return [Action(Act.DONE, event)]
            case Canceled(reason="EndOfStream") | SessionStopped():
                return [Action(Act.FAIL, event, note="the recognition stopped unasked")]
            case Canceled():
                return [Action(Act.FAIL, event, note=f"{event.code}: {event.details}")]
        return [Action(Act.DROP, event, note="unexpected event")]  # pragma: no cover

    def _result(self, event: RecognizingEvent | RecognizedEvent, *, final: bool) -> Recognized:
        start = event.offset / TICKS
        end = (event.offset + event.duration) / TICKS
        conf = event.confidence if isinstance(event, RecognizedEvent) else 0.0
        return Recognized(event.text.strip(), final, start, max(start, end), conf, self.utterance)
