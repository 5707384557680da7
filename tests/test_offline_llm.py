"""The offline responder: the LLM conformance cases that apply, and what it answers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from antiphon.errors import ConfigError
from antiphon.plugins.offline import FaqEntry, OfflineLLM, get_time, load_faq
from antiphon.plugins.offline.llm import DEFAULT_FALLBACK
from antiphon.services.llm import ChatContext, LLMDeadlines, TextDelta, ToolCall
from antiphon.services.tools import function_tool
from antiphon.testing.conformance.llm import PROMPT, LLMConformance, LLMHarness, LLMRun
from antiphon.testing.faults import FaultPlan
from antiphon.testing.openai_chat import Reply


class OfflineHarness(LLMHarness):
    """The FAQ answers the suite's prompt with the reply's text; an argument-free tool
    call comes from the tool the suite offers (the FAQ is empty then)."""

    @contextlib.asynccontextmanager
    async def run(
        self,
        replies: Reply | Sequence[Reply],
        plan: FaultPlan,
        deadlines: LLMDeadlines,
        **options: Any,
    ) -> AsyncIterator[LLMRun]:
        reply = replies if isinstance(replies, Reply) else replies[0]
        if plan.describe() not in ("healthy", f"chunk_interval={plan.chunk_interval!r}"):
            raise AssertionError(f"the offline responder has no server for {plan.describe()}")
        faq = [] if reply.tool_calls else [FaqEntry(PROMPT, reply.text)]
        yield LLMRun(
            OfflineLLM(
                faq=faq, threshold=0.05, token_interval=plan.chunk_interval, deadlines=deadlines
            )
        )


class TestOfflineLLMConformance(LLMConformance):
    harness = OfflineHarness()


async def test_bundled_faq_answers_word_by_word() -> None:
    async with OfflineLLM() as llm:
        s = llm.chat(ChatContext().user("What is antiphon?"))
        events = [e async for e in s]
    assert all(isinstance(e, TextDelta) for e in events)
    words = [e.text for e in events if isinstance(e, TextDelta)]
    assert all(len(w.split()) == 1 for w in words) and len(words) > 10
    answer = next(e.answer for e in load_faq() if e.question.startswith("What is antiphon"))
    assert "".join(words) == answer


@pytest.mark.parametrize(
    "question",
    [
        "What time is it?",
        "what's the time now",
        "Do you know the time?",
        "can you tell me the hour",
    ],
)
async def test_time_questions_call_the_clock_tool(question: str) -> None:
    async with OfflineLLM() as llm:
        r = await llm.chat(ChatContext().user(question), tools=[get_time]).result()
    assert [c.name for c in r.tool_calls] == ["get_time"] and r.text == ""


async def test_without_the_tool_a_time_question_is_not_answered_with_a_time() -> None:
    async with OfflineLLM() as llm:
        r = await llm.chat(ChatContext().user("What time is it?")).result()
    assert not r.tool_calls and "It is" not in r.text


@pytest.mark.parametrize(
    ("question", "starts"),
    [
        ("hi", "Hello!"),
        ("hello there", "Hello!"),
        ("how are you doing", "I am fine"),
        ("bye now", "Goodbye!"),
        ("who made you", "The antiphon maintainers"),
        ("what is the weather", "I cannot check the weather"),
    ],
)
async def test_each_phrasing_of_an_entry_is_matched_on_its_own(question: str, starts: str) -> None:
    async with OfflineLLM() as llm:
        text = await llm.chat(ChatContext().user(question), tools=[get_time]).collect_text()
    assert text.startswith(starts)


@pytest.mark.parametrize(
    "question", ["How do I bake sourdough bread?", "", "Qu'est-ce que la photosynthèse ?"]
)
async def test_unknown_questions_get_the_honest_fallback(question: str) -> None:
    async with OfflineLLM() as llm:
        text = await llm.chat(ChatContext().user(question), tools=[get_time]).collect_text()
    assert text == DEFAULT_FALLBACK


async def test_says_every_result_of_parallel_calls_and_failures_honestly() -> None:
    a, b = ToolCall("c1", "get_time", "{}"), ToolCall("c2", "other", "{}")
    ctx = (
        ChatContext()
        .user("What time is it?")
        .assistant("", [a, b])
        .tool_result(a, "It is noon.")
        .tool_result(b, "error: tool other did not return within 1s")
    )
    async with OfflineLLM() as llm:
        text = await llm.chat(ctx).collect_text()
    assert text == "It is noon. Sorry, that did not work: tool other did not return within 1s"


async def test_tool_with_required_arguments_is_never_called() -> None:
    @function_tool
    def set_alarm(hour: int) -> str:
        """Set an alarm clock for an hour of the time."""
        return "ok"

    async with OfflineLLM() as llm:
        r = await llm.chat(ChatContext().user("Set the alarm clock"), tools=[set_alarm]).result()
    assert r.tool_calls == ()


def test_bad_faq_items_are_refused() -> None:
    with pytest.raises(ConfigError, match="FaqEntry"):
        OfflineLLM(faq=[{"q": "x", "a": "y"}])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="token_interval"):
        OfflineLLM(token_interval=-1)
    with pytest.raises(ConfigError, match="fallback"):
        OfflineLLM(fallback=" ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 8 levels"),
        ('{"q": "x", "a": "y"}', "got a JSON dict"),
        ('[{"q": "x", "a": "y"}, {"q": "z"}]', "entry 1: 'a' is missing"),
        ('[{"q": "x", "a": {"text": "y"}}]', "entry 0: 'a' must be a string"),
        ('[["x", "y"]]', "entry 0: a FAQ must be"),
        ('[{"q": "x", "a": "y"', "not valid JSON"),
    ],
)
def test_a_bad_faq_file_is_one_line_naming_the_entry_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "faq.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_faq(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert len(str(info.value)) < 200
