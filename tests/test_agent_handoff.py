"""Agent handoff (agent/handoff.py) on the doubles and the virtual clock.

The scripted LLM calls the transfer tool; the tests check who answers next (instructions,
tools, LLM, voice), what history the next agent gets, and that the switch waits for the
reply in progress to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from antiphon.agent import (
    AgentOptions,
    AgentReplied,
    AgentSession,
    AgentState,
    Interrupted,
    ToolCalled,
    TurnCompleted,
    TurnOptions,
)
from antiphon.agent.handoff import Agent, AgentFlow, Handoff, HandoffDone, trim_history
from antiphon.aio.clock import VirtualClock
from antiphon.errors import ConfigError
from antiphon.services.llm import ChatContext, ChatMessage
from antiphon.services.tools import function_tool
from antiphon.testing.agent import (
    Conversation,
    EnergyVAD,
    LLMReply,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    ToolCallScript,
)
from antiphon.testing.leaks import LeakCheck

pytestmark = pytest.mark.virtual_time

FRONT = "You greet callers and route them."
BILLING = "You answer questions about invoices."


@function_tool
async def lookup_invoice(number: int) -> str:
    """An invoice's status.

    Args:
        number: the invoice number
    """
    return f"invoice {number} is paid"


@dataclass
class Parts:
    front_llm: ScriptedLLM
    billing_llm: ScriptedLLM
    front_tts: ToneTTS
    billing_tts: ToneTTS


@asynccontextmanager
async def flow_rig(
    script: Sequence[str],
    front_replies: Sequence[LLMReply],
    billing_replies: Sequence[LLMReply],
    *,
    history: object = "all",
    greeting: str = "Billing here.",
) -> AsyncIterator[tuple[AgentSession, AgentFlow, Conversation, Parts]]:
    clock = VirtualClock()
    leaks = LeakCheck()
    stt = ScriptedSTT(script)
    front_llm = ScriptedLLM(front_replies, clock=clock)
    billing_llm = ScriptedLLM(billing_replies, clock=clock)
    front_tts, billing_tts = ToneTTS(clock=clock), ToneTTS(clock=clock)
    session = AgentSession(
        vad=EnergyVAD(),
        stt=stt,
        llm=front_llm,
        tts=front_tts,
        instructions="",
        clock=clock,
        # no speculative reply: each LLM script item answers exactly one committed turn
        options=AgentOptions(turn=TurnOptions(preemptive=False)),
    )
    front = Agent("front_desk", FRONT, handoffs=[Handoff("billing", history=history)])  # type: ignore[arg-type]
    billing = Agent(
        "billing",
        BILLING,
        tools=[lookup_invoice],
        llm=billing_llm,
        tts=billing_tts,
        greeting=greeting,
        handoffs=[Handoff("front_desk", history=1)],
    )
    flow = AgentFlow([front, billing])
    flow.attach(session)
    parts = Parts(front_llm, billing_llm, front_tts, billing_tts)
    try:
        async with asyncio.timeout(40), Conversation(session, clock) as c:
            yield session, flow, c, parts
    finally:
        await session.aclose()
        for service in (stt, front_llm, billing_llm, front_tts, billing_tts):
            await service.aclose()
    await leaks.assert_clean(settle=1.0)


async def turn(c: Conversation) -> None:
    """The user speaks; wait until the agent's reply (and anything it queued) is over."""
    done = len(c.of(TurnCompleted))
    await c.say(0.8)
    await c.until(lambda: len(c.of(TurnCompleted)) > done, limit=20)
    await c.until(lambda: c.session.state is AgentState.LISTENING, limit=20)


