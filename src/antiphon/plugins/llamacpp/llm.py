"""A local GGUF language model in process, through ``llama-cpp-python`` (``antiphon[local-llm]``).

How it is built: one :class:`~antiphon.aio.worker.ThreadWorker` owns the
``llama_cpp.Llama`` (loaded on that thread, after the file's SHA-256 is checked when one
is pinned) and runs every generation there, one at a time: a 2-core machine has no
cores to spare for two. ``create_chat_completion(stream=True)`` takes the conversation and
tools in the OpenAI chat format (built by :func:`antiphon.protocols.openai_chat.build_body`,
as for a cloud model) and yields ``chat.completion.chunk`` objects, which
:func:`~antiphon.protocols.openai_chat.parse_chunk` reads as it reads a server's. The
chunks cross to the loop through a bounded :class:`~antiphon.aio.handoff.Handoff`
(the generating thread waits when the reader falls behind; nothing is dropped).

The stream's deadlines are the LLM contract's (first token, idle between tokens). A
cancelled or failed stream tells the thread to stop at its next token; a thread that has
not stopped ``deadlines.close`` seconds later (a native call that does not return) is
retired and a fresh one loads the model for the next stream, so a hang costs one model
load, never a call.

Build cost: ``llama-cpp-python`` publishes no Linux wheel on PyPI, so ``pip install
'antiphon[local-llm]'`` compiles llama.cpp (about 25 minutes on 2 cores, with a C++
compiler and CMake). No model ships with antiphon (no GGUF weights of clear provenance are
on the package index): bring your own file, and pin it with ``sha256=``. See
docs/offline.md.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from antiphon.aio.handoff import Handoff
from antiphon.aio.tasks import TaskOwner
from antiphon.aio.worker import ThreadWorker, WorkerSlot
from antiphon.errors import ConfigError, ProviderError
from antiphon.plugins.weights import verify
from antiphon.protocols import openai_chat
from antiphon.services.llm import (
    LLM,
    ChatContext,
    ChatStream,
    FinishReason,
    LLMDeadlines,
    Usage,
)
from antiphon.services.tools import FunctionTool

__all__ = ["INSTALL_HINT", "LlamaCppLLM", "LlamaCppStream"]

PROVIDER = "llamacpp"
INSTALL_HINT = (
    "pip install 'antiphon[local-llm]' (it compiles llama.cpp: about 25 minutes on 2 cores, "
    "with a C++ compiler and CMake)"
)
#: Chunks (about one token each) in flight between the generating thread and the loop.
IN_FLIGHT = 64
#: A local model loads on its first request (an mmap of the file, ~1 s for 1 GB).
DEADLINES = LLMDeadlines(first_token=60.0, idle=10.0)

_REASONS: Mapping[str, FinishReason] = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
}

Loader = Callable[[str], Any]
"""Builds the model from the file's path (default: ``llama_cpp.Llama``)."""


@dataclass(frozen=True, slots=True)
class _Done:
    error: BaseException | None = None


