"""Where the server's agents come from: shared services, a new session per call.

An :class:`AgentFactory` opens what calls share (STT, LLM and TTS services, which serve
many streams at once) when the server starts, makes a fresh
:class:`~antiphon.agent.AgentSession` for each call (a VAD holds one stream's state, so
each call gets its own), and closes the shared services when the server stops.

- :class:`PipelineAgent`: the services named by a
  :class:`~antiphon.agent.pipeline.PipelineSpec` (the offline default, or providers).
- Capacity: a factory may say how many calls it serves at once in real time
  (``capacity``, optional); the server admits that many by default, refuses more with
  1013 and reports 503 on ``/healthz`` when full, so an overloaded server refuses new
  calls instead of failing all of them. :class:`PipelineAgent` takes it from its
  pipeline (the offline one: the size of its PocketSphinx pool).
- :func:`load_agent_file`: a user's Python file defining ``agent`` (an AgentFactory) or
  ``create_agent()`` returning one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from antiphon.agent.events import AgentEvent, AgentState, StateChanged
from antiphon.agent.options import AgentOptions
from antiphon.agent.pipeline import (
    DEFAULT_INSTRUCTIONS,
    FakeBackends,
    PipelineSpec,
    Services,
    make_vad,
    open_services,
)
from antiphon.agent.session import AgentSession
from antiphon.errors import ConfigError, StreamClosedError
from antiphon.services.tools import FunctionTool
from antiphon.services.vad import VAD

__all__ = ["AgentFactory", "CallableAgent", "PipelineAgent", "load_agent_file"]


@runtime_checkable
class AgentFactory(Protocol):
    """Makes one agent session per call, from services shared by all calls."""

    async def start(self) -> None:
        """Open what calls share (bounded by the services' own deadlines)."""
        ...

    def new_session(self) -> AgentSession:
        """A new, not yet started session for one call."""
        ...

    async def aclose(self) -> None:
        """Close what :meth:`start` opened; idempotent."""
        ...


class PipelineAgent:
    """An agent on the services of ``spec`` (default: the offline pipeline).

    ``greeting``: said when a call starts (``""``: none). ``output_rate``: the audio rate
    sent to clients (16 kHz for the browser; 8 kHz for telephony). ``fakes``: the
    stand-in services of a ``spec.fake`` pipeline (``antiphon.testing.registry.LoopbackFakes``).
    """

    def __init__(
        self,
        spec: PipelineSpec | None = None,
        *,
        instructions: str = DEFAULT_INSTRUCTIONS,
        tools: Sequence[FunctionTool] = (),
        options: AgentOptions | None = None,
        greeting: str = "Hello! Ask me what I can do.",
        output_rate: int = 16000,
        fakes: FakeBackends | None = None,
    ) -> None:
        self.spec = spec or PipelineSpec()
        self.fakes = fakes
        self.instructions = instructions
        self.extra_tools = tuple(tools)
        self.options = options
        self.greeting = greeting
        self.output_rate = output_rate
        self._stack = contextlib.AsyncExitStack()
        self._services: Services | None = None

    @property
    def capacity(self) -> int | None:
        """Calls this agent serves at once in real time (the server's default
        ``max_sessions``); None when its pipeline has no local bound."""
        return self.spec.capacity

    async def start(self) -> None:
        if self._services is None:
            self._services = await open_services(self.spec, self._stack, fakes=self.fakes)

    def new_session(self) -> AgentSession:
        s = self._services
        if s is None:
            raise StreamClosedError("the agent is not started (or closed): call start() first")
        vad = make_vad(self.spec.vad, s.vad_worker)
        session = AgentSession(
            vad=vad,
            stt=s.stt,
            llm=s.llm,
            tts=s.tts,
            tools=(*s.tools, *self.extra_tools),
            instructions=self.instructions,
            options=self.options,
            output_rate=self.output_rate,
        )
        session.on_event(_close_when_closed(vad))
        return session

    async def aclose(self) -> None:
        self._services = None
        await self._stack.aclose()


def _close_when_closed(vad: VAD) -> Callable[[AgentEvent], None]:
    """A listener that releases the call's VAD model when its session closes.

    The session takes no audio once closed, so its VAD's model (a pooled Silero
    detector) goes back now, not when the call's objects are garbage collected (a full
    collection a busy server runs rarely: each call meanwhile took a new detector).
    """

    def listener(event: AgentEvent) -> None:
        if isinstance(event, StateChanged) and event.new is AgentState.CLOSED:
            vad.close()

    return listener


class CallableAgent:
    """An :class:`AgentFactory` from a function making sessions (services managed by you).

    ``make`` is called per call; ``start`` / ``stop`` (optional) run at server start/stop.
    """

    def __init__(
        self,
        make: Callable[[], AgentSession],
        *,
        start: Callable[[], object] | None = None,
        stop: Callable[[], object] | None = None,
    ) -> None:
        self._make, self._start, self._stop = make, start, stop

    async def start(self) -> None:
        if self._start is not None:
            result = self._start()
            if hasattr(result, "__await__"):
                await result

    def new_session(self) -> AgentSession:
        return self._make()

    async def aclose(self) -> None:
        if self._stop is not None:
            result = self._stop()
            if hasattr(result, "__await__"):
                await result


def load_agent_file(path: str | Path) -> AgentFactory:
    """The agent a user's Python file defines.

    The file defines ``agent`` (an object with ``start()``, ``new_session()`` and
    ``aclose()``, e.g. a :class:`PipelineAgent`) or ``create_agent()`` returning one.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"agent file {str(file)!r} does not exist")
    name = f"antiphon_user_agent_{abs(hash(file.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {str(file)!r} as Python; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"running {str(file)!r} failed: {exc!r}") from exc
    agent = getattr(module, "agent", None)
    if agent is None and callable(getattr(module, "create_agent", None)):
        agent = module.create_agent()
    if not isinstance(agent, AgentFactory):
        raise ConfigError(
            f"{str(file)!r} must define `agent` (e.g. agent = PipelineAgent(...)) or "
            "`create_agent()` returning an object with start(), new_session() and aclose()"
        )
    return agent
