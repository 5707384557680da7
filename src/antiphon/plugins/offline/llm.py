"""The offline "brain": an honest rule-based responder behind the LLM contract.

No language model's weights ship inside a pip package that installs here, so this is
**not** a language model. For the last user message it:

1. ranks (question words such as "what" or "can you" count only when the message has
   nothing else) the entries of a small FAQ and the tools given to
   :meth:`~antiphon.services.llm.LLM.chat` that take no required arguments by TF-IDF
   cosine similarity (numpy) of the message to each phrasing of the FAQ question, or of
   the tool's name and description (an entry scores as its best phrasing);
2. if a tool ranks first, calls it (e.g. "what time is it?" → ``get_time``); if a FAQ
   entry does, says its answer; if nothing reaches ``threshold``, says it does not know;
3. after a tool result (the last message is a ``tool`` message), says that result.

With ``otherwise=`` another model (a local GGUF model through ``antiphon[local-llm]``,
an Ollama server...), what the FAQ and the tools do not cover goes to that model, with
the whole conversation and every tool: the responder stays the fast, honest first
answer (the time comes from the clock tool, never from a model's guess), the model
answers the rest. Results of tools the model called go back to the model.

The answer streams word by word (``token_interval`` seconds apart, 0 by default) through
the same :class:`~antiphon.services.llm.ChatStream` as a cloud model, with the same
deadlines, cancellation and usage (counted in words). The FAQ is
``antiphon/plugins/offline/faq.json`` unless another is given.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from antiphon.aio.tasks import TaskOwner
from antiphon.errors import ConfigError
from antiphon.protocols import bounded_json
from antiphon.services.llm import (
    LLM,
    ChatContext,
    ChatMessage,
    ChatStream,
    LLMDeadlines,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from antiphon.services.tools import FunctionTool, function_tool

__all__ = [
    "DEFAULT_FALLBACK",
    "PROVIDER",
    "FaqEntry",
    "OfflineChatStream",
    "OfflineLLM",
    "TfIdf",
    "get_time",
    "load_faq",
]

PROVIDER = "offline"
DEFAULT_FALLBACK = (
    "Sorry, I don't know that one. I am a small offline responder: ask me what I can do."
)
_STOP = frozenset(
    {"a", "an", "the", "is", "am", "be", "to", "of", "and", "or", "in", "on", "at", "for"}
    | {"it", "its", "this", "that", "i", "me", "my", "please"}
)
#: Question words: dropped from a question that has other words ("what hour is it" is
#: about the hour), kept when they are all it has ("what can you do").
_SOFT = frozenset(
    {"what", "what's", "whats", "who", "how", "can", "could", "would", "will", "you"}
    | {"your", "do", "does", "did", "tell", "know", "are", "was", "were", "there"}
)
_WORD = re.compile(r"[a-z0-9']+")
_MAX_DEPTH = 8  # a FAQ nests 2 levels; deeper is refused before it is parsed


@dataclass(frozen=True, slots=True)
class FaqEntry:
    """A question (or several phrasings of it) and the answer to speak."""

    question: str
    answer: str


def load_faq(path: str | Path | None = None) -> list[FaqEntry]:
    """Read a FAQ: a JSON list of ``{"q": ..., "a": ...}`` (the bundled one by default).

    Raises:
        ConfigError: in one line naming the file and, for a bad entry, its index and key.
    """
    name = "the bundled FAQ" if path is None else f"FAQ file {str(path)!r}"
    try:
        if path is None:
            text = resources.files("antiphon.plugins.offline").joinpath("faq.json").read_text()
        else:
            text = Path(path).read_text(encoding="utf-8")
        raw = bounded_json.loads(text, max_depth=_MAX_DEPTH)
    except OSError as exc:
        raise ConfigError(f"cannot read FAQ file {str(path)!r}: {exc.strerror}") from exc
    except bounded_json.JSONTooDeep as exc:
        raise ConfigError(f"{name} is not a FAQ: {exc} (a FAQ nests 2)") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc.msg}") from exc
    except ValueError as exc:  # not UTF-8
        raise ConfigError(f"{name} is not UTF-8 JSON: {exc}") from exc
    shape = 'a FAQ must be a JSON list of {"q": "question", "a": "answer"}'
    if not isinstance(raw, list):
        raise ConfigError(f"{name}: {shape}, got a JSON {type(raw).__name__}")
    entries = []
    for i, e in enumerate(raw):
        if not isinstance(e, dict):
            raise ConfigError(f"{name}: entry {i}: {shape}")
        for key in ("q", "a"):
            if not isinstance(e.get(key), str):
                problem = "is missing" if key not in e else f"must be a string, got {e[key]!r:.40}"
                raise ConfigError(f"{name}: entry {i}: {key!r} {problem}")
        entries.append(FaqEntry(e["q"], e["a"]))
    return entries


def _terms(text: str) -> list[str]:
    words = _WORD.findall(text.lower().replace("_", " "))
    out = []
    for w in words:
        if w in _STOP:
            continue
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.append(w)
    return out


def _phrasings(text: str) -> list[str]:
    """The phrasings of a question or description: its parts between ? | : , and ."""
    parts = [p.strip() for p in re.split(r"[?|:,.]", text)]
    return [p for p in parts if _terms(p)] or [text]


class TfIdf:
    """TF-IDF vectors with cosine similarity, over a fixed set of documents."""

    def __init__(self, documents: Sequence[str]) -> None:
        docs = [_terms(d) for d in documents]
        vocab = sorted({t for d in docs for t in d})
        self._index = {t: i for i, t in enumerate(vocab)}
        df = Counter(t for d in docs for t in set(d))
        n = max(1, len(docs))
        self._idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in vocab])
        self._rare = math.log(1 + n) + 1.0  # the weight of a word no document has
        self._matrix = (
            np.stack([self._vector(d) for d in docs]) if docs else np.zeros((0, len(vocab)))
        )

    def _vector(self, terms: Iterable[str]) -> npt.NDArray[np.float64]:
        """Unit TF-IDF vector; words unknown to every document count in its norm, so a
        query that is mostly about something else scores low."""
        v = np.zeros(len(self._index))
        unknown = 0.0
        for t, c in Counter(terms).items():
            i = self._index.get(t)
            if i is not None:
                v[i] = c * self._idf[i]
            else:
                unknown += (c * self._rare) ** 2
        norm = math.sqrt(float(v @ v) + unknown)
        return v / norm if norm else v

    def scores(self, query: str) -> npt.NDArray[np.float64]:
        """Cosine similarity of ``query`` to every document."""
        if not len(self._matrix):
            return np.zeros(0)
        terms = _terms(query)
        content = [t for t in terms if t not in _SOFT]
        return self._matrix @ self._vector(content or terms)


@function_tool
def get_time() -> str:
    """Get the current local time: what time is it now, the clock, the hour."""
    now = datetime.datetime.now()
    return f"It is {now.strftime('%I:%M %p').lstrip('0')}."


class OfflineLLM(LLM):
    """The offline responder (see the module docstring for exactly what it does).

    ``faq``: entries or a JSON file (default: the bundled FAQ). ``threshold``: least
    cosine similarity to answer from the FAQ or to call a tool. ``fallback``: the answer
    when nothing matches. ``token_interval``: seconds between streamed words.
    ``otherwise``: a model that answers what nothing matches instead of ``fallback``
    (it is not closed here: its owner closes it).
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        *,
        faq: Sequence[FaqEntry] | str | Path | None = None,
        threshold: float = 0.35,
        fallback: str = DEFAULT_FALLBACK,
        token_interval: float = 0.0,
        otherwise: LLM | None = None,
        deadlines: LLMDeadlines | None = None,
    ) -> None:
        super().__init__(deadlines=deadlines)
        if otherwise is not None and not isinstance(otherwise, LLM):
            raise ConfigError(f"otherwise must be an LLM, got {type(otherwise).__name__}")
        self.otherwise = otherwise
        if isinstance(faq, Sequence) and not isinstance(faq, str):
            self.faq = list(faq)
            if not all(isinstance(e, FaqEntry) for e in self.faq):
                raise ConfigError("faq must be FaqEntry items, a FAQ JSON file's path or None")
        else:
            self.faq = load_faq(faq)
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {threshold!r}")
        if token_interval < 0:
            raise ConfigError("token_interval must be >= 0 seconds")
        if not fallback.strip():
            raise ConfigError("fallback must be a non-empty answer")
        self.threshold = threshold
        self.fallback = fallback
        self.token_interval = token_interval
        self._faq_phrases = [(p, i) for i, e in enumerate(self.faq) for p in _phrasings(e.question)]
        self._faq_index = TfIdf([p for p, _ in self._faq_phrases])

    def respond(self, text: str, tools: Sequence[FunctionTool] = ()) -> FunctionTool | str:
        """The best match for ``text`` among the FAQ and the argument-free ``tools``: the
        tool to call, the FAQ answer to say, or the fallback when nothing matches."""
        match = self.match(text, tools)
        return self.fallback if match is None else match

    def match(self, text: str, tools: Sequence[FunctionTool] = ()) -> FunctionTool | str | None:
        """The tool to call or the FAQ answer to say for ``text``; None when nothing
        reaches ``threshold``.

        Each FAQ question and tool description is cut into its phrasings (at ``?``, ``|``,
        ``:``, ``,`` and ``.``), and an entry scores as its best phrasing, so "hi" matches
        a greeting entry as well as "hello there" does.
        """
        usable = [t for t in tools if not t.parameters.get("required")]
        if usable:
            phrases = self._faq_phrases + [
                (p, len(self.faq) + i)
                for i, t in enumerate(usable)
                for p in _phrasings(f"{t.name.replace('_', ' ')}, {t.description}")
            ]
            scores = TfIdf([p for p, _ in phrases]).scores(text)
        else:
            phrases, scores = self._faq_phrases, self._faq_index.scores(text)
        if not scores.size or float(scores.max()) < self.threshold:
            return None
        best = phrases[int(scores.argmax())][1]
        return self.faq[best].answer if best < len(self.faq) else usable[best - len(self.faq)]

    def _new_stream(
        self, context: ChatContext, tools: tuple[FunctionTool, ...], generation: int
    ) -> ChatStream:
        return OfflineChatStream(self, context, tools, generation, self._tasks)


