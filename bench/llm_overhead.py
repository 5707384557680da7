"""Framework overhead of each streaming HTTP LLM plugin over a bare httpx stream reader.

For the Gemini (``streamGenerateContent?alt=sse``), Anthropic (Messages), OpenAI (chat
completions) and Bedrock (``ConverseStream``) plugins, against each provider's fake server
(on its own thread, same scripted reply, one event per token, ``--interval`` apart):

(a) a bare client: one ``httpx`` streaming POST of the plugin's own request body and
    headers, reading ``aiter_raw()``, splitting events on blank lines (SSE) or with the
    sans-I/O event-stream decoder (Bedrock) and taking each event's text with
    ``json.loads`` (nothing else: no deadlines, no retries, no tasks);
(b) the plugin: ``llm.chat(context)`` iterated for ``TextDelta`` events (request task,
    SSE parser, the protocol's state machine, deadlines, the event channel).

Measured: the time to the first token (from the request, or from ``chat()``) and, per
token, the latency from the fake's write of the event that carries it (``HttpConnection.
write`` is wrapped to timestamp every write) to the token coming out. The two clients
run interleaved, reply by reply, in one process.

    .venv/bin/python bench/llm_overhead.py [--replies 12] [--interval 0.002] [--only gemini]

Prints a summary and writes ``bench/results/llm_overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from antiphon.plugins.anthropic import AnthropicLLM
from antiphon.plugins.bedrock import BedrockLLM
from antiphon.plugins.gemini import GeminiLLM
from antiphon.plugins.openai import OpenAILLM
from antiphon.protocols.aws_eventstream import EventStreamDecoder
from antiphon.services.http_llm import HttpLLM
from antiphon.services.llm import ChatContext, TextDelta
from antiphon.testing import FaultPlan, running_in_thread
from antiphon.testing import anthropic_messages as am_fake
from antiphon.testing import bedrock_converse as bc_fake
from antiphon.testing import gemini_generate as gg_fake
from antiphon.testing import openai_chat as oc_fake
from antiphon.testing.openai_chat import FakeChatServer, Reply
from benchkit import HTTP_SENT, after_last_send, clock_http_writes, overhead_summary

REPLY = (
    "Sure. The next train leaves at ten past nine from platform four, and it reaches "
    "the city centre about twenty minutes later, so you have plenty of time."
)


def _gemini_text(event: dict[str, Any]) -> str:
    parts = (event.get("candidates") or [{}])[0].get("content", {}).get("parts", [])
    return "".join(p.get("text", "") for p in parts)


def _anthropic_text(event: dict[str, Any]) -> str:
    delta = event.get("delta") or {}
    return str(delta.get("text", "")) if event.get("type") == "content_block_delta" else ""


def _bedrock_text(event: dict[str, Any]) -> str:
    return str((event.get("delta") or {}).get("text", ""))


def _openai_text(event: dict[str, Any]) -> str:
    choices = event.get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


@dataclass(frozen=True)
class Provider:
    name: str
    fake: Callable[[FaultPlan], FakeChatServer]
    make: Callable[[str], HttpLLM]
    text_of: Callable[[dict[str, Any]], str]
    """The text an event's JSON carries (the bare client's whole decoder)."""
    eventstream: bool = False
    """AWS event-stream frames, not server-sent events."""


PROVIDERS = [
    Provider(
        "gemini",
        lambda plan: gg_fake.FakeGeminiGenerate(plan, replies=lambda _body: Reply(REPLY)),
        lambda url: GeminiLLM("gemini-2.5-flash", api_key=gg_fake.DEFAULT_API_KEY, base_url=url),
        _gemini_text,
    ),
    Provider(
        "anthropic",
        lambda plan: am_fake.FakeAnthropicMessages(plan, replies=lambda _body: Reply(REPLY)),
        lambda url: AnthropicLLM(
            "claude-sonnet-4-5", api_key=am_fake.DEFAULT_API_KEY, base_url=url
        ),
        _anthropic_text,
    ),
    Provider(
        "openai",
        lambda plan: oc_fake.FakeOpenAIChat(plan, replies=lambda _body: Reply(REPLY)),
        lambda url: OpenAILLM("gpt-4o-mini", api_key=oc_fake.DEFAULT_API_KEY, base_url=url),
        _openai_text,
    ),
    Provider(
        "bedrock",
        lambda plan: bc_fake.FakeBedrockConverse(plan, replies=lambda _body: Reply(REPLY)),
        lambda url: BedrockLLM(
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            api_key=bc_fake.DEFAULT_API_KEY,
            base_url=url,
        ),
        _bedrock_text,
        eventstream=True,
    ),
]


def context(i: int) -> ChatContext:
    return ChatContext().system("Be brief.").user(f"When is the next train? ({i})")


async def bare_round(
    p: Provider, client: httpx.AsyncClient, llm: HttpLLM, ctx: ChatContext
) -> tuple[list[float], float, str]:
    """(per-token latencies, time to first token in ms, the text)."""
    start = len(HTTP_SENT)
    recv_ns: list[int] = []
    text: list[str] = []
    buf = b""
    t0 = time.perf_counter_ns()
    body = llm.encode(ctx, ())
    async with client.stream("POST", llm.url, content=body, headers=llm.headers) as r:
        r.raise_for_status()
        if p.eventstream:
            decoder = EventStreamDecoder()
            async for data in r.aiter_raw():
                for message in decoder.feed(data):
                    piece = p.text_of(json.loads(message.payload))
                    if piece:
                        recv_ns.append(time.perf_counter_ns())
                        text.append(piece)
            return (
                after_last_send(HTTP_SENT[start:], recv_ns),
                (recv_ns[0] - t0) / 1e6,
                "".join(text),
            )
        async for data in r.aiter_raw():
            buf += data.replace(b"\r\n", b"\n")
            *events, buf = buf.split(b"\n\n")
            for event in events:
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        continue
                    piece = p.text_of(json.loads(payload))
                    if piece:
                        recv_ns.append(time.perf_counter_ns())
                        text.append(piece)
    return after_last_send(HTTP_SENT[start:], recv_ns), (recv_ns[0] - t0) / 1e6, "".join(text)


async def plugin_round(llm: HttpLLM, ctx: ChatContext) -> tuple[list[float], float, str]:
    start = len(HTTP_SENT)
    recv_ns: list[int] = []
    text: list[str] = []
    t0 = time.perf_counter_ns()
    async with llm.chat(ctx) as stream:
        async for event in stream:
            if isinstance(event, TextDelta) and event.text:
                recv_ns.append(time.perf_counter_ns())
                text.append(event.text)
    return after_last_send(HTTP_SENT[start:], recv_ns), (recv_ns[0] - t0) / 1e6, "".join(text)


async def bench_provider(p: Provider, replies: int, interval: float) -> dict[str, Any]:
    fake = p.fake(FaultPlan(chunk_interval=interval))
    lat: dict[str, list[float]] = {"bare": [], "ours": []}
    ttft: dict[str, list[float]] = {"bare": [], "ours": []}
    with running_in_thread(fake):
        base_url: str = getattr(fake, "base_url")  # noqa: B009 (each fake has its own)
        async with (
            httpx.AsyncClient(trust_env=False, timeout=10.0) as client,
            p.make(base_url) as llm,
        ):
            await bare_round(p, client, llm, context(-1))  # warm up, not counted
            await plugin_round(llm, context(-1))
            for i in range(replies):
                ctx = context(i)
                for which in ("bare", "ours") if i % 2 == 0 else ("ours", "bare"):
                    if which == "bare":
                        tok, first, text = await bare_round(p, client, llm, ctx)
                    else:
                        tok, first, text = await plugin_round(llm, ctx)
                    if text != REPLY:
                        raise RuntimeError(f"{p.name} {which}: got {text!r}")
                    lat[which] += tok
                    ttft[which].append(first)
    result: dict[str, Any] = {
        "provider": p.name,
        "tokens_per_client": len(lat["ours"]),
        **overhead_summary(lat["bare"], lat["ours"]),
        "first_token": overhead_summary(ttft["bare"], ttft["ours"]),
    }
    result["target_met"] = result["added_latency_ms"]["p99"] < 1.0
    return result


async def run(replies: int, interval: float, only: list[str]) -> dict[str, Any]:
    clock_http_writes()
    results = [
        await bench_provider(p, replies, interval) for p in PROVIDERS if not only or p.name in only
    ]
    return {
        "benchmark": "llm_overhead",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "replies": replies,
        "chunk_interval_s": interval,
        "target": "added p99 latency < 1 ms per token",
        "providers": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--replies", type=int, default=12, help="replies per client")
    ap.add_argument("--interval", type=float, default=0.002, help="seconds between events")
    ap.add_argument("--only", action="append", default=[], help="provider name (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/llm_overhead.json"))
    a = ap.parse_args()
    r = asyncio.run(run(a.replies, a.interval, a.only))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(r, indent=2) + "\n")
    print(
        f"{'provider':<10} {'tokens':>6} {'bare p50/p99 ms':>16} {'plugin p50/p99 ms':>18} "
        f"{'added p99':>9} {'TTFT bare p50/p99':>18} {'TTFT plugin p50/p99':>20}"
    )
    for p in r["providers"]:
        b, o, d = p["bare_ms"], p["plugin_ms"], p["added_latency_ms"]
        fb, fo = p["first_token"]["bare_ms"], p["first_token"]["plugin_ms"]
        met = "met" if p["target_met"] else "NOT met"
        print(
            f"{p['provider']:<10} {p['tokens_per_client']:>6} "
            f"{b['p50']:>7.3f}/{b['p99']:<8.3f} {o['p50']:>8.3f}/{o['p99']:<9.3f} "
            f"{d['p99']:>+9.3f} {fb['p50']:>8.3f}/{fb['p99']:<9.3f} "
            f"{fo['p50']:>9.3f}/{fo['p99']:<10.3f} {met}"
        )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
