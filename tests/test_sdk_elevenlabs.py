"""The ``elevenlabs`` SDK as witness of the multi-context TTS fake and plugin.

The TTS conformance suite runs again with every frame recorded. Each message the fake
sends must be the SDK's ``ReceiveMessageMulti`` (``AudioOutputMulti`` or
``FinalOutputMulti``), each one the plugin sends the ``SendMessageMulti`` member its shape
names. The service's in-band error (``{"message", "error", "code"}``, sent before it
closes) has no SDK type; it is checked against that documented shape. The SDK has no
client for ``multi-stream-input``, so only its types witness here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from elevenlabs.types import (
    AudioOutputMulti,
    CloseContext,
    CloseSocket,
    FinalOutputMulti,
    FlushContext,
    InitializeConnectionMulti,
    KeepContextAlive,
    SendTextMulti,
)

from antiphon.testing.conformance.tts import TTSConformance
from sdk_witness import Wire, assert_all_valid, strict_errors, wire
from test_elevenlabs_tts import ElevenLabsHarness

__all__ = ["wire"]

GARBAGE = ("{this is not json", '"SomethingNew"')
ERROR_KEYS = {"message", "error", "code", "contextId"}


def deliberate(text: str) -> bool:
    return any(g in text for g in GARBAGE)


def server_type(msg: dict[str, Any]) -> Any:
    return FinalOutputMulti if "isFinal" in msg else AudioOutputMulti


def client_type(msg: dict[str, Any]) -> Any:
    """The ``SendMessageMulti`` member a client message is (the union has no tag)."""
    if "close_socket" in msg:
        return CloseSocket
    if "close_context" in msg:
        return CloseContext
    if "text" not in msg:
        return FlushContext
    if msg["text"] == " ":
        return InitializeConnectionMulti
    if msg["text"] == "":
        return KeepContextAlive
    return SendTextMulti


def check_wire(w: Wire) -> None:
    server = w.messages("server", skip=deliberate)
    errors = [m for m in server if "error" in m]
    for e in errors:
        assert set(e) <= ERROR_KEYS and isinstance(e["message"], str), e
    for msg in (m for m in server if "error" not in m):
        assert_all_valid(server_type(msg), [msg], "fake")
    for msg in w.messages("client"):
        assert_all_valid(client_type(msg), [msg], "plugin")


class TestTTSConformanceUnderWitness(TTSConformance):
    harness = ElevenLabsHarness()

    @pytest.fixture(autouse=True)
    def witness(self, wire: Wire) -> Iterator[None]:
        yield
        check_wire(wire)


def test_the_witness_refuses_what_the_fake_used_to_send() -> None:
    """Audio inside ``isFinal``, and a snake_case ``context_id``, are not SDK messages."""
    both = {"audio": "AAAA", "isFinal": True, "contextId": "c"}
    assert strict_errors(server_type(both), both) == ["$.audio: not a field of FinalOutputMulti"]
    snake = {"audio": "AAAA", "context_id": "c"}
    assert strict_errors(server_type(snake), snake) == [
        "$.context_id: not a field of AudioOutputMulti"
    ]
