"""The ``openai`` SDK as witness of what xAI's voice agent shares with OpenAI Realtime GA.

``xai-sdk`` (1.21.0) has no types for the voice agent API (it is a gRPC client of other
services), so there is no xAI witness. The part of the protocol that xAI documents as
the same as OpenAI's GA schema is checked against the ``openai`` SDK's strict
``RealtimeServerEvent`` / ``RealtimeClientEvent``: the xAI conformance suite runs with
every frame recorded, and every frame but xAI's own (the ``conversation.created``
greeting, ``ping``, the ``session`` of ``session.update``/``session.updated``,
``force_message`` items) must validate. Those are checked by ``tests/test_xai_realtime.py``
against xAI's documents only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

from sdk_witness import Wire, assert_all_valid, wire
from test_sdk_openai import SESSION_GAPS, deliberate
from test_xai_realtime import TestXAIRealtimeConformance as _XAIConformance

__all__ = ["wire"]

#: Server events that are xAI's own shape (see the module docstring).
XAI_SERVER = frozenset({"conversation.created", "ping", "session.updated"})


def shared(messages: list[Any], own: frozenset[str]) -> list[Any]:
    return [
        m
        for m in messages
        if m.get("type") not in own and (m.get("item") or {}).get("type") != "force_message"
    ]


def check_shared_wire(w: Wire) -> None:
    server = shared(w.messages("server", skip=deliberate), XAI_SERVER)
    client = shared(w.messages("client", skip=deliberate), frozenset({"session.update"}))
    assert_all_valid(RealtimeServerEvent, server, "fake", sdk_gaps=SESSION_GAPS)
    assert_all_valid(RealtimeClientEvent, client, "plugin")


class TestXAIConformanceUnderOpenAIWitness(_XAIConformance):
    """Every scenario of the xAI suite; its shared-schema frames checked by the SDK."""

    @pytest.fixture(autouse=True)
    def witness(self, wire: Wire) -> Iterator[None]:
        yield
        check_shared_wire(wire)
        if wire.types("server"):  # a session started: it was greeted the xAI way
            assert "conversation.created" in wire.types("server")