async def test_the_llm_hands_over_with_a_summary_and_the_next_agent_answers() -> None:
    front_replies: list[LLMReply] = [
        [ToolCallScript("transfer_to_billing", {"summary": "Caller asks about invoice 42."})],
        "Let me pass you to billing.",
    ]
    billing_replies: list[LLMReply] = [
        [ToolCallScript("lookup_invoice", {"number": 42})],
        lambda ctx: f"Good news: {ctx.messages[-1].content}.",
    ]
    seen: list[HandoffDone] = []
    async with flow_rig(
        ["i have a question about my bill", "is invoice 42 paid"],
        front_replies,
        billing_replies,
        history="summary",
    ) as (session, flow, c, parts):
        flow._on_handoff = seen.append
        assert flow.current.name == "front_desk"
        assert [t.name for t in session.tools] == ["transfer_to_billing"]
        assert session.history.messages == [ChatMessage("system", FRONT)]
        # the transfer tool takes the summary the handing LLM writes
        [tool] = session.tools
        assert tool.parameters["required"] == ["summary"]

        await turn(c)
        await c.until(lambda: bool(parts.billing_tts.spoken), limit=10)
        await c.until(lambda: c.session.state is AgentState.LISTENING, limit=20)
        # the old agent said its last line in its own voice, the greeting is the new one's
        assert parts.front_tts.spoken == ["Let me pass you to billing."]
        assert parts.billing_tts.spoken == ["Billing here."]
        assert flow.current.name == "billing"
        assert (
            flow.handoffs
            == seen
            == [HandoffDone("front_desk", "billing", "summary", "Caller asks about invoice 42.")]
        )
        assert [t.name for t in session.tools] == ["lookup_invoice", "transfer_to_front_desk"]
        assert session.history.messages == [
            ChatMessage("system", BILLING),
            ChatMessage(
                "system", "Summary of the conversation so far: Caller asks about invoice 42."
            ),
            ChatMessage("assistant", "Billing here."),
        ]

        await turn(c)
        billing_llm = parts.billing_llm
        # the new agent's LLM answered, from the trimmed history, and ran its own tool
        first = billing_llm.requests[0]
        assert [m.content for m in first.messages] == [
            BILLING,
            "Summary of the conversation so far: Caller asks about invoice 42.",
            "Billing here.",
            "is invoice 42 paid",
        ]
        assert len(parts.front_llm.requests) == 2
        assert [e.name for e in c.of(ToolCalled)] == ["transfer_to_billing", "lookup_invoice"]
        assert c.of(AgentReplied)[-1].text == "Good news: invoice 42 is paid."
        assert parts.billing_tts.spoken[-1] == "Good news: invoice 42 is paid."


async def test_history_none_keeps_only_the_new_prompt_and_no_greeting_when_empty() -> None:
    front_replies: list[LLMReply] = [[ToolCallScript("transfer_to_billing")], "Passing you on."]
    async with flow_rig(
        ["bill please", "what now"],
        front_replies,
        ["Billing speaking."],
        history="none",
        greeting="",
    ) as (session, flow, c, parts):
        await turn(c)
        assert flow.current.name == "billing"
        assert session.history.messages == [ChatMessage("system", BILLING)]
        assert parts.billing_tts.spoken == []
        await turn(c)
        [request] = parts.billing_llm.requests
        assert [m.content for m in request.messages] == [BILLING, "what now"]
        assert parts.billing_tts.spoken == ["Billing speaking."]


async def test_history_all_keeps_the_tool_call_that_handed_over() -> None:
    front_replies: list[LLMReply] = [[ToolCallScript("transfer_to_billing")], "Passing you on."]
    async with flow_rig(["bill please"], front_replies, [], greeting="") as (
        session,
        flow,
        c,
        _,
    ):
        await turn(c)
        assert flow.current.name == "billing"
        roles = [m.role for m in session.history.messages]
        assert roles == ["system", "user", "assistant", "tool", "assistant"]
        assert session.history.messages[0].content == BILLING
        assert session.history.messages[2].tool_calls[0].name == "transfer_to_billing"


def contents(ctx: ChatContext) -> list[str]:
    return [m.content for m in ctx.messages]


def test_trim_history_by_policy() -> None:
    history = ChatContext(
        [
            ChatMessage("system", "old"),
            ChatMessage("user", "u1"),
            ChatMessage("assistant", "a1"),
            ChatMessage("user", "u2"),
            ChatMessage("assistant", "a2"),
            ChatMessage("user", "u3"),
            ChatMessage("assistant", "a3"),
        ]
    )
    assert contents(trim_history(history, "new", "all")) == [
        "new",
        "u1",
        "a1",
        "u2",
        "a2",
        "u3",
        "a3",
    ]
    assert contents(trim_history(history, "new", "none")) == ["new"]
    assert contents(trim_history(history, "new", 2)) == ["new", "u2", "a2", "u3", "a3"]
    assert contents(trim_history(history, "new", 9)) == contents(
        trim_history(history, "new", "all")
    )
    assert contents(trim_history(history, "new", "summary", "s")) == [
        "new",
        "Summary of the conversation so far: s",
    ]
    assert contents(trim_history(history, "", "summary", " ")) == []
    assert contents(history)[0] == "old"  # the input is not changed


