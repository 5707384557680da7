"""Encoders of the client events (one JSON string each); nothing here keeps state."""

from __future__ import annotations

import base64
from typing import Any

from antiphon.protocols.realtime.config import NAMES, Dialect, dump_json

__all__ = [
    "CLEAR_INPUT",
    "COMMIT",
    "SAY_PREFIX",
    "encode_append",
    "encode_function_output",
    "encode_message",
    "encode_response_cancel",
    "encode_response_create",
    "encode_truncate",
]


# --------------------------------------------------------------------------- client events


#: Instruction prefix that makes the model speak a given text (``say``).
SAY_PREFIX = "Say exactly the following text, word for word, and nothing else: "


def encode_append(pcm: bytes) -> str:
    return dump_json({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})


COMMIT = dump_json({"type": "input_audio_buffer.commit"})
CLEAR_INPUT = dump_json({"type": "input_audio_buffer.clear"})


def encode_message(dialect: Dialect, role: str, text: str) -> str:
    """``conversation.item.create`` of a text message (user, assistant or system)."""
    kind = NAMES[dialect].assistant_text if role == "assistant" else "input_text"
    item = {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
    return dump_json({"type": "conversation.item.create", "item": item})


def encode_function_output(call_id: str, output: str) -> str:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return dump_json({"type": "conversation.item.create", "item": item})


def encode_response_create(instructions: str | None = None) -> str:
    msg: dict[str, Any] = {"type": "response.create"}
    if instructions is not None:
        msg["response"] = {"instructions": instructions}
    return dump_json(msg)


def encode_response_cancel(response_id: str | None) -> str:
    msg: dict[str, Any] = {"type": "response.cancel"}
    if response_id:
        msg["response_id"] = response_id
    return dump_json(msg)


def encode_truncate(item_id: str, content_index: int, audio_end_ms: int) -> str:
    return dump_json(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": content_index,
            "audio_end_ms": audio_end_ms,
        }
    )
