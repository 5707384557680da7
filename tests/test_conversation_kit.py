"""The conversation test kit (``antiphon.testing.conversation``) on its own doubles.

Each test drives an agent through the kit as a user would: a tool-calling turn, a
multi-turn history, the turn's timing against the configured VAD silence window (virtual
time: exact), a user's own LLM client against its fake server, the kit failing a test that
leaves a task behind, :func:`run_virtual` for suites without the loop hook, and the example
in docs/testing.md, run as written.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from antiphon.agent import ToolCalled
from antiphon.agent.options import AgentOptions
from antiphon.errors import ProviderError
from antiphon.plugins.openai import OpenAILLM
from antiphon.services.llm import ChatContext
from antiphon.services.tools import function_tool
from antiphon.testing.agent import LLMReply, ScriptedLLM, ToolCallScript
from antiphon.testing.conversation import ToolCall, conversation, run_virtual
from antiphon.testing.openai_chat import DEFAULT_API_KEY as LLM_KEY
from antiphon.testing.openai_chat import FakeOpenAIChat, Reply, ScriptedCall
from antiphon.testing.server import serving
from antiphon.testing.vloop import VirtualTimeLoop

pytestmark = pytest.mark.virtual_time

ROOT = Path(__file__).resolve().parents[1]


@function_tool
def get_weather(city: str, unit: str = "celsius") -> str:
    """The weather in a city."""
    return f"sunny, 21 degrees {unit} in {city}"


async def test_a_tool_calling_turn() -> None:
    llm: list[LLMReply] = [[ToolCallScript("get_weather", {"city": "Lyon"})], "It is sunny."]
    async with conversation(llm=llm, tools=[get_weather]) as c:
        turn = await c.user_says("how is the weather in Lyon")
        assert turn.tool_calls == (
            ToolCall("get_weather", {"city": "Lyon"}, "sunny, 21 degrees celsius in Lyon", None),
        )
        assert turn.replies == ("It is sunny.",)
        assert turn.metrics is not None and turn.metrics.tool_calls == ["get_weather"]
        assert len(c.of(ToolCalled)) == 1
        # the tool's result went back to the LLM before the answer
        assert [m.role for m in c.history] == ["user", "assistant", "tool", "assistant"]
        assert c.history[2].content == "sunny, 21 degrees celsius in Lyon"


async def test_history_over_several_turns_spoken_and_typed() -> None:
    seen: list[list[str]] = []

    def recall(context: ChatContext) -> str:
        said = [m.content or "" for m in context.messages if m.role == "user"]
        seen.append(said)
        return f"You said {len(said)} things."

    llm = ScriptedLLM([recall, recall, recall])
    async with conversation(llm=llm, instructions="Be brief.") as c:
        first = await c.user_says("hello there")
        second = await c.user_says("what is new", typed=True)
        third = await c.user_says("goodbye")
    await llm.aclose()  # the caller's LLM: the kit leaves it open
    assert [t.reply for t in (first, second, third)] == [
        "You said 1 things.",
        "You said 2 things.",
        "You said 3 things.",
    ]
    assert seen[-1] == ["hello there", "what is new", "goodbye"]
    assert [(m.role, m.content) for m in c.history] == [
        ("system", "Be brief."),
        ("user", "hello there"),
        ("assistant", "You said 1 things."),
        ("user", "what is new"),
        ("assistant", "You said 2 things."),
        ("user", "goodbye"),
        ("assistant", "You said 3 things."),
    ]
    assert c.turns == [first, second, third]


@pytest.mark.parametrize("vad_silence", [0.3, 0.7])
async def test_the_reply_starts_one_vad_silence_window_after_the_speech(
    vad_silence: float,
) -> None:
    async with conversation(llm=["Sure."], vad_silence=vad_silence) as c:
        turn = await c.user_says("can you help me")
    # scripted LLM and tone TTS take no time: the window is the whole delay, exactly
    assert turn.latency == pytest.approx(vad_silence)
    assert turn.metrics is not None
    assert turn.metrics.voice_to_voice == pytest.approx(vad_silence)
    assert turn.reply == "Sure."


async def test_a_slow_llm_adds_its_delay_to_the_latency() -> None:
    llm = ScriptedLLM(["Fine."], token_delay=0.25)
    async with conversation(llm=llm, vad_silence=0.4) as c:
        turn = await c.user_says("how are you")
    await llm.aclose()
    assert turn.latency == pytest.approx(0.4 + 0.25)


async def test_the_users_own_llm_client_against_its_fake() -> None:
    replies = [
        Reply(tool_calls=(ScriptedCall("get_weather", {"city": "Oslo", "unit": "kelvin"}),)),
        Reply("Cold in Oslo."),
    ]
    # serving(): the fake runs on this loop with its tasks marked as the fake's, so the kit's
    # leak check does not count the handler of the client's pooled keep-alive connection
    async with serving(FakeOpenAIChat(replies=replies)) as fake:
        llm = OpenAILLM("gpt-4o-mini", api_key=LLM_KEY, base_url=fake.base_url)
        try:
            async with conversation(llm=llm, tools=[get_weather]) as c:
                turn = await c.user_says("weather in Oslo")
        finally:
            await llm.aclose()
    assert [(t.name, t.arguments) for t in turn.tool_calls] == [
        ("get_weather", {"city": "Oslo", "unit": "kelvin"})
    ]
    assert turn.reply == "Cold in Oslo."
    assert len(fake.stats.requests) == 2


@pytest.mark.parametrize("error_message", ["Sorry, say that again.", ""])
async def test_a_failing_llm_is_heard_as_the_configured_error_message(error_message: str) -> None:
    error = ProviderError("down", provider="scripted-llm", stage="stream")
    options = AgentOptions(error_message=error_message)
    async with conversation(llm=[error], options=options) as c:
        turn = await c.user_says("anyone there")
    assert turn.replies == ((error_message,) if error_message else ())
    assert (turn.first_audio_at is not None) is bool(error_message)
    assert turn.tool_calls == ()


async def test_the_kit_fails_a_test_that_leaves_a_task_behind() -> None:
    stray: asyncio.Task[Any] | None = None
    with pytest.raises(AssertionError, match="left behind"):
        async with conversation(llm=["Okay."], leak_settle=0.5) as c:
            await c.user_says("start something")
            stray = asyncio.get_running_loop().create_task(asyncio.Event().wait())
    assert stray is not None
    stray.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stray


def test_run_virtual_runs_a_conversation_on_the_virtual_loop() -> None:
    async def check() -> tuple[float | None, bool]:
        async with conversation(llm=["Yes."], vad_silence=0.5) as c:
            turn = await c.user_says("are you there")
        return turn.latency, isinstance(asyncio.get_running_loop(), VirtualTimeLoop)

    latency, virtual = run_virtual(check())
    assert virtual
    assert latency == pytest.approx(0.5)


def _docs_example() -> str:
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    section = text.split("## Testing your own agent", 1)[1]
    match = re.search(r"^```python[ \t]*\n(.*?)^```", section, re.S | re.M)
    assert match is not None
    return match.group(1)


async def test_the_docs_example_runs() -> None:
    namespace: dict[str, Any] = {"__name__": "docs_testing_example"}
    exec(compile(_docs_example(), "docs/testing.md", "exec"), namespace)  # our own docs
    tests = [v for k, v in namespace.items() if k.startswith("test_") and callable(v)]
    assert len(tests) == 1
    await tests[0]()