class LlamaCppLLM(LLM):
    """A GGUF chat model run in process (see the module docstring).

    Args:
        model_path: the ``.gguf`` file.
        sha256: its pinned digest; the file is refused if it differs (checked once per
            file version, on the model's thread).
        n_ctx: context window in tokens. ``threads``: CPU threads per generation
            (default: all cores). ``max_tokens``: longest answer. ``temperature``.
        chat_format: llama.cpp's chat template name (default: the one in the file).
        loader: builds the model from the path instead of ``llama_cpp.Llama`` (tests, or
            a model built with other options).
        deadlines: see :class:`~antiphon.services.llm.LLMDeadlines` (the first token
            includes the model's load on the first request).

    Raises:
        ConfigError: ``llama-cpp-python`` is not installed, the file is missing or not
            GGUF, or a bad argument.
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        sha256: str | None = None,
        n_ctx: int = 4096,
        threads: int | None = None,
        max_tokens: int = 200,
        temperature: float = 0.7,
        chat_format: str | None = None,
        loader: Loader | None = None,
        deadlines: LLMDeadlines | None = None,
    ) -> None:
        if loader is None and importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(f"llama-cpp-python is not installed; {INSTALL_HINT}")
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"model file {str(path)!r} does not exist; give a .gguf file")
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ConfigError(f"{str(path)!r} is not a GGUF model file")
        for name, value, least in (("n_ctx", n_ctx, 256), ("max_tokens", max_tokens, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"{name} must be an int >= {least}, got {value!r}")
        if threads is not None and (
            not isinstance(threads, int) or isinstance(threads, bool) or threads < 1
        ):
            raise ConfigError(f"threads must be an int >= 1, got {threads!r}")
        if not 0.0 <= temperature <= 2.0:
            raise ConfigError(f"temperature must be between 0 and 2, got {temperature!r}")
        if sha256 is not None and (
            len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower())
        ):
            raise ConfigError("sha256 must be the file's 64 hex digit SHA-256")
        super().__init__(deadlines=deadlines or DEADLINES)
        self.model_path = path
        self.sha256 = sha256
        self.n_ctx = n_ctx
        self.threads = threads
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.chat_format = chat_format
        self._loader = loader
        self._slot: WorkerSlot[Any] = WorkerSlot(
            lambda: ThreadWorker(self._load, provider=PROVIDER, close=_close_model)
        )

    def _load(self) -> Any:
        """Check the pin and load the model (on the worker thread)."""
        if self.sha256 is not None:
            pins: Mapping[str, str] = {self.model_path.name: self.sha256}
            verify(
                self.model_path.parent,
                pins,
                provider=PROVIDER,
                hint="the model file changed; check it or its sha256",
            )
        if self._loader is not None:
            return self._loader(str(self.model_path))
        import llama_cpp

        kwargs: dict[str, Any] = {"n_ctx": self.n_ctx, "verbose": False}
        if self.threads is not None:
            kwargs["n_threads"] = self.threads
        if self.chat_format is not None:
            kwargs["chat_format"] = self.chat_format
        return llama_cpp.Llama(model_path=str(self.model_path), **kwargs)

    def _engine(self) -> ThreadWorker[Any]:
        """The model's thread, replaced if a generation on it did not stop."""
        return self._slot.get()

    async def prewarm(self) -> None:
        """Load the model now (within ``deadlines.first_token``)."""
        await self._engine().call(lambda m: None, timeout=self.deadlines.first_token, stage="load")

    @property
    def threads_alive(self) -> list[threading.Thread]:
        """The model threads alive now (for leak checks)."""
        return self._slot.threads

    def request(self, context: ChatContext, tools: Iterable[FunctionTool]) -> dict[str, Any]:
        """The keyword arguments of ``create_chat_completion`` for this conversation."""
        body = openai_chat.build_body(
            context.messages,
            tuple(tools),
            model=PROVIDER,
            include_usage=False,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )
        kwargs: dict[str, Any] = {
            "messages": body["messages"],
            "stream": True,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if "tools" in body:
            kwargs["tools"] = body["tools"]
        return kwargs

    def _new_stream(
        self, context: ChatContext, tools: tuple[FunctionTool, ...], generation: int
    ) -> ChatStream:
        return LlamaCppStream(self, context, tools, generation, self._tasks)

    async def _aclose_resources(self) -> None:
        await self._slot.aclose(self.deadlines.close)
        await super()._aclose_resources()


def _close_model(model: Any) -> None:
    close = getattr(model, "close", None)
    if callable(close):
        close()


class LlamaCppStream(ChatStream):
    """One generation of :class:`LlamaCppLLM`, on the model's thread."""

    def __init__(
        self,
        llm: LlamaCppLLM,
        context: ChatContext,
        tools: tuple[FunctionTool, ...],
        generation: int,
        owner: TaskOwner,
    ) -> None:
        self._llm = llm
        self._owner = owner
        super().__init__(
            provider=llm.provider,
            context=context,
            tools=tools,
            generation=generation,
            deadlines=llm.deadlines,
            owner=owner,
        )

    async def _run(self) -> None:
        llm = self._llm
        kwargs = llm.request(self.context, self.tools)
        worker = llm._engine()
        await worker.load(llm.deadlines.first_token)  # a failed load (a pin) fails it here
        chunks: Handoff[Mapping[str, Any] | _Done] = Handoff(IN_FLIGHT, name="llamacpp chunks")
        abort, stopped = threading.Event(), asyncio.Event()

        def job(model: Any) -> None:
            try:
                it = model.create_chat_completion(**kwargs)
                try:
                    for chunk in it:
                        if abort.is_set() or not chunks.put(chunk):
                            return
                finally:
                    close = getattr(it, "close", None)
                    if callable(close):
                        close()  # a generator: llama.cpp stops decoding
            except BaseException as exc:
                chunks.put(_Done(exc))
            else:
                chunks.put(_Done())
            finally:
                worker.post(stopped.set)

        worker.submit(job)
        completion = 0
        try:
            while True:
                item = await chunks.recv()
                if isinstance(item, _Done):
                    if item.error is not None:
                        raise _engine_error(item.error)
                    break
                try:
                    events = openai_chat.parse_chunk(item, repr(item)[:200])
                except openai_chat.StreamErrorEvent as exc:
                    raise ProviderError(exc.message, provider=PROVIDER, stage="stream") from None
                except openai_chat.Malformed as exc:
                    raise ProviderError(
                        f"malformed chunk: {exc}", provider=PROVIDER, stage="stream"
                    ) from None
                for ev in events:
                    if isinstance(ev, openai_chat.ContentDelta):
                        completion += 1
                        self._text(ev.text)
                    elif isinstance(ev, openai_chat.ToolCallFragment):
                        completion += 1
                        self._tool_delta(ev.index, id=ev.id, name=ev.name, arguments=ev.arguments)
                    elif isinstance(ev, openai_chat.Finish):
                        self._finish_reason(_REASONS.get(ev.reason, "stop"))
                    elif isinstance(ev, openai_chat.UsageReport):
                        self._usage(Usage(ev.prompt_tokens, ev.completion_tokens))
            if self._usage_value == Usage():
                self._usage(Usage(0, completion))
        finally:
            abort.set()
            chunks.close()
            if not stopped.is_set() and not self._owner.closing:
                self._owner.spawn(
                    _retire_if_stuck(worker, stopped, llm.deadlines.close),
                    name="llamacpp-watch",
                )


async def _retire_if_stuck(worker: ThreadWorker[Any], stopped: asyncio.Event, grace: float) -> None:
    """Mark the worker stuck if its generation has not stopped ``grace`` s after the end."""
    try:
        await asyncio.wait_for(stopped.wait(), grace)
    except TimeoutError:
        worker.stuck = "generate"


def _engine_error(exc: BaseException) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ValueError) and "context" in str(exc).lower():
        return ProviderError(
            f"the conversation does not fit the model's context: {exc}",
            provider=PROVIDER,
            stage="request",
            hint="raise n_ctx or shorten the history",
        )
    return ProviderError(f"llama.cpp failed: {exc!r}", provider=PROVIDER, stage="stream")
