"""The Azure Speech SDK's synthesis types, as the test double hands them out.

The enums the plugin reads (values as in ``azure.cognitiveservices.speech``; the output
formats are the raw ones of :data:`antiphon.protocols.azure_tts.OUTPUT_FORMATS`) and the
plain objects the SDK's callbacks and futures carry: :class:`SynthesisResult` (with
:class:`CancellationDetails`), :class:`SynthesisEvent`, :class:`WordBoundaryEvent`, and
:func:`word_boundaries`, the service's boundaries of a text over its tone. Pure data, no
threads: the double that plays the service is :mod:`antiphon.testing.azure_sdk_double`,
which re-exports the enums.
"""

from __future__ import annotations

import datetime
import enum
import re
from dataclasses import dataclass

from antiphon.protocols import azure_tts as az
from antiphon.testing.synth import SECONDS_PER_CHAR

__all__ = [
    "CancellationDetails",
    "CancellationErrorCode",
    "CancellationReason",
    "PropertyId",
    "ResultReason",
    "SpeechSynthesisBoundaryType",
    "SpeechSynthesisOutputFormat",
    "SpeechSynthesisRequestInputType",
    "SynthesisEvent",
    "SynthesisResult",
    "WordBoundaryEvent",
    "word_boundaries",
]

_RAW_FORMATS = [f.sdk_name for f in az.OUTPUT_FORMATS.values() if f.container == "raw"]


class SpeechSynthesisBoundaryType(enum.Enum):
    Word = 0
    Punctuation = 1
    Sentence = 2


class ResultReason(enum.Enum):
    SynthesizingAudioStarted = 9
    SynthesizingAudio = 8
    SynthesizingAudioCompleted = 10
    Canceled = 1


class CancellationReason(enum.Enum):
    Error = 1
    EndOfStream = 2
    CancelledByUser = 3


class CancellationErrorCode(enum.Enum):
    NoError = 0
    AuthenticationFailure = 1
    BadRequest = 2
    TooManyRequests = 3
    Forbidden = 4
    ConnectionFailure = 5
    ServiceTimeout = 6
    ServiceError = 7
    ServiceUnavailable = 8
    RuntimeError = 9


SpeechSynthesisOutputFormat = enum.Enum(  # type: ignore[misc]
    "SpeechSynthesisOutputFormat", {name: i for i, name in enumerate(_RAW_FORMATS, 1)}
)


class PropertyId(enum.Enum):
    SpeechSynthesis_FrameTimeoutInterval = 1
    SpeechSynthesis_RtfTimeoutThreshold = 2
    SpeechSynthesisRequest_Pitch = 3
    SpeechSynthesisRequest_Rate = 4
    SpeechSynthesisRequest_Volume = 5
    SpeechSynthesisRequest_Style = 6


class SpeechSynthesisRequestInputType(enum.Enum):
    TextStream = 1


@dataclass
class CancellationDetails:
    """``CancellationDetails`` of a cancelled result."""

    reason: CancellationReason
    error_code: CancellationErrorCode
    error_details: str


@dataclass
class SynthesisResult:
    """``SpeechSynthesisResult``: one request's result, or a chunk of its audio."""

    result_id: str
    reason: ResultReason = ResultReason.SynthesizingAudio
    audio_data: bytes = b""
    cancellation_details: CancellationDetails | None = None


@dataclass
class SynthesisEvent:
    """``SpeechSynthesisEventArgs``: what a synthesis signal carries."""

    result: SynthesisResult


@dataclass
class WordBoundaryEvent:
    """``SpeechSynthesisWordBoundaryEventArgs``: offsets from the request's audio start."""

    result_id: str
    audio_offset: int  # 100 ns ticks
    duration: datetime.timedelta
    text: str
    text_offset: int
    word_length: int
    boundary_type: SpeechSynthesisBoundaryType


def word_boundaries(result_id: str, text: str) -> list[tuple[float, WordBoundaryEvent]]:
    """The service's word and punctuation boundaries of ``text`` over its tone
    (:data:`~antiphon.testing.synth.SECONDS_PER_CHAR` a character of the stripped text),
    with the start of each in seconds: words without their trailing punctuation, which
    has its own ``Punctuation`` boundary, as the service sends them."""
    spoken = text.strip()
    out: list[tuple[float, WordBoundaryEvent]] = []
    for m in re.finditer(r"\w[\w'-]*|[^\w\s]+", spoken):
        kind = (
            SpeechSynthesisBoundaryType.Word
            if m.group()[0].isalnum() or m.group()[0] == "_"
            else SpeechSynthesisBoundaryType.Punctuation
        )
        start = m.start() * SECONDS_PER_CHAR
        ticks = round(start * 10_000_000)
        length = datetime.timedelta(seconds=len(m.group()) * SECONDS_PER_CHAR)
        offset = text.index(spoken) + m.start()
        event = WordBoundaryEvent(result_id, ticks, length, m.group(), offset, len(m.group()), kind)
        out.append((start, event))
    return out
