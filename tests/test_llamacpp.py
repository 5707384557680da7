"""The local GGUF model plugin (plugins/llamacpp) and the offline responder's ``otherwise``.

``llama-cpp-python`` is not installed here (it compiles llama.cpp for 25 minutes), so the
model is a double with the part of ``llama_cpp.Llama`` the plugin uses:
``create_chat_completion(messages=, tools=, stream=True, max_tokens=, temperature=)``
returning a generator of ``chat.completion.chunk`` dicts, the shape llama-cpp-python's
``llama_types.CreateChatCompletionStreamResponse`` declares (and its OpenAI-compatible
server sends). The thread tests run on real time with the default, generous deadlines;
the hang test asserts the configured deadline in the error (on real time: the model's
thread is real, and a virtual clock would jump past its load).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError
from antiphon.plugins.llamacpp import LlamaCppLLM
from antiphon.plugins.offline import FaqEntry, OfflineLLM, get_time
from antiphon.services.llm import ChatContext, LLMDeadlines, ToolCall
from antiphon.services.tools import function_tool

_ANSWER = ["Paris", " is", " the", " capital", "."]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "model.gguf",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


class FakeLlama:
    """``llama_cpp.Llama``'s chat API: scripted tokens, optional tool call, optional hang."""

    def __init__(
        self,
        tokens: list[str] | None = None,
        *,
        tool: tuple[str, str] | None = None,
        hang: threading.Event | None = None,
        gate: threading.Semaphore | None = None,
    ) -> None:
        self.tokens = _ANSWER if tokens is None else tokens
        self.tool = tool
        self.hang = hang
        self.gate = gate
        self.requests: list[dict[str, Any]] = []
        self.closed_generators = 0
        self.closed = False

    def create_chat_completion(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.requests.append(kwargs)
        assert kwargs["stream"] is True
        if self.hang is not None:
            self.hang.wait()  # a native call that does not return (until the test ends)
        return self._stream()

    def _stream(self) -> Iterator[dict[str, Any]]:
        try:
            yield _chunk({"role": "assistant"})
            if self.tool is not None:
                name, args = self.tool
                call = {"index": 0, "id": "call_1", "type": "function"}
                yield _chunk({"tool_calls": [{**call, "function": {"name": name}}]})
                half = len(args) // 2
                for part in (args[:half], args[half:]):
                    yield _chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                yield _chunk({}, "tool_calls")
                return
            for token in self.tokens:
                if self.gate is not None:
                    self.gate.acquire()
                yield _chunk({"content": token})
            yield _chunk({}, "stop")
        finally:
            self.closed_generators += 1

    def close(self) -> None:
        self.closed = True


_GGUF = b"GGUF" + bytes(60)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    _write(path, _GGUF)
    return path


def _llm(gguf: Path, model: FakeLlama, **kw: Any) -> tuple[LlamaCppLLM, list[str]]:
    loads: list[str] = []

    def loader(path: str) -> FakeLlama:
        loads.append(path)
        return model

    return LlamaCppLLM(gguf, loader=loader, **kw), loads


def _ctx(text: str) -> ChatContext:
    return ChatContext().system("Be brief.").user(text)


# -- configuration: one line that says what to fix


def test_not_installed_says_how(gguf: Path) -> None:
    with pytest.raises(ConfigError, match=r"antiphon\[local-llm\].*25 minutes"):
        LlamaCppLLM(gguf)


@pytest.mark.parametrize(
    ("content", "kw", "message"),
    [
        (None, {}, "does not exist"),
        (b"PK\x03\x04", {}, "not a GGUF model file"),
        (b"GGUF", {"n_ctx": 10}, "n_ctx must be an int >= 256"),
        (b"GGUF", {"max_tokens": 0}, "max_tokens must be"),
        (b"GGUF", {"threads": 0}, "threads must be"),
        (b"GGUF", {"temperature": 3.0}, "temperature must be between 0 and 2"),
        (b"GGUF", {"sha256": "abc"}, "64 hex digit"),
    ],
)
def test_bad_configuration(tmp_path: Path, content: bytes | None, kw: Any, message: str) -> None:
    path = tmp_path / "m.gguf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        LlamaCppLLM(path, loader=lambda p: None, **kw)


# -- streaming on the model's thread


@pytest.mark.realtime
async def test_streams_tokens_from_the_model_thread(gguf: Path) -> None:
    model = FakeLlama()
    llm, loads = _llm(gguf, model, max_tokens=50, temperature=0.2)
    async with llm:
        stream = llm.chat(_ctx("What is the capital of France?"))
        assert await stream.collect_text() == "Paris is the capital."
        result = await stream.result()
        assert result.finish_reason == "stop"
        assert result.usage.completion_tokens == len(_ANSWER)
        # a second request reuses the loaded model
        assert await llm.chat(_ctx("Again?")).collect_text() == "Paris is the capital."
        threads = llm.threads_alive
    assert loads == [str(gguf)]
    request = model.requests[0]
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert (request["max_tokens"], request["temperature"], "tools" in request) == (50, 0.2, False)
    assert model.closed and model.closed_generators == 2
    assert threads and not any(t.is_alive() for t in threads)


@pytest.mark.realtime
async def test_tool_call_arrives_whole_with_its_schema_sent(gguf: Path) -> None:
    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    model = FakeLlama(tool=("weather", '{"city": "Paris"}'))
    llm, _ = _llm(gguf, model)
    async with llm:
        stream = llm.chat(_ctx("Weather in Paris?"), tools=[weather])
        calls = [e async for e in stream if isinstance(e, ToolCall)]
        result = await stream.result()
    assert [(c.name, c.args()) for c in calls] == [("weather", {"city": "Paris"})]
    assert result.finish_reason == "tool_calls"
    assert model.requests[0]["tools"] == [weather.schema()]


@pytest.mark.realtime
async def test_cancel_stops_generation_at_the_next_token(gguf: Path) -> None:
    gate = threading.Semaphore(0)
    model = FakeLlama(["one", " two", " three", " four"], gate=gate)
    llm, _ = _llm(gguf, model)
    async with llm:
        stream = llm.chat(_ctx("Count."))
        gate.release()
        events = aiter(stream)
        first = await anext(events)
        assert getattr(first, "text", None) == "one"
        stream.cancel()
        assert (await stream.result()).finish_reason == "cancelled"
        for _ in range(3):
            gate.release()  # the thread goes on to its next chunk, sees the abort, stops
        for _ in range(600):
            if model.closed_generators:
                break
            await asyncio.sleep(0.05)
        assert model.closed_generators == 1
        assert len(model.requests) == 1
        assert stream.text == "one"
    assert model.closed


@pytest.mark.realtime
async def test_pinned_digest_refuses_a_changed_file(gguf: Path) -> None:
    good = hashlib.sha256(_GGUF).hexdigest()
    llm, loads = _llm(gguf, FakeLlama(), sha256=good)
    async with llm:
        assert await llm.chat(_ctx("Hi")).collect_text()
    assert loads
    _write(gguf, _GGUF + b"\0")
    llm, loads = _llm(gguf, FakeLlama(), sha256=good)
    async with llm:
        with pytest.raises(ProviderError, match=r"SHA-256|sha256|digest") as info:
            await llm.chat(_ctx("Hi")).collect_text()
    assert info.value.stage == "load" and not loads


@pytest.mark.realtime  # the model's thread is real: a virtual clock would run past its load
async def test_a_hung_model_fails_at_the_first_token_deadline_and_is_replaced(
    gguf: Path,
) -> None:
    hang = threading.Event()
    hung = FakeLlama(hang=hang)
    healthy = FakeLlama()
    models = iter([hung, healthy])
    deadlines = LLMDeadlines(first_token=3.0, idle=3.0, close=0.5)
    llm = LlamaCppLLM(gguf, loader=lambda p: next(models), deadlines=deadlines)
    try:
        async with llm:
            with pytest.raises(ProviderTimeoutError) as info:
                await llm.chat(_ctx("Hi")).collect_text()
            assert (info.value.stage, info.value.timeout) == ("first_token", 3.0)
            await asyncio.sleep(deadlines.close * 2)  # the watch marks the thread stuck
            assert await llm.chat(_ctx("Hi")).collect_text() == "Paris is the capital."
    finally:
        hang.set()  # let the abandoned daemon thread finish
    assert len(hung.requests) == 1 and len(healthy.requests) == 1


# -- the offline responder answers what it knows, the model the rest


@pytest.mark.realtime
async def test_offline_responder_hands_the_rest_to_the_local_model(gguf: Path) -> None:
    model = FakeLlama(["I", " think", " so", "."])
    local, _ = _llm(gguf, model)
    faq = [FaqEntry("What can you do?", "I answer questions.")]
    async with local, OfflineLLM(faq=faq, otherwise=local) as llm:
        known = await llm.chat(_ctx("what can you do")).collect_text()
        unknown = await llm.chat(_ctx("Is the moon made of cheese?")).collect_text()
        # the clock stays the responder's: its own tool call, its own result sentence
        stream = llm.chat(_ctx("What time is it?"), tools=[get_time])
        calls = [e async for e in stream if isinstance(e, ToolCall)]
    assert known == "I answer questions."
    assert unknown == "I think so."
    assert [c.name for c in calls] == ["get_time"]
    assert len(model.requests) == 1  # only the unknown question reached the model
    assert model.requests[0]["messages"][-1]["content"] == "Is the moon made of cheese?"


@pytest.mark.realtime
async def test_results_of_the_models_tool_calls_go_back_to_the_model(gguf: Path) -> None:
    model = FakeLlama(["It", " is", " sunny", "."])
    local, _ = _llm(gguf, model)
    call = ToolCall("call_1", "weather", '{"city": "Paris"}')
    ctx = _ctx("Weather in Paris?").assistant("", [call]).tool_result(call, "sunny")
    own = ToolCall("call_offline_get_time_3", "get_time", "{}")
    mine = _ctx("What time is it?").assistant("", [own]).tool_result(own, "It is 9:05 AM.")
    async with local, OfflineLLM(faq=[], otherwise=local) as llm:
        relayed = await llm.chat(ctx).collect_text()
        said = await llm.chat(mine).collect_text()
    assert relayed == "It is sunny."
    assert said == "It is 9:05 AM."
    assert [m["role"] for m in model.requests[0]["messages"]][-2:] == ["assistant", "tool"]
    assert len(model.requests) == 1


def test_otherwise_must_be_a_model() -> None:
    with pytest.raises(ConfigError, match="otherwise must be an LLM"):
        OfflineLLM(otherwise="ollama:llama3.2")  # type: ignore[arg-type]


def test_pipeline_names_the_local_model_and_stays_offline() -> None:
    from antiphon.agent.pipeline import PipelineSpec

    assert PipelineSpec(llm="llamacpp:/models/qwen.gguf").offline
    with pytest.raises(ConfigError, match=r"llamacpp:FILE\.gguf"):
        PipelineSpec(llm="llamacpp")


def test_cli_without_the_extra_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    import subprocess
    import sys
    import wave

    wav = tmp_path / "q.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x01\x00" * 1600)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    cmd = [sys.executable, "-m", "antiphon", "talk", str(wav), "--llm", f"llamacpp:{model}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2
    assert len(errors) == 1 and "antiphon[local-llm]" in errors[0]
