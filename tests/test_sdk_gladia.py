"""The ``gladiaio-sdk`` as witness of the Gladia live STT fake and plugin.

The SDK's types (``gladiaio_sdk.v2.live.generated_types``) are ``dataclasses_json``
dataclasses that keep unknown keys (``CatchAll``) for forward compatibility; the witness
is strict instead (:func:`sdk_errors`): each key must be a field of the dataclass, each
field without a default must be there, and each value must fit the field's type (unions,
``Literal``\\ s, lists, nested dataclasses), at any depth.

The WebSocket STT conformance suite runs again with the ``POST /v2/live`` exchange and
every WebSocket text frame recorded: each session request the plugin sends must be a
strict ``LiveV2InitRequest``, each answer of the fake a strict ``LiveV2InitResponse``, and
each frame of the fake the SDK's message for its ``type`` (``LiveV2TranscriptMessage``,
``LiveV2SpeechStartMessage``...; an unknown ``type`` fails). The SDK types no client
message: the plugin's text frames must be those the SDK's own session sends. Then the
official ``GladiaClient(...).live_v2_async()``, given the fake's URL as ``api_url``, runs
one session on the fake.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import types
import typing
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gladiaio_sdk import GladiaClient
from gladiaio_sdk.v2.live import generated_types as gt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import test_gladia_stt
from antiphon.errors import ProviderError
from antiphon.plugins.gladia import GladiaSTT
from antiphon.protocols import gladia_stt as gl
from antiphon.testing import FaultPlan, serving
from antiphon.testing.conformance.stt_ws import FAST, PHRASES, speech
from antiphon.testing.gladia_stt import DEFAULT_API_KEY, FakeGladiaSTT
from sdk_witness import Wire, wire

__all__ = ["wire"]

pytestmark = pytest.mark.virtual_time

#: Frames a fault plan sends on purpose to test the client's tolerance.
GARBAGE = ("{this is not json", '"SomethingNew"')
#: The text frames the SDK's live session sends (``async_session.py``).
SDK_CLIENT_FRAMES = frozenset({json.dumps({"type": "stop_recording"})})


def deliberate(text: str) -> bool:
    return any(g in text for g in GARBAGE)


def sdk_errors(value: Any, tp: Any, path: str = "$") -> list[str]:
    """What is wrong with JSON ``value`` as a ``tp`` of the SDK (empty: it fits)."""
    if isinstance(tp, str):
        tp = eval(tp, vars(gt))  # the SDK's own annotation, in its own module
    if tp is Any:
        return []
    if tp is None or tp is type(None):
        return [] if value is None else [f"{path}: expected null, got {value!r:.60}"]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        branches = [sdk_errors(value, a, path) for a in args]
        if any(not b for b in branches):
            return []
        return [f"{path}: fits no branch of {tp}; nearest: {min(branches, key=len)[:3]}"]
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r:.60} not in {tp}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r:.60}"]
        return [e for i, v in enumerate(value) for e in sdk_errors(v, args[0], f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {value!r:.60}"]
        return [e for k, v in value.items() for e in sdk_errors(v, args[1], f"{path}.{k}")]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            return [f"{path}: expected an object ({tp.__name__}), got {value!r:.60}"]
        hints = typing.get_type_hints(tp, vars(gt))
        fields = {f.name: f for f in dataclasses.fields(tp) if not f.name.startswith("_")}
        errors = [f"{path}.{k}: not a field of {tp.__name__}" for k in value if k not in fields]
        errors += [
            f"{path}.{name}: missing ({tp.__name__})"
            for name, f in fields.items()
            if name not in value
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        for key, sub in value.items():
            if key in fields:
                errors += sdk_errors(sub, hints[key], f"{path}.{key}")
        return errors
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r:.60}"]
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected an integer, got {value!r:.60}"]
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number, got {value!r:.60}"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {value!r:.60}"]
    return [f"{path}: cannot check against {tp!r}"]


def assert_sdk(tp: Any, messages: list[Any], what: str) -> None:
    bad = [
        f"{json.dumps(m)[:300]}\n    {'; '.join(e)}" for m in messages if (e := sdk_errors(m, tp))
    ]
    assert not bad, f"{len(bad)} {what} message(s) the SDK rejects:\n" + "\n".join(bad)


def check_server_frames(messages: list[Any]) -> None:
    """Each frame of the fake is the SDK's message for its ``type``."""
    unknown = [m for m in messages if m.get("type") not in gt._WS_TYPE_TO_CLASS]
    assert not unknown, f"fake messages of no SDK type: {unknown[:3]}"
    for kind, tp in gt._WS_TYPE_TO_CLASS.items():
        assert_sdk(tp, [m for m in messages if m["type"] == kind], f"fake {kind}")


