"""Agent handoff: one agent passes the conversation to another, chosen by the LLM.

::

    front = Agent(
        "front_desk",
        instructions="You greet callers and route them.",
        handoffs=[Handoff("billing", history="summary")],
    )
    billing = Agent(
        "billing",
        instructions="You answer questions about invoices.",
        tools=[lookup_invoice],
        tts=other_voice,
        greeting="Billing here. Which invoice is it about?",
        handoffs=[Handoff("front_desk", history=4)],
    )
    flow = AgentFlow([front, billing])  # the first agent starts
    flow.attach(session)                # before session.start()

How it is built, and why:

- **The LLM decides, through a tool.** Each :class:`Handoff` of the active agent becomes
  a tool ``transfer_to_<name>`` (as in LiveKit's agent handoff and Pipecat Flows). With
  ``history="summary"`` the tool takes a ``summary`` argument: the LLM that hands over
  writes the summary the next agent starts from, so no extra LLM call (nor task) is
  needed.
- **The switch happens between replies, never inside one.** The tool only records the
  handoff; the reply that called it ends as usual (the old agent says its last sentence
  in its own voice, and its tool call joins the history). On the session's next
  ``StateChanged`` to ``LISTENING`` or ``USER_SPEAKING`` (a reply just ended, was
  interrupted or dropped), the flow rewrites the history by the handoff's policy (with
  the new agent's system prompt) and calls :meth:`AgentSession.update_agent` with its
  tools, LLM and voice. The flow is a synchronous event listener: it owns no task, so it has
  nothing to close; the new agent's ``greeting`` is a ``session.say()``, spoken only
  when nobody is speaking.
- **History policies** (``Handoff.history``): ``"all"`` keeps every message; ``"none"``
  keeps only the new system prompt; ``"summary"`` keeps the summary the LLM wrote (as
  a system message); an int ``n`` keeps the last ``n`` user turns and what followed
  them. The system prompt is always the new agent's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from antiphon.agent.events import AgentEvent, AgentState, StateChanged
from antiphon.errors import ConfigError
from antiphon.services.llm import LLM, ChatContext, ChatMessage
from antiphon.services.tools import FunctionTool, function_tool
from antiphon.services.tts import TTS

if TYPE_CHECKING:
    from antiphon.agent.session import AgentSession

__all__ = ["Agent", "AgentFlow", "Handoff", "HandoffDone", "HistoryPolicy", "trim_history"]

log = logging.getLogger(__name__)

HistoryPolicy = Literal["all", "none", "summary"] | int
"""What the next agent keeps of the conversation (see the module docstring)."""

SUMMARY_PREFIX = "Summary of the conversation so far: "


@dataclass(frozen=True, slots=True)
class Handoff:
    """A way out of an agent: to the agent named ``target``, keeping ``history``.

    ``description``: what the LLM reads about when to call the transfer tool (default:
    "Transfer the conversation to <target>."). ``tool_name``: default
    ``transfer_to_<target>``.
    """

    target: str
    history: HistoryPolicy = "all"
    description: str = ""
    tool_name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            raise ConfigError("Handoff.target must be the name of an agent")
        h = self.history
        if isinstance(h, bool) or not (
            h in ("all", "none", "summary") or (isinstance(h, int) and h >= 1)
        ):
            raise ConfigError(
                f"Handoff.history must be 'all', 'none', 'summary' or an int >= 1 (the last "
                f"n user turns), got {h!r}"
            )

    @property
    def name(self) -> str:
        return self.tool_name or f"transfer_to_{self.target}"


@dataclass(frozen=True, slots=True)
class Agent:
    """One persona of a conversation: its instructions, tools and, optionally, its own
    LLM and voice (``None``: the session's own).

    ``greeting``: said when the conversation passes to it (``""``: nothing; the user
    speaks next). ``handoffs``: the agents it may pass the conversation to.
    """

    name: str
    instructions: str
    tools: Sequence[FunctionTool] = ()
    llm: LLM | None = None
    tts: TTS | None = None
    greeting: str = ""
    handoffs: Sequence[Handoff] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("Agent.name must be a non-empty str")
        if not isinstance(self.instructions, str):
            raise ConfigError(f"Agent {self.name}: instructions must be a str")
        if not all(isinstance(t, FunctionTool) for t in self.tools):
            raise ConfigError(f"Agent {self.name}: tools must be decorated with @function_tool")
        if self.llm is not None and not isinstance(self.llm, LLM):
            raise ConfigError(f"Agent {self.name}: llm= must be an LLM plugin")
        if self.tts is not None and not isinstance(self.tts, TTS):
            raise ConfigError(f"Agent {self.name}: tts= must be a TTS plugin")
        if not all(isinstance(h, Handoff) for h in self.handoffs):
            raise ConfigError(f"Agent {self.name}: handoffs must be Handoff objects")


@dataclass(frozen=True, slots=True)
class HandoffDone:
    """A handoff that took effect: from ``source`` to ``target`` (agent names)."""

    source: str
    target: str
    history: HistoryPolicy
    summary: str = ""


def trim_history(
    history: ChatContext, instructions: str, policy: HistoryPolicy, summary: str = ""
) -> ChatContext:
    """The history the next agent starts from, by ``policy``, with its system prompt.

    The old system prompt (a leading system message) is dropped; other system messages
    (an earlier handoff's summary) count as history.
    """
    messages = history.messages
    rest = messages[1:] if messages and messages[0].role == "system" else list(messages)
    if policy == "none":
        rest = []
    elif policy == "summary":
        rest = [ChatMessage("system", SUMMARY_PREFIX + summary)] if summary.strip() else []
    elif isinstance(policy, int):
        users = [i for i, m in enumerate(rest) if m.role == "user"]
        if len(users) >= policy:
            rest = rest[users[-policy] :]
    head = [ChatMessage("system", instructions)] if instructions else []
    return ChatContext(head + rest)


@dataclass(slots=True)
class _Pending:
    handoff: Handoff
    source: str
    summary: str


class AgentFlow:
    """The agents of one conversation and the handoffs between them.

    ``agents``: every agent, by unique name; the first starts (or ``start``).
    ``on_handoff``: called with a :class:`HandoffDone` after each switch.
    :meth:`attach` binds the flow to one session.

    Raises:
        ConfigError: no agent, a duplicate name, or a handoff to an unknown agent.
    """

    def __init__(
        self,
        agents: Sequence[Agent],
        *,
        start: str | None = None,
        on_handoff: Callable[[HandoffDone], None] | None = None,
    ) -> None:
        if not agents or not all(isinstance(a, Agent) for a in agents):
            raise ConfigError("AgentFlow needs at least one Agent")
        self.agents = {a.name: a for a in agents}
        if len(self.agents) != len(agents):
            raise ConfigError("AgentFlow: agent names must be unique")
        for a in agents:
            for h in a.handoffs:
                if h.target not in self.agents:
                    raise ConfigError(
                        f"agent {a.name}: handoff to unknown agent {h.target!r} "
                        f"(agents: {', '.join(self.agents)})"
                    )
        first = start if start is not None else agents[0].name
        if first not in self.agents:
            raise ConfigError(f"AgentFlow start={start!r} is not one of the agents")
        self._current = self.agents[first]
        self._on_handoff = on_handoff
        self._session: AgentSession | None = None
        self._remove: Callable[[], None] | None = None
        self._base: tuple[LLM, TTS] | None = None
        self._pending: _Pending | None = None
        self._tools = {a.name: self._tools_of(a) for a in agents}
        self.handoffs: list[HandoffDone] = []
        """Every handoff that took effect, in order."""

    @property
    def current(self) -> Agent:
        """The agent answering now."""
        return self._current

    def tools_for(self, agent: Agent | str) -> tuple[FunctionTool, ...]:
        """The tools the LLM gets while ``agent`` answers (its own and its transfers)."""
        return self._tools[agent if isinstance(agent, str) else agent.name]

    def attach(self, session: AgentSession) -> None:
        """Bind to ``session`` (before it starts): the starting agent takes over now.

        Raises:
            ConfigError: the flow is already attached.
        """
        if self._session is not None:
            raise ConfigError("this AgentFlow is already attached to a session")
        self._session = session
        self._base = (session.llm, session.tts)  # for agents without their own
        self._enter(self._current, session, "all", "")
        self._remove = session.on_event(self._on_event)

    def detach(self) -> None:
        """Stop listening to the session (the current agent stays in place)."""
        if self._remove is not None:
            self._remove()
        self._remove = None
        self._session = None
        self._pending = None

    # ------------------------------------------------------------------ internals

    def _tools_of(self, agent: Agent) -> tuple[FunctionTool, ...]:
        tools = list(agent.tools)
        names = {t.name for t in tools}
        for h in agent.handoffs:
            if h.name in names:
                raise ConfigError(f"agent {agent.name}: two tools are named {h.name!r}")
            names.add(h.name)
            tools.append(self._transfer_tool(agent, h))
        return tuple(tools)

    def _transfer_tool(self, agent: Agent, handoff: Handoff) -> FunctionTool:
        description = handoff.description or f"Transfer the conversation to {handoff.target}."

        def request(summary: str) -> str:
            if self._pending is not None:
                return f"A transfer to {self._pending.handoff.target} is already under way."
            self._pending = _Pending(handoff, agent.name, summary)
            return (
                f"The conversation passes to {handoff.target} after this reply. "
                "Tell the user in one short sentence; do not answer for them."
            )

        if handoff.history == "summary":

            async def transfer_with_summary(summary: str) -> str:
                """Hand the conversation over.

                Args:
                    summary: What the next agent must know: the user's request and the
                        facts gathered so far, in a few sentences.
                """
                return request(summary)

            fn: Callable[..., object] = transfer_with_summary
        else:

            async def transfer() -> str:
                return request("")

            fn = transfer
        return function_tool(name=handoff.name, description=description)(fn)

    def _enter(
        self, agent: Agent, session: AgentSession, policy: HistoryPolicy, summary: str
    ) -> None:
        assert self._base is not None
        session.history.messages[:] = trim_history(
            session.history, agent.instructions, policy, summary
        ).messages
        session.update_agent(
            tools=self._tools[agent.name],
            llm=agent.llm or self._base[0],
            tts=agent.tts or self._base[1],
        )
        self._current = agent

    def _on_event(self, event: AgentEvent) -> None:
        pending, session = self._pending, self._session
        if pending is None or session is None or not isinstance(event, StateChanged):
            return
        if event.new not in (AgentState.LISTENING, AgentState.USER_SPEAKING):
            return
        self._pending = None
        target = self.agents[pending.handoff.target]
        policy = pending.handoff.history
        self._enter(target, session, policy, pending.summary)
        done = HandoffDone(pending.source, target.name, policy, pending.summary)
        self.handoffs.append(done)
        log.info("agent handoff: %s -> %s (history: %s)", done.source, done.target, policy)
        if target.greeting and event.new is AgentState.LISTENING:
            session.say(target.greeting)
        if self._on_handoff is not None:
            self._on_handoff(done)
