"""The ``cartesia`` SDK as witness of the Cartesia TTS fake and plugin.

The TTS conformance suite runs again with every frame recorded: each message the fake
sends must be a strict ``WebsocketResponse`` of the SDK, each one the plugin sends a
``GenerationRequest`` or a ``CancelContextRequest``. Then the official ``AsyncCartesia``
client, its ``websocket_base_url`` at the fake, speaks one context over the fake with the
credentials and API version it sends by itself (``Authorization: Bearer``, its own
``Cartesia-Version``), which the plugin now sends too.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any, cast

import pytest
from cartesia import AsyncCartesia
from cartesia.types import GenerationRequest
from cartesia.types.websocket_client_event import CancelContextRequest
from cartesia.types.websocket_response import WebsocketResponse

from antiphon.protocols import cartesia_tts as ca
from antiphon.testing.cartesia import DEFAULT_API_KEY, FakeCartesiaTTS, synthesize
from antiphon.testing.conformance.tts import TTSConformance
from sdk_witness import Wire, assert_all_valid, wire
from test_cartesia_tts import CartesiaHarness

__all__ = ["wire"]

GARBAGE = ("{this is not json", '"something_new"')


def deliberate(text: str) -> bool:
    return any(g in text for g in GARBAGE)


def client_type(msg: dict[str, Any]) -> Any:
    return CancelContextRequest if "cancel" in msg else GenerationRequest


def check_wire(w: Wire) -> None:
    assert_all_valid(WebsocketResponse, w.messages("server", skip=deliberate), "fake")
    for msg in w.messages("client"):
        assert_all_valid(client_type(msg), [msg], "plugin")


class TestTTSConformanceUnderWitness(TTSConformance):
    harness = CartesiaHarness()

    @pytest.fixture(autouse=True)
    def witness(self, wire: Wire) -> Iterator[None]:
        yield
        check_wire(wire)


async def test_official_client_speaks_a_context_over_the_fake() -> None:
    """``AsyncCartesia().tts.websocket_connect()``: one context, its chunks and ``done``."""
    text = "Hello from the official client."
    async with FakeCartesiaTTS() as fake:
        client = AsyncCartesia(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url.replace("ws://", "http://"),
            websocket_base_url=fake.url,
        )
        audio = bytearray()
        kinds: list[str] = []
        async with client.tts.websocket_connect() as conn:
            ctx = conn.context(
                model_id=ca.DEFAULT_MODEL,
                voice=cast(Any, {"mode": "id", "id": ca.DEFAULT_VOICE}),
                output_format={"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
            )
            await ctx.push(text)
            await ctx.no_more_inputs()
            async for resp in ctx.receive():
                kinds.append(resp.type)
                if resp.type == "chunk":
                    audio.extend(base64.b64decode(resp.data))
        await client.close()
    assert bytes(audio) == synthesize(text, "pcm_s16le", 24000)
    assert kinds[-1] == "done"
    (form, version) = fake.stats.handshakes[0]
    assert form == "bearer"  # the SDK's credentials...
    assert version == ca.DEFAULT_API_VERSION  # ...and API version are the plugin's defaults


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key", "query"])
async def test_the_fake_takes_every_way_to_send_the_key(header: str) -> None:
    """The SDK's ``Bearer``, the older ``X-API-Key`` and the browsers' query parameter."""
    from websockets.asyncio.client import connect

    async with FakeCartesiaTTS() as fake:
        url = f"{fake.url}{ca.PATH}?cartesia_version={ca.DEFAULT_API_VERSION}"
        headers: dict[str, str] = {}
        if header == "query":
            url += f"&api_key={DEFAULT_API_KEY}"
        else:
            prefix = "Bearer " if header == "Authorization" else ""
            headers[header] = prefix + DEFAULT_API_KEY
        async with connect(url, additional_headers=headers):
            pass
        with pytest.raises(Exception, match="401"):
            async with connect(
                url.replace(DEFAULT_API_KEY, "wrong"),
                additional_headers={
                    k: v.replace(DEFAULT_API_KEY, "wrong") for k, v in headers.items()
                },
            ):
                pass
    expected = {"Authorization": "bearer", "X-API-Key": "x-api-key", "query": "query"}[header]
    assert [form for form, _ in fake.stats.handshakes] == [expected]


async def test_the_plugin_sends_the_sdks_credentials_and_version() -> None:
    from antiphon.plugins.cartesia import CartesiaTTS

    async with (
        FakeCartesiaTTS() as fake,
        CartesiaTTS(api_key=DEFAULT_API_KEY, base_url=fake.url) as tts,
    ):
        await tts.synthesize("Hi.").collect()
    assert fake.stats.handshakes == [("bearer", "2026-08-14")]
