"""The harness of the WebSocket STT conformance suite: the plugin contract, helpers.

:class:`WsSTTHarness` says what the suite needs of one plugin and its fake server;
:class:`PluginHarness` is that contract for a plugin and fake built like the ones antiphon
ships. :data:`FAST` are the short deadlines every test runs the plugin with (faults
resolve quickly; :data:`GUARD` bounds a whole test), :data:`PHRASES` what the tests speak
and :func:`speech` how (:func:`~antiphon.testing.synth.tone_for_text`, which every fake's
vocabulary knows). Cut out of :mod:`antiphon.testing.conformance.stt_ws`, which holds the
cases and re-exports the names here, so that the harness and the cases are read apart
(as ``realtime_harness`` is).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from antiphon.audio.frame import AudioFrame
from antiphon.services.stt import STT, RecognizeStream, STTDeadlines, Transcript
from antiphon.testing.conformance.tts_harness import free_port
from antiphon.testing.faults import FaultPlan
from antiphon.testing.server import FakeServer
from antiphon.testing.synth import tone_for_text

__all__ = [
    "FAST",
    "GUARD",
    "PHRASES",
    "PluginHarness",
    "Run",
    "WsSTTHarness",
    "all_transcripts",
    "feed_audio",
    "free_port",
    "speech",
]

#: Short deadlines so that faults resolve quickly; the guard catches real hangs.
FAST = STTDeadlines(connect=1.0, process=1.0, final=1.0, idle=1.0, close=0.5)
GUARD = 20.0

#: Phrases the tests speak (every fake's vocabulary knows them).
PHRASES: tuple[str, ...] = ("What time is it?", "Turn on the lights.", "Thank you very much.")


def speech(text: str, sample_rate: int = 16000, pad: float = 0.4) -> AudioFrame:
    """The fakes' stand-in for ``text`` spoken (:func:`tone_for_text`), ``pad`` seconds of
    silence on each side."""
    silence = bytes(round(pad * sample_rate) * 2)
    return AudioFrame(silence + tone_for_text(text, sample_rate) + silence, sample_rate)


class WsSTTHarness(ABC):
    """What the suite needs to know about one plugin and its fake server."""

    #: Phrases the tests speak (the fake must be able to recognise them).
    PHRASES: ClassVar[tuple[str, ...]] = PHRASES
    #: The protocol has a keep-alive message (else the paused-stream test expects the
    #: idle close to cost one reconnect instead).
    has_keepalive: bool = True
    #: The service ends an utterance only when told (a flush): the tests that pause
    #: between phrases flush first.
    manual_endpoints: bool = False

    def url_for_port(self, port: int) -> str:
        """The plugin's base URL for a local server on ``port``."""
        return f"ws://127.0.0.1:{port}"

    @abstractmethod
    def fake(self, plan: FaultPlan) -> FakeServer:
        """A new (not started) fake server following ``plan`` that knows :attr:`PHRASES`."""

    @abstractmethod
    def make_stt(
        self,
        base_url: str,
        *,
        deadlines: STTDeadlines,
        keepalive_interval: float | None = None,
        max_reconnects: int | None = None,
    ) -> STT:
        """The plugin pointed at ``base_url`` with valid test credentials (None: default)."""

    @abstractmethod
    def speech(self, text: str, sample_rate: int = 16000) -> AudioFrame:
        """Audio of ``text`` spoken, with a little silence around it."""

    @abstractmethod
    def heard(self, text: str, transcript: str) -> bool:
        """Whether ``transcript`` is an acceptable recognition of ``text``."""

    @abstractmethod
    def connections(self, fake: Any) -> int:
        """How many connections the fake has accepted so far."""

    @abstractmethod
    def keepalives(self, fake: Any) -> int:
        """How many keep-alive messages the fake has received."""

    def sessions(self, fake: Any) -> int:
        """How many recognition sessions the fake has started (by default one a
        connection; protocols that configure a session after connecting count those)."""
        return self.connections(fake)


class PluginHarness(WsSTTHarness):
    """The harness of a plugin and fake built like the ones antiphon ships.

    Args:
        plugin: the plugin class (or factory); it is called with ``api_key``,
            ``base_url``, ``deadlines``, ``options`` and, when a test sets them,
            ``keepalive_interval`` and ``max_reconnects``.
        fake: the fake server class, called as ``fake(plan, vocabulary=PHRASES)``; its
            ``stats`` count ``connections`` and messages (``count(type)``).
        api_key: the key the fake accepts.
        scheme: the base URL's scheme (``http`` for a service whose sessions start with an
            HTTP request).
        path: appended to the local server's URL (a service whose base URL has a path).
        keepalive: the keep-alive message type the fake counts (None: the protocol has
            none).
        manual_endpoints: see :attr:`WsSTTHarness.manual_endpoints`.
        sessions: how to count the fake's sessions (default: one a connection).
        options: more keyword arguments for the plugin.
    """

    def __init__(
        self,
        plugin: Callable[..., STT],
        fake: Callable[..., FakeServer],
        *,
        api_key: str,
        scheme: str = "ws",
        path: str = "",
        keepalive: str | None = None,
        manual_endpoints: bool = False,
        sessions: Callable[[Any], int] | None = None,
        **options: Any,
    ) -> None:
        self._plugin = plugin
        self._fake = fake
        self._api_key = api_key
        self._scheme = scheme
        self._path = path
        self._keepalive = keepalive
        self._sessions = sessions
        self._options = options
        self.has_keepalive = keepalive is not None
        self.manual_endpoints = manual_endpoints

    def url_for_port(self, port: int) -> str:
        return f"{self._scheme}://127.0.0.1:{port}{self._path}"

    def fake(self, plan: FaultPlan) -> FakeServer:
        return self._fake(plan, vocabulary=self.PHRASES)

    def make_stt(
        self,
        base_url: str,
        *,
        deadlines: STTDeadlines,
        keepalive_interval: float | None = None,
        max_reconnects: int | None = None,
    ) -> STT:
        extra = dict(self._options)
        if keepalive_interval is not None:
            extra["keepalive_interval"] = keepalive_interval
        if max_reconnects is not None:
            extra["max_reconnects"] = max_reconnects
        return self._plugin(api_key=self._api_key, base_url=base_url, deadlines=deadlines, **extra)

    def speech(self, text: str, sample_rate: int = 16000) -> AudioFrame:
        return speech(text, sample_rate)

    def heard(self, text: str, transcript: str) -> bool:
        return transcript == text

    def connections(self, fake: Any) -> int:
        n: int = fake.stats.connections
        return n

    def keepalives(self, fake: Any) -> int:
        if self._keepalive is None:
            return 0
        n: int = fake.stats.count(self._keepalive)
        return n

    def sessions(self, fake: Any) -> int:
        return self._sessions(fake) if self._sessions else self.connections(fake)


@dataclass
class Run:
    """One test's plugin and fake, running (what the suite's ``run`` yields)."""

    fake: Any
    stt: STT
    harness: WsSTTHarness


async def all_transcripts(stream: RecognizeStream) -> list[Transcript]:
    """Every transcript of ``stream``, to its end."""
    return [t async for t in stream]


def feed_audio(stream: RecognizeStream, audio: AudioFrame, chunk: float = 0.02) -> None:
    """Push ``audio`` into ``stream`` in ``chunk``-second frames."""
    for f in audio.split(chunk):
        stream.push_audio(f)
