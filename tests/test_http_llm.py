"""The shared HTTP chat loop (services/http_llm.py): its retry backoff, on virtual time."""

from __future__ import annotations

import asyncio

import pytest

from antiphon.errors import ConfigError
from antiphon.plugins.anthropic import AnthropicLLM
from antiphon.plugins.openai import OpenAILLM
from antiphon.protocols.retry import Backoff, make_backoff
from antiphon.services.http_llm import HttpChatStream
from antiphon.services.llm import ChatContext
from antiphon.testing.anthropic_messages import FakeAnthropicMessages
from antiphon.testing.conformance.llm import FAST
from antiphon.testing.faults import FaultPlan
from antiphon.testing.openai_chat import DEFAULT_API_KEY, FakeOpenAIChat, Reply
from antiphon.testing.server import serving

pytestmark = pytest.mark.virtual_time


def test_a_number_is_the_base_of_a_jittered_backoff() -> None:
    backoff = make_backoff(0.3)
    assert backoff.base == 0.3 and backoff.jitter > 0 and backoff.cap >= 0.3
    assert make_backoff(10.0).cap == 10.0  # the base is never capped below itself
    given = Backoff(base=0.1, jitter=0)
    assert make_backoff(given) is given
    for bad in (-1.0, True, "1"):
        with pytest.raises(ConfigError, match="retry_backoff"):
            make_backoff(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("plugin", ["openai", "anthropic"])
async def test_a_retry_waits_the_configured_backoff(plugin: str) -> None:
    """No Retry-After (a dropped connection): the wait is the backoff's draw, exactly."""
    backoff = Backoff(base=0.4, jitter=0.5, rand=lambda: 0.5)  # draws 0.4 * 0.75 = 0.3
    fake = (
        FakeOpenAIChat(FaultPlan(drop_before_audio=1), replies=Reply("Again."))
        if plugin == "openai"
        else FakeAnthropicMessages(FaultPlan(drop_before_audio=1), replies=Reply("Again."))
    )
    async with serving(fake):
        llm = (
            OpenAILLM("m", api_key=DEFAULT_API_KEY, base_url=fake.base_url, retry_backoff=backoff)
            if plugin == "openai"
            else AnthropicLLM(
                "m", api_key=DEFAULT_API_KEY, base_url=fake.url, retry_backoff=backoff
            )
        )
        async with llm:
            assert llm.retry_backoff is backoff and llm.backoff is backoff
            loop = asyncio.get_running_loop()
            started = loop.time()
            stream = llm.chat(ChatContext().user("hi"))
            assert await stream.collect_text() == "Again."
            assert loop.time() - started >= 0.3
            assert isinstance(stream, HttpChatStream)
            assert stream.attempts == 2 and llm.requests == 2


async def test_a_backoff_longer_than_max_retry_wait_is_not_waited_for() -> None:
    async with (
        serving(FakeOpenAIChat(FaultPlan(drop_before_audio=1))) as fake,
        OpenAILLM(
            "m",
            api_key=DEFAULT_API_KEY,
            base_url=fake.base_url,
            deadlines=FAST,
            retry_backoff=Backoff(base=1.0, jitter=0),
            max_retry_wait=0.5,
        ) as llm,
    ):
        result = await llm.chat(ChatContext().user("hi")).result()
        assert result.error is not None and result.error.retryable
        assert len(fake.stats.requests) == 1


@pytest.mark.parametrize("plugin", ["openai", "anthropic"])
async def test_requests_in_turn_reuse_one_connection(plugin: str) -> None:
    """A stream read to its end marker hands its connection back to the pool."""
    fake = (
        FakeOpenAIChat(replies=[Reply("One."), Reply("Two."), Reply("Three.")])
        if plugin == "openai"
        else FakeAnthropicMessages(replies=[Reply("One."), Reply("Two."), Reply("Three.")])
    )
    async with serving(fake):
        llm = (
            OpenAILLM("m", api_key=DEFAULT_API_KEY, base_url=fake.base_url)
            if plugin == "openai"
            else AnthropicLLM("m", api_key=DEFAULT_API_KEY, base_url=fake.url)
        )
        async with llm:
            heard = [await llm.chat(ChatContext().user("hi")).collect_text() for _ in range(3)]
        assert heard == ["One.", "Two.", "Three."]
        assert fake.stats.connections == 1
