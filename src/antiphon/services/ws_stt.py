"""The driver shared by every WebSocket streaming-STT plugin.

A plugin subclasses :class:`WebSocketSTT` and supplies its protocol: a URL and headers, a
session factory (its protocol module's sans-I/O state machine, which satisfies
:class:`WireSession` and speaks the shared vocabulary of
:mod:`antiphon.protocols.stt_session`), what opens a connection (:meth:`~WebSocketSTT.open_url`
where a session URL is asked for first), what a flush and the end of input send, and how a
close code maps to a typed error. The driver does the rest, once, for all of them.

The code lives in two modules: this one (what a plugin supplies: :class:`WireSession`,
:class:`WebSocketSTT`) and :mod:`antiphon.services.ws_stt_stream` (the stream that runs
it, :class:`WebSocketRecognizeStream`, re-exported here: import from this module).

How it is built:

- one connection per stream (these protocols carry one recognition per connection);
- **one task per stream, one hop per server message, none per frame sent.** The
  connection's handler (:meth:`WsConnection.set_handler
  <antiphon.net.ws.WsConnection.set_handler>`), called with each server message from the
  protocol callback that parsed it, feeds it to the protocol machine and delivers the
  transcripts to the consumer itself: a transcript crosses no task and no queue but the
  stream's output. It tells the stream's task only what it must act on (the connection
  was lost, the recognition is complete) through the mailbox, and fails the stream
  directly, once, on a server error or a bug (it never raises into the protocol). The
  stream's task takes the caller's audio, flushes and end from the mailbox and sends them
  (with keep-alives while the caller is quiet). A frame pushed while that task waits on
  an empty mailbox, and the connection takes it without waiting (open, its write buffer
  under its limit), is sent in the caller's ``push_audio`` instead (the direct path,
  :meth:`~antiphon.services.stt.RecognizeStream._take_audio_now`): no task wakes for it.
  Else it goes through the mailbox, and its send has the ``process`` deadline. The
  deadlines read the time of the handler's last message (written by the handler alone);
- a connection that drops before every result arrived is replaced and the un-finalized audio
  in the machine's bounded journal replayed (result times are shifted by the machine, so
  the caller sees one continuous stream). A refused first connection is retried the same
  way. Attempts are spaced by :class:`~antiphon.protocols.retry.Backoff` (bounded
  exponential, full jitter: many streams failing together never retry in the same
  millisecond), at most ``max_reconnects`` per stream and within ``reconnect_budget``
  seconds per outage; credentials and quota errors (not ``retryable``), timeouts and lost
  audio are never retried. The stream then fails with the last typed error;
- the transcript that answers the flushes is marked ``flushed``: the server message after
  which the machine owes nothing more (its last final, or an empty final made for an
  answer without one);
- deadlines: ``connect`` per attempt; ``process`` per send; ``final`` from a flush or
  ``end_input`` to the answer; ``idle`` between server messages while an answer is owed
  (restarted when a new connection takes over).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Mapping
from typing import ClassVar, Generic, Protocol, TypeVar

from antiphon.errors import ConfigError, ProviderError
from antiphon.protocols.retry import Backoff
from antiphon.protocols.stt_session import Act, Action, Phase, Recognized
from antiphon.services.stt import STT, RecognizeStream, STTDeadlines
from antiphon.services.ws_common import WsEndpoint
from antiphon.services.ws_stt_stream import WebSocketRecognizeStream

__all__ = [
    "Message",
    "WebSocketRecognizeStream",
    "WebSocketSTT",
    "WireSession",
]

log = logging.getLogger(__name__)

Message = str | bytes
S = TypeVar("S", bound="WireSession")


class WireSession(Protocol):
    r"""What the driver needs of a protocol module's session (one recognition).

    ``phase``: audio is taken while ``OPEN``. ``awaiting``: the server owes an answer (a
    deadline runs). ``replay()``: what a new connection needs to recover, or None when
    audio was lost; ``begin_replay()`` switches to it. ``lost_is_harmless()``: a drop now
    loses nothing (input ended, all finalized). ``feed`` answers a server frame with the
    shared :class:`~antiphon.protocols.stt_session.Action`\ s.
    """

    phase: Phase

    @property
    def done(self) -> bool: ...

    @property
    def awaiting(self) -> bool: ...

    def audio(self, pcm: bytes) -> list[Message]: ...

    def keepalive(self) -> list[Message]: ...

    def replay(self) -> list[Message] | None: ...

    def begin_replay(self) -> list[Message]: ...

    def lost_is_harmless(self) -> bool: ...

    def feed(self, frame: str | bytes) -> list[Action]: ...


class WebSocketSTT(STT, WsEndpoint, Generic[S]):
    """Base of streaming STT plugins over one WebSocket per stream.

    Args:
        url: The full WebSocket URL (query included).
        headers: Handshake headers (credentials: never logged).
        auth_hint: What to check when the credentials are refused.
        deadlines: See :class:`~antiphon.services.stt.STTDeadlines`.
        keepalive_interval: Seconds without a send before a keep-alive (where the
            protocol has one).
        max_reconnects: Connection attempts a stream may make after its first one, for a
            refused connection or a drop (0: never retry).
        journal_seconds: Un-finalized audio kept for replay after a drop (0: none).
        backoff: The waits between attempts.
        reconnect_budget: Seconds one outage may spend waiting between attempts; a wait
            that does not fit gives up.

    Raises:
        ConfigError: an option out of range.
    """

    def __init__(
        self,
        *,
        url: str,
        headers: Mapping[str, str],
        auth_hint: str,
        deadlines: STTDeadlines | None = None,
        keepalive_interval: float = 4.0,
        max_reconnects: int = 3,
        journal_seconds: float = 30.0,
        backoff: Backoff | None = None,
        reconnect_budget: float = 5.0,
    ) -> None:
        if (
            isinstance(keepalive_interval, bool)
            or not isinstance(keepalive_interval, int | float)
            or keepalive_interval <= 0
        ):
            raise ConfigError("keepalive_interval must be a positive number of seconds")
        if (
            isinstance(max_reconnects, bool)
            or not isinstance(max_reconnects, int)
            or max_reconnects < 0
        ):
            raise ConfigError("max_reconnects must be an int >= 0 (0: never reconnect)")
        if not isinstance(journal_seconds, int | float) or journal_seconds < 0:
            raise ConfigError("journal_seconds must be >= 0 (0: never replay audio)")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise ConfigError(f"backoff must be a Backoff, got {type(backoff).__name__}")
        if not isinstance(reconnect_budget, int | float) or reconnect_budget < 0:
            raise ConfigError("reconnect_budget must be >= 0 seconds")
        super().__init__(deadlines=deadlines)
        self._set_endpoint(
            url,
            headers,
            auth_hint,
            connect_timeout=self.deadlines.connect,
            send_timeout=self.deadlines.process,
            close_timeout=self.deadlines.close,
        )
        self.keepalive_interval = float(keepalive_interval)
        self.max_reconnects = max_reconnects
        self.journal_seconds = float(journal_seconds)
        self.backoff = backoff or Backoff()
        self.reconnect_budget = float(reconnect_budget)

    # -- what a plugin supplies
    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """The rate of the audio on the wire (pushed audio is converted to it)."""

    @abstractmethod
    def new_session(self) -> S:
        """A fresh protocol session for one stream."""

    @abstractmethod
    def close_error(self, code: int | None, reason: str, *, stage: str) -> ProviderError:
        """The typed error for a server close (``retryable`` decides about a replay)."""

    #: Said with an error the server reports (what to read, where to look).
    error_hint: ClassVar[str] = "see the provider's error message above"

    def accepts_input(self, session: S) -> bool:
        """Whether the session still takes audio, keep-alives and control messages."""
        return session.phase is Phase.OPEN

    @abstractmethod
    def flush_input(self, session: S) -> tuple[list[Message], list[Action]]:
        """What a flush sends, and actions to apply at once (an utterance the client ends)."""

    @abstractmethod
    def end_input(self, session: S) -> list[Message]:
        """What the end of input sends (the server then finishes and ends the session)."""

    def opening(self, session: S) -> list[Message]:
        """What a stream sends first on its first connection (e.g. a session's configuration;
        a replay resends it as part of ``replay()``)."""
        return []

    def settle(self, session: S) -> list[Action]:
        """Actions that close what is open when a drop completes the stream harmlessly."""
        return []

    def interpret(self, action: Action) -> Recognized | ProviderError | None:
        """A transcript for the caller, the error that fails the stream, or nothing."""
        if action.act is Act.EMIT:
            return action.transcript
        if action.act is Act.FAIL:
            return ProviderError(
                f"the server reported an error: {action.note}",
                provider=self.provider,
                stage="receive",
                hint=self.error_hint,
            )
        if action.act is Act.DROP:
            log.debug(
                "%s: dropped %s (%s)", self.provider, type(action.event).__name__, action.note
            )
        elif action.act is Act.NOTICE:
            log.debug("%s: %s", self.provider, type(action.event).__name__)
        return None

    # -- streams (their connections: WsEndpoint)
    def _new_stream(self, generation: int) -> RecognizeStream:
        return WebSocketRecognizeStream(self, generation)
