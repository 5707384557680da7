"""OpenTelemetry traces per turn, built from an agent session's public events.

::

    tracer = TurnTracer()          # the global tracer provider, or tracer_provider=...
    tracer.attach(session)         # before session.start()

Each answered user turn becomes one trace: a root span ``antiphon.turn`` from the end
of the user's speech to the end of the reply, with children

- ``antiphon.stt.final``: end of speech → the STT final transcript;
- ``antiphon.end_of_turn``: end of speech → the turn decided;
- ``antiphon.llm``: the LLM's time to first token (placed from the end of turn);
- ``antiphon.tts``: the first sentence sent to the TTS → its first audio;
- ``antiphon.tool <name>``: each tool call (its batch's duration).

Attributes carry the :class:`~antiphon.agent.events.TurnMetrics` figures
(``antiphon.voice_to_voice``, ``antiphon.llm.ttft``, ...), the generation, whether the
turn was interrupted and the tools' names. **No user or agent text, no tool arguments or
outputs and no error text by default** (they may hold personal data or secrets);
``record_text=True`` opts in.

How it is built, and why: the tracer is a synchronous listener of the session
(:meth:`AgentSession.on_event`), so it owns no task and cannot delay the conversation.
It notes the time of the events that mark a turn (``UserTurnEnded``, the first
``AgentSpeaking``, ``ToolCalled``) on the session's clock and, when ``TurnCompleted``
comes, creates every span of the turn at once with explicit start and end times
derived from those notes and the turn's metrics. The session's clock maps onto epoch
nanoseconds from the moment of :meth:`attach`, so on a virtual clock the spans are
exact and deterministic. A turn dropped before it spoke (the user went on) is ended as
``antiphon.abandoned`` when the next turn starts or the session closes.

``opentelemetry-api`` is optional (``pip install antiphon[otel]``): without it the
tracer does nothing. Spans are exported only if the application installs an SDK.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from antiphon.agent.events import (
    AgentEvent,
    AgentSpeaking,
    AgentState,
    StateChanged,
    ToolCalled,
    TurnCompleted,
    TurnMetrics,
    UserTurnEnded,
)
from antiphon.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from antiphon.agent.session import AgentSession

__all__ = ["TurnTracer", "get_tracer"]

INSTRUMENTATION = "antiphon.agent.tracing"


def _otel_trace() -> Any:
    """``opentelemetry.trace``, or None when the API is not installed."""
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None


class _NoSpan:
    """What the session's own spans need of a span, doing nothing."""

    def set_attribute(self, key: str, value: object) -> None:
        pass

    def end(self, end_time: int | None = None) -> None:
        pass


class _NoTracer:
    def start_span(self, name: str, **kwargs: object) -> _NoSpan:
        return _NoSpan()

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, **kwargs: object) -> Iterator[_NoSpan]:
        yield _NoSpan()


def get_tracer(name: str) -> Any:
    """An OpenTelemetry tracer, or one that does nothing when the API is not installed
    (``opentelemetry-api`` is the optional ``otel`` extra: import it only through here)."""
    api = _otel_trace()
    return _NoTracer() if api is None else api.get_tracer(name)


@dataclass(slots=True)
class _Tool:
    name: str
    ended: float
    seconds: float | None
    error: bool
    arguments: str
    output: str


@dataclass(slots=True)
class _Turn:
    committed: float  # clock time the turn was decided (UserTurnEnded)
    user_text: str
    first_sentence: float | None = None  # the first AgentSpeaking
    tools: list[_Tool] = field(default_factory=list)