def check_wire(w: Wire, fake: FakeGladiaSTT) -> None:
    check_server_frames(w.messages("server", skip=deliberate))
    client = {f.text for f in w.sent_by("client")}
    assert client <= SDK_CLIENT_FRAMES, f"plugin frames the SDK never sends: {client}"
    # the HTTP exchange: each request the fake took and each answer it gave
    assert_sdk(gt.LiveV2InitRequest, fake.stats.sessions, "plugin init")
    assert_sdk(gt.LiveV2InitResponse, fake.stats.answers, "fake init")


class TestGladiaSTTConformanceUnderWitness(test_gladia_stt.TestGladiaSTTConformance):
    """Every scenario of the suite (healthy and faulty), its wire checked by the SDK."""

    @pytest.fixture(autouse=True)
    def witness(self, wire: Wire, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        fakes: list[FakeGladiaSTT] = []
        start = FakeGladiaSTT.start

        async def recorded(fake: FakeGladiaSTT) -> str:
            fakes.append(fake)
            return await start(fake)

        monkeypatch.setattr(FakeGladiaSTT, "start", recorded)
        yield
        assert fakes, "no fake ran"
        for fake in fakes:
            check_wire(wire, fake)


async def test_every_kind_the_plugin_and_fake_speak(wire: Wire) -> None:
    """Partials, finals, speech events, keyterms and the lifecycle, each kind checked."""
    async with (
        serving(FakeGladiaSTT(vocabulary=PHRASES)) as fake,
        GladiaSTT(
            api_key=DEFAULT_API_KEY,
            base_url=fake.url,
            deadlines=FAST,
            keyterms=["antiphon"],
            languages=["en"],
        ) as stt,
    ):
        finals = await stt.recognize(speech(PHRASES[0]))
    assert [f.text for f in finals] == [PHRASES[0]]
    assert {
        "start_recording",
        "speech_start",
        "speech_end",
        "transcript",
        "end_recording",
        "end_session",
    } <= wire.types("server")
    assert {f.text for f in wire.sent_by("client")} == SDK_CLIENT_FRAMES
    assert fake.stats.sessions[0]["realtime_processing"]["custom_vocabulary"] is True
    check_wire(wire, fake)


def test_the_witness_refuses_what_the_fake_used_to_send() -> None:
    """The fake's former ``error`` message has no SDK type; a careless one is refused."""
    assert "error" not in gt._WS_TYPE_TO_CLASS
    no_language = {
        "session_id": "s",
        "created_at": "2026-01-01T00:00:00.000Z",
        "type": "transcript",
        "data": {
            "id": "0",
            "is_final": True,
            "utterance": {
                "start": 0,
                "end": 1,
                "confidence": 1,
                "channel": 0,
                "words": [],
                "text": "hi",
            },
        },
    }
    assert sdk_errors(no_language, gt.LiveV2TranscriptMessage) == [
        "$.data.utterance.language: missing (LiveV2Utterance)"
    ]
    extra = {**no_language, "data": {**no_language["data"], "final": True}}  # type: ignore[dict-item]
    assert "$.data.final: not a field of LiveV2TranscriptMessageData" in sdk_errors(
        extra, gt.LiveV2TranscriptMessage
    )
    assert sdk_errors({"encoding": "wav/pcm", "bit_depth": 12}, gt.LiveV2InitRequest)


async def test_the_refused_acknowledgment_is_the_failure(wire: Wire) -> None:
    """``error_mid_stream``: an ``audio_chunk`` refusal (an SDK message), then 1011."""
    plan = FaultPlan(error_mid_stream=True, close_after_chunks=5)
    async with (
        serving(FakeGladiaSTT(plan, vocabulary=PHRASES)) as fake,
        GladiaSTT(
            api_key=DEFAULT_API_KEY, base_url=fake.url, deadlines=FAST, max_reconnects=0
        ) as stt,
    ):
        with pytest.raises(ProviderError, match="Internal server error"):
            await stt.recognize(speech(PHRASES[0]))
    refusals = [m for m in fake.sent if m["type"] == "audio_chunk"]
    assert refusals and refusals[0]["acknowledged"] is False
    check_server_frames(wire.messages("server"))


async def test_official_client_transcribes_on_the_fake(wire: Wire) -> None:
    """``GladiaClient(api_url=fake).live_v2_async().start_session(...)``: the SDK's init
    request is accepted, its audio transcribed, its ``stop_recording`` answered (with the
    acknowledgments it asks for), and every message it receives is one of its types."""
    text = PHRASES[1]
    pcm = speech(text).data
    async with FakeGladiaSTT(vocabulary=PHRASES) as fake:
        client = GladiaClient(api_key=DEFAULT_API_KEY, api_url=fake.url).live_v2_async()
        session = client.start_session(
            {
                "encoding": "wav/pcm",
                "bit_depth": 16,
                "sample_rate": 16000,
                "channels": 1,
                "endpointing": 0.3,
                "language_config": {"languages": ["en"]},
                "messages_config": {
                    "receive_partial_transcripts": True,
                    "receive_lifecycle_events": True,
                    "receive_acknowledgments": True,
                },
            }
        )
        got: list[Any] = []
        ended: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_ended(message: Any) -> None:
            if not ended.done():
                ended.set_result(message)

        session.on("message", got.append)
        session.on("ended", on_ended)
        connected = asyncio.Event()
        session.on("connected", lambda _m: connected.set())
        await asyncio.wait_for(connected.wait(), 5)
        step = 16000 * 2 // 10
        for i in range(0, len(pcm), step):
            session.send_audio(pcm[i : i + step])
            await asyncio.sleep(0.01)
        session.stop_recording()
        end = await asyncio.wait_for(ended, 5)
    kinds = [m.type for m in got]
    finals = [m for m in got if isinstance(m, gt.LiveV2TranscriptMessage) and m.data.is_final]
    assert " ".join(m.data.utterance.text for m in finals) == text
    assert "audio_chunk" in kinds and "stop_recording" in kinds
    assert kinds[:2] == ["start_session", "start_recording"]  # the first, the SDK's own
    assert kinds[-2:] == ["end_recording", "end_session"]
    assert end.code == 1000
    assert not [m for m in got if isinstance(m, gt.LiveV2UnknownWebSocketMessage)]
    body = fake.stats.sessions[0]
    assert body["messages_config"]["receive_acknowledgments"] is True  # the SDK forces it
    assert gl.options_from_init(body).sample_rate == 16000
    check_server_frames(wire.messages("server"))
    assert {f.text for f in wire.sent_by("client")} == SDK_CLIENT_FRAMES


async def test_an_unknown_client_message_is_refused_with_a_close(wire: Wire) -> None:
    """No SDK type fits an answer to it, so the fake closes 1003 instead of inventing one."""
    async with serving(FakeGladiaSTT(vocabulary=PHRASES)) as fake:
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                gl.init_url(fake.url),
                headers=gl.init_headers(DEFAULT_API_KEY),
                json=gl.LiveOptions().init_request(),
            )
        async with connect(gl.parse_init_response(answer.content).url) as ws:
            await ws.send(json.dumps({"type": "pause_recording"}))
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
        assert ws.close_code == 1003
    check_server_frames(wire.messages("server"))  # the client here is the test's own
