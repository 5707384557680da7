"""OpenAILLM: the LLM conformance suite on the fake server, plus plugin checks."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from antiphon.errors import ConfigError
from antiphon.plugins.openai import OpenAILLM
from antiphon.protocols.openai_chat import ChatRequestError
from antiphon.services.llm import ChatContext, LLMDeadlines, ToolCall
from antiphon.services.tools import function_tool
from antiphon.testing.conformance.llm import FAST, LLMFaultConformance, LLMHarness, LLMRun
from antiphon.testing.faults import FaultPlan
from antiphon.testing.openai_chat import DEFAULT_API_KEY, FakeOpenAIChat, Reply
from antiphon.testing.server import serving

#: asyncio only, fakes in the test's loop: virtual time (docs/testing.md).
pytestmark = pytest.mark.virtual_time


class OpenAIHarness(LLMHarness):
    @contextlib.asynccontextmanager
    async def run(
        self,
        replies: Reply | Sequence[Reply],
        plan: FaultPlan,
        deadlines: LLMDeadlines,
        **options: Any,
    ) -> AsyncIterator[LLMRun]:
        fake = FakeOpenAIChat(
            plan,
            replies=replies,
            retry_after=options.pop("retry_after", "1"),
            reject_requests=options.pop("reject_requests", None),
        )
        async with serving(fake):
            base_url = options.pop("base_url", fake.base_url)
            llm = OpenAILLM(
                "gpt-4o-mini",
                api_key=options.pop("api_key", DEFAULT_API_KEY),
                base_url=base_url,
                deadlines=deadlines,
                **options,
            )
            yield LLMRun(
                llm,
                ports=[fake.port],
                requests=lambda: len(fake.stats.requests),
                cancels=lambda: fake.stats.cancels,
            )


class TestOpenAILLMConformance(LLMFaultConformance):
    harness = OpenAIHarness()


# -- configuration


def test_missing_key_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAILLM("gpt-4o-mini")
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="AZURE_OPENAI_API_KEY"):
        OpenAILLM(azure_endpoint="https://r.openai.azure.com", azure_deployment="d")


async def test_key_from_the_environment_and_no_key_for_local_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    async with OpenAILLM("gpt-4o-mini") as llm:
        assert llm.url == "https://api.openai.com/v1/chat/completions"
        assert llm._headers["Authorization"] == "Bearer from-env"
    async with OpenAILLM.compatible("ollama", "llama3.2") as local:
        assert local.url == "http://localhost:11434/v1/chat/completions"
        assert "Authorization" not in local._headers
    monkeypatch.setenv("GROQ_API_KEY", "gsk")
    async with OpenAILLM.compatible("groq", "llama-3.1-8b-instant") as groq:
        assert groq.url == "https://api.groq.com/openai/v1/chat/completions"
        assert groq._headers["Authorization"] == "Bearer gsk"
    with pytest.raises(ConfigError, match="unknown server"):
        OpenAILLM.compatible("nope", "m")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, r"OpenAILLM needs model=\.\.\., e\.g\. 'gpt-4o-mini', 'llama3\.2'"),
        ({"model": "  "}, "OpenAILLM needs model="),
        ({"model": "m", "base_url": "api.openai.com"}, "http"),
        ({"model": "m", "temperature": 3.0}, "temperature"),
        ({"model": "m", "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "max_retries": -1}, "max_retries"),
        ({"model": "m", "extra_body": {"stream": False}}, "stream"),
        ({"azure_endpoint": "https://r.openai.azure.com"}, "azure_deployment"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        OpenAILLM(api_key="k", **kwargs)


# -- on the wire


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: Name of the city.
    """
    return "sunny"


async def test_request_on_the_wire_with_history_and_tools() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    ctx = (
        ChatContext()
        .system("Be brief.")
        .user("Weather in Oslo?")
        .assistant("", [call])
        .tool_result(call, "sunny")
    )
    async with (
        serving(FakeOpenAIChat(replies=Reply("It is sunny."))) as fake,
        OpenAILLM(
            "gpt-4o-mini",
            api_key=DEFAULT_API_KEY,
            base_url=fake.base_url,
            temperature=0.2,
            tool_choice="auto",
            deadlines=FAST,
        ) as llm,
    ):
        r = await llm.chat(ctx, tools=[get_weather]).result()
        assert r.text == "It is sunny." and r.usage.prompt_tokens > 0
    (req,) = fake.stats.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert req.headers["accept"] == "text/event-stream"
    body = req.json
    assert body["model"] == "gpt-4o-mini" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.2 and body["tool_choice"] == "auto"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    assert body["tools"] == [get_weather.schema()]


async def test_azure_deployment_path_key_header_and_api_version() -> None:
    async with (
        serving(FakeOpenAIChat(replies=Reply("Hi from Azure."))) as fake,
        OpenAILLM(
            api_key=DEFAULT_API_KEY,
            azure_endpoint=fake.url,
            azure_deployment="my-gpt",
            api_version="2024-10-21",
            deadlines=FAST,
        ) as llm,
    ):
        assert llm.model == "my-gpt"
        assert await llm.chat(ChatContext().user("hi")).collect_text() == "Hi from Azure."
    (req,) = fake.stats.requests
    assert req.path == "/openai/deployments/my-gpt/chat/completions"
    assert req.query == {"api-version": ["2024-10-21"]}
    assert req.headers["api-key"] == DEFAULT_API_KEY and "authorization" not in req.headers


async def test_a_request_the_server_refuses_is_a_config_error_with_its_message() -> None:
    call = ToolCall("call_1", "get_weather", "{}")
    ctx = ChatContext().user("hi").assistant("", [call])  # the tool result is missing
    async with (
        serving(FakeOpenAIChat()) as fake,
        OpenAILLM(
            "gpt-4o-mini", api_key=DEFAULT_API_KEY, base_url=fake.base_url, deadlines=FAST
        ) as llm,
    ):
        s = llm.chat(ctx)
        with pytest.raises(ChatRequestError, match="tool_call_id") as info:
            await s.collect_text()
        assert isinstance(info.value, ConfigError) and info.value.status == 400
        assert info.value.param == "messages" and len(fake.stats.requests) == 1


async def test_tool_choice_naming_an_unknown_tool_is_refused_at_chat() -> None:
    async with OpenAILLM("m", api_key="k", tool_choice="nope", deadlines=FAST) as llm:
        with pytest.raises(ConfigError, match="tool_choice"):
            llm.chat(ChatContext().user("hi"), tools=[get_weather])


async def test_body_helper_matches_what_is_sent() -> None:
    async with OpenAILLM("m", api_key="k", max_completion_tokens=50, seed=1) as llm:
        body = llm.body(ChatContext().user("hi"))
    assert json.loads(json.dumps(body)) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 50,
        "seed": 1,
    }