class TurnTracer:
    """Per-turn OpenTelemetry spans from an :class:`~antiphon.agent.AgentSession`'s events.

    Args:
        tracer_provider: where spans go (default: the global provider; without an SDK
            installed, a no-op).
        record_text: put the user's and the agent's text, tool arguments and outputs,
            and error messages in the spans (off by default: they may hold personal data).
    """

    def __init__(self, *, tracer_provider: Any = None, record_text: bool = False) -> None:
        if not isinstance(record_text, bool):
            raise ConfigError("TurnTracer record_text must be a bool")
        self.record_text = record_text
        self._api = _otel_trace()
        self._tracer: Any = (
            None
            if self._api is None
            else self._api.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)
        )
        self._session: AgentSession | None = None
        self._remove: Callable[[], None] | None = None
        self._turns: dict[int, _Turn] = {}
        self._base = (0, 0.0)  # epoch ns and clock time at attach

    @property
    def enabled(self) -> bool:
        """Whether the OpenTelemetry API is installed (else the tracer does nothing)."""
        return self._tracer is not None

    def attach(self, session: AgentSession) -> None:
        """Trace ``session``'s turns from now on (attach before it starts).

        Raises:
            ConfigError: already attached.
        """
        if self._session is not None:
            raise ConfigError("this TurnTracer is already attached to a session")
        self._session = session
        self._base = (time.time_ns(), session.clock.now())
        if self._tracer is not None:
            self._remove = session.on_event(self._on_event)

    def detach(self) -> None:
        """Stop tracing; turns in progress are ended as abandoned."""
        self._abandon_all()
        if self._remove is not None:
            self._remove()
        self._remove = None
        self._session = None

    # ------------------------------------------------------------------ events

    def _now(self) -> float:
        assert self._session is not None
        return self._session.clock.now()

    def _ns(self, at: float) -> int:
        base_ns, base_clock = self._base
        return base_ns + round((at - base_clock) * 1e9)

    def _on_event(self, event: AgentEvent) -> None:
        match event:
            case UserTurnEnded(text=text, generation=gen):
                # an older turn still open was dropped before it spoke
                for old in [g for g in self._turns if g < gen]:
                    self._abandon(old)
                self._turns[gen] = _Turn(self._now(), text)
            case AgentSpeaking(generation=gen):
                turn = self._turns.get(gen)
                if turn is not None and turn.first_sentence is None:
                    turn.first_sentence = self._now()
            case ToolCalled(generation=gen):
                turn = self._turns.get(gen)
                if turn is not None:
                    turn.tools.append(
                        _Tool(
                            event.name,
                            self._now(),
                            event.seconds,
                            event.error is not None,
                            event.arguments,
                            event.output,
                        )
                    )
            case TurnCompleted(metrics=metrics, generation=gen):
                turn = self._turns.pop(gen, None)
                if turn is not None:
                    self._export(turn, metrics, self._now())
            case StateChanged(new=AgentState.CLOSED):
                self._abandon_all()
            case _:
                pass

    # ------------------------------------------------------------------ spans

    def _span(self, name: str, start: float, end: float, parent: Any, **attrs: Any) -> Any:
        api = self._api
        context = api.set_span_in_context(parent) if parent is not None else None
        span = self._tracer.start_span(
            name,
            context=context,
            start_time=self._ns(start),
            attributes={k: v for k, v in attrs.items() if v is not None},
        )
        return span, self._ns(max(start, end))

    def _child(self, name: str, start: float, seconds: float | None, parent: Any) -> None:
        if seconds is None:
            return
        span, end = self._span(name, start, start + seconds, parent)
        span.set_attribute("antiphon.seconds", seconds)
        span.end(end_time=end)

    def _export(self, turn: _Turn, m: TurnMetrics, ended: float) -> None:
        speech_end = turn.committed - (m.end_of_turn_delay or 0.0)
        attrs: dict[str, Any] = {
            "antiphon.generation": m.generation,
            "antiphon.interrupted": m.interrupted,
            "antiphon.end_of_turn_delay": m.end_of_turn_delay,
            "antiphon.stt.final_delay": m.stt_final_delay,
            "antiphon.llm.ttft": m.llm_ttft,
            "antiphon.tts.ttfa": m.tts_ttfa,
            "antiphon.voice_to_voice": m.voice_to_voice,
            "antiphon.tool_calls": list(m.tool_calls) or None,
        }
        if self.record_text:
            attrs["antiphon.user_text"] = m.user_text or turn.user_text
            attrs["antiphon.agent_text"] = m.agent_text
        root, end = self._span("antiphon.turn", speech_end, ended, None, **attrs)
        if m.error is not None:
            detail = m.error if self.record_text else "the turn failed"
            root.set_status(self._api.Status(self._api.StatusCode.ERROR, detail))
        self._child("antiphon.stt.final", speech_end, m.stt_final_delay, root)
        self._child("antiphon.end_of_turn", speech_end, m.end_of_turn_delay, root)
        self._child("antiphon.llm", turn.committed, m.llm_ttft, root)
        if turn.first_sentence is not None:
            self._child("antiphon.tts", turn.first_sentence, m.tts_ttfa, root)
        for tool in turn.tools:
            seconds = tool.seconds or 0.0
            text = {"antiphon.tool.arguments": tool.arguments, "antiphon.tool.output": tool.output}
            span, tool_end = self._span(
                f"antiphon.tool {tool.name}",
                tool.ended - seconds,
                tool.ended,
                root,
                **{"antiphon.tool.name": tool.name, "antiphon.tool.error": tool.error},
                **(text if self.record_text else {}),
            )
            if tool.error:
                span.set_status(self._api.Status(self._api.StatusCode.ERROR))
            span.end(end_time=tool_end)
        root.end(end_time=end)

    def _abandon(self, gen: int) -> None:
        turn = self._turns.pop(gen, None)
        if turn is None:
            return
        root, end = self._span(
            "antiphon.turn",
            turn.committed,
            self._now(),
            None,
            **{"antiphon.generation": gen, "antiphon.abandoned": True},
        )
        root.end(end_time=end)

    def _abandon_all(self) -> None:
        if self._session is None:
            return
        for gen in list(self._turns):
            self._abandon(gen)
