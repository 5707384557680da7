"""The answering half of one connection of the fake OpenAI Realtime server.

:class:`RealtimeResponder` is the base class of
:class:`~antiphon.testing.realtime.RealtimeConnection`. It holds what goes out to the
client as a response: ``response.created`` up to ``response.done`` (usage included), the
transcript and audio deltas, function calls, ``response.cancel`` and the fault plan's
mid-response faults (``error_mid_stream``, ``malformed_mid_stream``, ``drop_before_audio``,
``audio_after_done``, ``audio_after_clear``, ``ignore_clear``...). The connection class
keeps the session, the client events and the VAD, and sets in its ``__init__`` every
attribute declared here. It was cut out of ``realtime.py`` along that seam (input vs
output) so that neither file grows past a few hundred lines; nothing else changed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from antiphon.protocols import realtime as rt
from antiphon.testing.server import WsConnection
from antiphon.testing.synth import tone_for_text

if TYPE_CHECKING:
    from antiphon.protocols.realtime.config import _Names
    from antiphon.testing.realtime import FakeRealtimeServer, RealtimeFakeStats

__all__ = ["RealtimeResponder"]


class RealtimeResponder(WsConnection):
    """The responses of one connection (the base of
    :class:`~antiphon.testing.realtime.RealtimeConnection`, which sets these attributes)."""

    server: FakeRealtimeServer
    stats: RealtimeFakeStats
    names: _Names
    ga: bool
    session: dict[str, Any]
    conversation: list[dict[str, Any]]
    response: asyncio.Task[None] | None
    response_id: str
    cancelled: bool
    audio_sent_ms: dict[str, float]
    _current_item: str

    # -- helpers

    async def send(self, msg: dict[str, Any]) -> None:
        msg.setdefault("event_id", self.server.next_id("event"))
        await self.ws.send(json.dumps(msg))

    @property
    def output_rate(self) -> int:
        if self.ga:
            fmt = self.session.get("audio", {}).get("output", {}).get("format", {})
            return int(fmt.get("rate", 24000))
        fmt = self.session.get("output_audio_format", "pcm16")
        return {"pcm16_16000hz": 16000, "pcm16_8000hz": 8000}.get(fmt, 24000)

    async def _error(self, etype: str, code: str, message: str, param: str = "") -> None:
        err = {"type": etype, "code": code, "message": message, "param": param}
        await self.send({"type": "error", "error": err})

    # -- responses
    def _last_user_text(self) -> str:
        for item in reversed(self.conversation):
            if item.get("role") == "user":
                if "_heard" in item:
                    return str(item["_heard"])
                for part in item.get("content") or []:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        return str(part["text"])
        return ""

    def _plan_response(self, instructions: str | None) -> tuple[str, tuple[str, str] | None]:
        """(reply text, or a function call (name, arguments))."""
        if instructions is not None and instructions.startswith(rt.SAY_PREFIX):
            return instructions[len(rt.SAY_PREFIX) :], None
        last = self.conversation[-1] if self.conversation else {}
        if last.get("type") == "function_call_output":
            return f"The tool says {last.get('output', '')}", None
        text = self._last_user_text()
        tools = {t.get("name") for t in self.session.get("tools", []) if isinstance(t, dict)}
        for trigger, (name, args) in self.server.tool_triggers.items():
            if trigger in text.lower() and name in tools:
                return "", (name, args or json.dumps({"query": text}))
        return self.server.reply(text), None

    def _start_response(self, instructions: str | None) -> None:
        self.stats.responses += 1
        self.response_id = self.server.next_id("resp")
        self.cancelled = False
        text, call = self._plan_response(instructions)
        self.response = self.spawn(self._respond(self.response_id, text, call))

    async def _response_done(
        self,
        rid: str,
        status: str,
        output: list[dict[str, Any]],
        reason: str = "",
        error: dict[str, str] | None = None,
    ) -> None:
        details: dict[str, Any] | None = None
        if reason:
            details = {"type": status, "reason": reason}
        elif error is not None:  # a failed response: the error, never a reason
            details = {"type": status, "error": error}
        usage = {
            "total_tokens": 30,
            "input_tokens": 10,
            "output_tokens": 20,
            "input_token_details": {
                "audio_tokens": 5,
                "text_tokens": 5,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"audio_tokens": 15, "text_tokens": 5},
        }
        await self.send(
            {
                "type": "response.done",
                "response": {
                    "id": rid,
                    "object": "realtime.response",
                    "status": status,
                    "status_details": details,
                    "output": output,
                    "usage": usage,
                },
            }
        )

    async def _cancel(self, reason: str, *, quiet: bool = False) -> None:
        task = self.response
        if task is None or task.done():
            if not quiet:
                await self._error(
                    "invalid_request_error",
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found",
                )
            return
        if not quiet:
            self.stats.cancels += 1
        if self.plan.ignore_clear and not quiet:
            return
        rid = self.response_id
        self.cancelled = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await task
        for _ in range(self.plan.audio_after_clear):
            await self._audio_delta(rid, self._current_item, tone_for_text("old", 24000)[:960])
        await self._response_done(rid, "cancelled", [], reason)

    async def _audio_delta(self, rid: str, item_id: str, chunk: bytes) -> None:
        await self.send(
            {
                "type": self.names.audio_delta,
                "response_id": rid,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(chunk).decode(),
            }
        )
        self.chunks_sent += 1
        self.stats.audio_out_bytes += len(chunk)
        self.audio_sent_ms[item_id] = (
            self.audio_sent_ms.get(item_id, 0.0) + len(chunk) / 2 / self.output_rate * 1000
        )

    async def _respond(self, rid: str, text: str, call: tuple[str, str] | None) -> None:
        try:
            await self._respond_inner(rid, text, call)
        except ConnectionClosed:
            return

    async def _respond_inner(self, rid: str, text: str, call: tuple[str, str] | None) -> None:
        plan = self.plan
        await self.send(
            {
                "type": "response.created",
                "response": {"id": rid, "object": "realtime.response", "status": "in_progress"},
            }
        )
        item_id = self.server.next_id("item")
        self._current_item = item_id
        base = {"response_id": rid, "item_id": item_id, "output_index": 0}
        if call is not None:
            name, args = call
            call_id = self.server.next_id("call")
            item = {"id": item_id, "type": "function_call", "call_id": call_id, "name": name}
            await self.send(
                {
                    "type": "response.output_item.added",
                    "response_id": rid,
                    "output_index": 0,
                    "item": {**item, "arguments": "", "status": "in_progress"},
                }
            )
            for i in range(0, len(args), 5):
                await self.send(
                    {
                        "type": "response.function_call_arguments.delta",
                        **base,
                        "call_id": call_id,
                        "delta": args[i : i + 5],
                    }
                )
            await self.send(
                {
                    "type": "response.function_call_arguments.done",
                    **base,
                    "call_id": call_id,
                    "name": name,
                    "arguments": args,
                }
            )
            done_item = {**item, "arguments": args, "status": "completed"}
            self.conversation.append(done_item)
            await self.send(
                {
                    "type": "response.output_item.done",
                    "response_id": rid,
                    "output_index": 0,
                    "item": done_item,
                }
            )
            await self._response_done(rid, "completed", [done_item])
            return
        self.stats.replies.append(text)
        msg_item: dict[str, Any] = {
            "id": item_id,
            "type": "message",
            "role": "assistant",
            "content": [],
        }
        await self.send(
            {"type": "response.output_item.added", "response_id": rid, "output_index": 0,
             "item": {**msg_item, "status": "in_progress"}}
        )  # fmt: skip
        part_kind = "audio"
        await self.send(
            {
                "type": "response.content_part.added",
                **base,
                "content_index": 0,
                "part": {"type": part_kind, "transcript": ""},
            }
        )
        if self.index < plan.drop_before_audio:
            await self.close(1011, "dropped by fault plan")
            return
        if plan.first_audio_delay:
            await asyncio.sleep(plan.first_audio_delay)
        rate = self.output_rate
        audio = tone_for_text(text, rate)
        step = max(2, round(self.server.chunk_ms / 1000 * rate) * 2)
        if plan.odd_chunking:
            step += 1
        words = text.split(" ")
        n = len(range(0, len(audio), step))
        said = 0
        sent = 0

        async def error() -> bool:
            await self._error("server_error", "internal_error", "fault plan error")
            error = {"type": "server_error", "code": "internal_error"}
            await self._response_done(
                rid, "failed", [], error={**error, "message": "fault plan error"}
            )
            return True

        async def malformed() -> None:
            await self.ws.send("{this is not json")
            await self.send({"type": "response.something_new", "value": 1})

        async def send(chunk: bytes) -> None:
            nonlocal sent, said
            sent += 1
            upto = round(sent * len(words) / n)
            if upto > said:
                delta = (" " if said else "") + " ".join(words[said:upto])
                await self.send(
                    {
                        "type": self.names.transcript_delta,
                        **base,
                        "content_index": 0,
                        "delta": delta,
                    }
                )
                said = upto
            await self._audio_delta(rid, item_id, chunk)

        if not await self.stream_audio(
            audio, step, send, error=error, malformed=malformed, per_answer=True
        ):
            return
        await self.send({"type": self.names.audio_done, **base, "content_index": 0})
        await self.send(
            {"type": self.names.transcript_done, **base, "content_index": 0, "transcript": text}
        )
        await self.send(
            {
                "type": "response.content_part.done",
                **base,
                "content_index": 0,
                "part": {"type": part_kind, "transcript": text},
            }
        )
        kind = "output_audio" if self.ga else "audio"
        content = [{"type": kind, "transcript": text}]
        final_item: dict[str, Any] = {**msg_item, "status": "completed", "content": content}
        self.conversation.append(
            {"type": "message", "role": "assistant", "content": [{"text": text}]}
        )
        await self.send(
            {"type": "response.output_item.done", "response_id": rid, "output_index": 0,
             "item": final_item}
        )  # fmt: skip
        await self._response_done(rid, "completed", [final_item])
        for _ in range(plan.audio_after_done):
            await self._audio_delta(rid, item_id, tone_for_text("stale audio", rate)[:step])
