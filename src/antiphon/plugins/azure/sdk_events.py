"""What a Speech SDK synthesizer tells a stream: the events its worker posts to the mailbox.

How it is built: the SDK calls its event handlers on its own threads; the handlers of
:class:`~antiphon.plugins.azure.sdk_worker.SdkWorker` only turn each SDK event into one of
these frozen values (plain Python, no native object) and post it to the event loop, where
:class:`~antiphon.plugins.azure.sdk_stream.AzureSdkSynthesisStream` reads it from its
mailbox; :class:`Refused` comes from the stream's own probe of the endpoint
(:mod:`~antiphon.net.probe`). Why a module of its own: these values are the
whole contract between the worker thread and the stream (word boundaries included), and
both sides import them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Audio", "Connected", "Done", "Refused", "Started", "Word", "enum_name"]


@dataclass(frozen=True, slots=True)
class Started:
    result_id: str


@dataclass(frozen=True, slots=True)
class Audio:
    result_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Done:
    result_id: str
    error: tuple[str, str, str] | None  # (reason, error code, details) if cancelled


@dataclass(frozen=True, slots=True)
class Connected:
    up: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """The endpoint refused the probe's TCP connection: the SDK's is refused too."""

    details: str


@dataclass(frozen=True, slots=True)
class Word:
    """A word boundary: seconds from the start of the request's audio."""

    result_id: str
    word: str
    start: float
    end: float


def enum_name(value: object) -> str:
    """The name of an SDK enum member (its ``str()`` if it has none)."""
    return str(getattr(value, "name", value))