class OfflineChatStream(ChatStream):
    def __init__(
        self,
        llm: OfflineLLM,
        context: ChatContext,
        tools: tuple[FunctionTool, ...],
        generation: int,
        owner: TaskOwner,
    ) -> None:
        self._llm = llm
        super().__init__(
            provider=llm.provider,
            context=context,
            tools=tools,
            generation=generation,
            deadlines=llm.deadlines,
            owner=owner,
        )

    async def _run(self) -> None:
        llm, messages = self._llm, self.context.messages
        prompt = sum(len(m.content.split()) for m in messages)
        results = _trailing_tool_results(messages)
        if results and all((m.tool_call_id or "").startswith(_OWN_CALL) for m in results):
            reply = " ".join(_say_result(m.content) for m in results)
        elif results and llm.otherwise is not None:
            await self._relay(llm.otherwise)
            return
        elif results:
            reply = " ".join(_say_result(m.content) for m in results)
        else:
            user = self.context.last("user")
            question = user.content if user is not None else ""
            match = llm.match(question, self.tools)
            if match is None and llm.otherwise is not None:
                await self._relay(llm.otherwise)
                return
            if match is None:
                match = llm.fallback
            if isinstance(match, FunctionTool):
                tool = match
                await asyncio.sleep(0)
                call_id = f"{_OWN_CALL}{tool.name}_{self.generation}"
                self._tool_delta(0, id=call_id, name=tool.name)
                self._tool_delta(0, arguments="{}")
                self._finish_reason("tool_calls")
                self._usage(Usage(prompt, 1))
                return
            reply = match
        words = re.findall(r"\S+\s*", reply)
        for word in words:
            if llm.token_interval:
                await asyncio.sleep(llm.token_interval)
            else:
                await asyncio.sleep(0)
            self._text(word)
        self._finish_reason("stop")
        self._usage(Usage(prompt, len(words)))

    async def _relay(self, model: LLM) -> None:
        """Stream ``model``'s answer to this conversation as this stream's own."""
        inner = model.chat(self.context, tools=self.tools, generation=self.generation)
        try:
            async for ev in inner:  # raises the model's typed error after its events
                if isinstance(ev, TextDelta):
                    self._text(ev.text)
                elif isinstance(ev, ToolCallDelta):
                    self._tool_delta(ev.index, id=ev.id, name=ev.name, arguments=ev.arguments)
            result = await inner.result()
            if result.finish_reason not in ("cancelled", "error"):
                self._finish_reason(result.finish_reason)
            self._usage(result.usage)
        finally:
            await inner.aclose()


#: The id prefix of the calls the responder itself makes (their results it says itself).
_OWN_CALL = "call_offline_"


def _trailing_tool_results(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The tool messages at the end of the conversation (the results of the last calls)."""
    out: list[ChatMessage] = []
    for m in reversed(messages):
        if m.role != "tool":
            break
        out.append(m)
    return out[::-1]


def _say_result(output: str) -> str:
    text = output.strip()
    if not text:
        return "The tool returned nothing."
    if text.startswith("error:"):
        return "Sorry, that did not work: " + text[len("error:") :].strip()
    return text
