"""What the caller sends a realtime session: :class:`SessionCommands`, the base of
:class:`~antiphon.services.realtime.session.RealtimeSession`.

How it is built: every method is synchronous. It refuses bad input at the edge (with a
message that says how to fix it), refuses once the session is not running, and queues
one mailbox item for the session's main task, which runs the items in order: user audio
(:class:`AudioIn`, already converted to the wire rate, its backlog bounded in seconds)
or a state-machine call (:class:`Send`) that updates the state *before* its messages are
sent, so that a reply can never be fed before the state knows its request. Cut out of
:mod:`.session` so that the caller's side and the session's loop and connection are read
apart; the session supplies the state this base declares.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from antiphon import metrics
from antiphon.aio.channel import Channel
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError, ProviderError, StreamClosedError
from antiphon.protocols import realtime as rt
from antiphon.protocols.realtime import (
    SessionConfig,
    Tool,
    Voice,
    tools_from_config,
    voice_from_config,
)
from antiphon.services.realtime.events import SessionState
from antiphon.services.realtime.output import SessionOutput

if TYPE_CHECKING:
    from antiphon.services.realtime.model import WebSocketRealtimeModel

__all__ = ["AudioIn", "Send", "SessionCommands"]


@dataclass(frozen=True, slots=True)
class AudioIn:
    """User audio for the wire (converted), in the order it was pushed."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class Send:
    """A state-machine call, run in the main task in order: it updates the state and
    returns the client messages to send."""

    call: Callable[[], list[str]]


class SessionCommands:
    """The caller's side of a session (see the module docstring).

    Methods that send (``push_audio``, ``send_text``, ``say``, ``interrupt``, ``update``,
    ``send_tool_result``, ``commit_audio``) queue work for the session's task, in order,
    and raise :class:`StreamClosedError` once it ended.
    """

    # set by the session
    provider: str
    config: SessionConfig
    state: SessionState
    error: ProviderError | None
    _model: WebSocketRealtimeModel
    _sm: rt.RealtimeState
    _mailbox: Channel[object]
    _output: SessionOutput
    _converter: AudioConverter
    _in_bytes: int  # input audio queued, not yet sent
    _in_limit: int

    @abstractmethod
    def _fail(self, error: ProviderError) -> None:
        """Take the session to its failed state with ``error``."""

    @abstractmethod
    def _apply_update(self, cfg: SessionConfig) -> list[str]:
        """In the main task: the messages that apply ``cfg`` (or a move)."""

    @abstractmethod
    def _interrupt_now(self, target: int, played_ms: int, played_item: str | None) -> list[str]:
        """In the main task: the messages that cancel and truncate the interrupted reply."""

    def _check(self, what: str) -> None:
        if self.state is not SessionState.RUNNING:
            detail = f": {self.error}" if self.error else ""
            if self.state is SessionState.CONNECTING:
                detail = " (use `async with model.session() as s` first)"
            raise StreamClosedError(f"cannot {what}: the session is {self.state.value}{detail}")

    def push_audio(self, frame: AudioFrame) -> None:
        """Send user audio; any rate and channel count (converted, stereo mixed to mono)."""
        if not isinstance(frame, AudioFrame):
            raise ConfigError(f"push_audio() takes an AudioFrame, got {type(frame).__name__}")
        self._check("push_audio")
        out = self._converter.process(frame)
        if not out.data:
            return
        self._in_bytes += len(out.data)
        if self._in_bytes > self._in_limit:
            self._fail(
                ProviderError(
                    f"more than {self._model.max_input_backlog:g}s of input audio is waiting "
                    "to be sent",
                    provider=self.provider,
                    stage="send",
                    hint="the server stopped reading (or the network is too slow); "
                    "the session is closed instead of buffering without bound",
                    retryable=True,
                )
            )
            return
        self._mailbox.send_nowait(AudioIn(out.data))

    def commit_audio(self) -> None:
        """End the user's turn by hand (only needed when turn detection is off)."""
        self._check("commit_audio")
        tail = self._converter.flush()
        if tail.data:
            self._mailbox.send_nowait(AudioIn(tail.data))
        self._mailbox.send_nowait(Send(self._sm.commit))

    def send_text(self, text: str) -> None:
        """A user turn in text; the model answers it."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("send_text() needs non-empty text")
        self._check("send_text")
        self._mailbox.send_nowait(Send(partial(self._sm.user_text, text)))

    def say(self, text: str) -> None:
        """Make the agent speak ``text`` (as a response of its own)."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("say() needs non-empty text")
        self._check("say")
        self._mailbox.send_nowait(Send(partial(self._sm.say, text)))

    def send_tool_result(self, call_id: str, output: str) -> None:
        """Answer a :class:`FunctionCall` and let the model continue."""
        if not call_id or not isinstance(output, str):
            raise ConfigError("send_tool_result() needs the call_id and a str output (e.g. JSON)")
        self._check("send_tool_result")
        self._mailbox.send_nowait(Send(partial(self._sm.tool_result, call_id, output)))

    def update(
        self,
        *,
        instructions: str | None = None,
        voice: str | Voice | Mapping[str, Any] | None = None,
        tools: Sequence[Tool | Mapping[str, Any]] | None = None,
    ) -> None:
        """Change instructions, voice or tools (kept for reconnects); refused if invalid."""
        self._check("update")
        cfg = self.config
        if instructions is not None:
            cfg = replace(cfg, instructions=instructions)
        if voice is not None:
            cfg = replace(cfg, voice=voice_from_config(voice, self._model.voice_type))
        if tools is not None:
            cfg = replace(cfg, tools=tools_from_config(tools))
        self._model.check_config(cfg)
        self.config = cfg
        self._mailbox.send_nowait(Send(partial(self._apply_update, cfg)))

    def interrupt(self, played: float | None = None) -> None:
        """Stop the agent now: queued agent audio is dropped at once, the response is
        cancelled and its item truncated at ``played`` seconds (what the user heard of
        the current item, e.g. from an OutputTrack; None: what this iterator yielded).
        """
        if played is not None and (not isinstance(played, int | float) or played < 0):
            raise ConfigError("interrupt(played=...) takes seconds >= 0 (or None)")
        self._check("interrupt")
        target, heard, yielded = self._output.interrupt()
        played_ms = int(yielded) if played is None else int(played * 1000)
        played_item = heard if played is None else None
        metrics.REALTIME_INTERRUPTIONS.labels(self.provider).inc()
        self._mailbox.send_nowait(
            Send(partial(self._interrupt_now, target, played_ms, played_item))
        )