def test_a_flow_refuses_what_cannot_work() -> None:
    with pytest.raises(ConfigError, match="unknown agent"):
        AgentFlow([Agent("a", "x", handoffs=[Handoff("b")])])
    with pytest.raises(ConfigError, match="unique"):
        AgentFlow([Agent("a", "x"), Agent("a", "y")])
    with pytest.raises(ConfigError, match="history"):
        Handoff("a", history=0)
    with pytest.raises(ConfigError, match="history"):
        Handoff("a", history="some")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="start"):
        AgentFlow([Agent("a", "x")], start="b")
    with pytest.raises(ConfigError, match="two tools"):
        AgentFlow(
            [
                Agent(
                    "a",
                    "x",
                    tools=[lookup_invoice],
                    handoffs=[Handoff("b", tool_name="lookup_invoice")],
                ),
                Agent("b", "y"),
            ]
        )


async def test_a_barge_in_on_the_last_words_still_hands_over_without_a_greeting() -> None:
    long = "Let me pass you to billing. They know all about invoices and payments and refunds."
    front_replies: list[LLMReply] = [[ToolCallScript("transfer_to_billing")], long]
    async with flow_rig(
        ["bill please", "hello", "and now"], front_replies, ["Billing speaking."], history=1
    ) as (session, flow, c, parts):
        await c.say(0.8)
        await c.until(lambda: session.state is AgentState.SPEAKING, limit=5)
        await c.wait(0.3)
        await c.say(0.8)  # the user talks over the old agent's last words
        await c.until(lambda: bool(c.of(Interrupted)), limit=5)
        assert flow.current.name == "billing"
        # nobody greets over the user: the user's own turn comes next
        await c.until(lambda: session.state is AgentState.LISTENING, limit=20)
        assert parts.billing_tts.spoken == ["Billing speaking."]
        [request] = parts.billing_llm.requests
        # history=1: the last user turn before the handoff and what followed, then "hello"
        assert [m.role for m in request.messages] == [
            "system",
            "user",
            "assistant",
            "tool",
            "assistant",
            "user",
        ]
        assert request.messages[0].content == BILLING
        assert request.messages[-1].content == "hello"


def test_an_earlier_summary_is_history_and_the_old_prompt_is_not() -> None:
    history = ChatContext(
        [
            ChatMessage("system", "old prompt"),
            ChatMessage("system", "Summary of the conversation so far: s"),
            ChatMessage("user", "u1"),
        ]
    )
    assert contents(trim_history(history, "new", "all")) == [
        "new",
        "Summary of the conversation so far: s",
        "u1",
    ]
    assert contents(trim_history(ChatContext([ChatMessage("user", "u")]), "", "all")) == ["u"]


async def test_update_agent_replaces_or_removes_the_prompt_and_checks_its_input() -> None:
    clock = VirtualClock()
    llm, tts = ScriptedLLM(clock=clock), ToneTTS(clock=clock)
    session = AgentSession(
        vad=EnergyVAD(), stt=ScriptedSTT([]), llm=llm, tts=tts, instructions="A", clock=clock
    )
    session.history.user("hi")
    session.update_agent(instructions="B", tools=[lookup_invoice])
    assert contents(session.history) == ["B", "hi"]
    assert session.tools == (lookup_invoice,)
    session.update_agent(instructions="")
    assert contents(session.history) == ["hi"]
    session.update_agent(instructions="C")
    assert contents(session.history) == ["C", "hi"]
    other = ToneTTS(clock=clock)
    session.update_agent(tts=other)
    assert session.tts is other and session.llm is llm
    with pytest.raises(ConfigError):
        session.update_agent(tools=[print])  # type: ignore[list-item]
    with pytest.raises(ConfigError):
        session.update_agent(tts=llm)  # type: ignore[arg-type]
    await session.aclose()
    for service in (llm, tts, other):
        await service.aclose()
