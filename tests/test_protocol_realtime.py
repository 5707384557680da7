"""The realtime protocol module: config, encoders, parser (GA and beta), the state machine."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError
from antiphon.protocols import realtime as rt
from antiphon.protocols.realtime import Act, Dialect, RealtimeState, SessionConfig, Voice

GA, BETA = Dialect.GA, Dialect.BETA


def ev(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def audio(dialect: Dialect, rid: str, item: str, pcm: bytes, ci: int = 0) -> str:
    return ev(
        rt.NAMES[dialect].audio_delta,
        response_id=rid,
        item_id=item,
        content_index=ci,
        delta=base64.b64encode(pcm).decode(),
    )


def created(rid: str) -> str:
    return ev("response.created", response={"id": rid, "status": "in_progress"})


def done(rid: str, status: str = "completed") -> str:
    return ev("response.done", response={"id": rid, "status": status, "usage": {"total_tokens": 3}})


# --------------------------------------------------------------------------- config


def test_voice_type_is_never_guessed_from_the_name() -> None:
    assert rt.voice_from_config("alloy") == Voice("alloy", "openai")
    with pytest.raises(ConfigError, match="not an OpenAI voice"):
        rt.voice_from_config("en-US-AvaNeural")  # a '-' does not make it Azure
    v = rt.voice_from_config({"name": "en-US-AvaNeural", "type": "azure-standard"})
    assert v.is_azure and v.wire() == {"name": "en-US-AvaNeural", "type": "azure-standard"}
    with pytest.raises(ConfigError, match="unknown voice type"):
        rt.voice_from_config({"name": "x", "type": "azure-magic"})
    with pytest.raises(ConfigError, match="endpoint_id"):
        Voice("mine", "azure-custom")
    with pytest.raises(ConfigError, match="unknown voice field"):
        rt.voice_from_config({"name": "x", "type": "openai", "colour": "blue"})
    custom = Voice("c", "azure-custom", endpoint_id="e").wire()
    assert isinstance(custom, dict) and custom["endpoint_id"] == "e"


@pytest.mark.parametrize(
    ("dialect", "cfg", "fragment"),
    [
        (GA, SessionConfig(input_rate=16000), "24000"),
        (GA, SessionConfig(voice=Voice("en-US-A", "azure-standard")), "Azure Voice Live"),
        (GA, SessionConfig(echo_cancellation={"type": "server_echo_cancellation"}), "Azure"),
        (BETA, SessionConfig(output_rate=44100), "8000"),
        (BETA, SessionConfig(tools=(rt.Tool("a"), rt.Tool("a"))), "unique"),
    ],
)
def test_what_a_dialect_cannot_carry_is_refused(
    dialect: Dialect, cfg: SessionConfig, fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        cfg.check(dialect)


def test_session_update_shapes() -> None:
    cfg = SessionConfig(
        instructions="Be kind.",
        voice=Voice("marin"),
        tools=(rt.Tool("f", "does f"),),
        noise_reduction={"type": "near_field"},
    )
    ga = json.loads(rt.encode_session_update(GA, cfg))["session"]
    assert ga["type"] == "realtime" and ga["audio"]["output"]["voice"] == "marin"
    assert ga["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert ga["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert ga["tools"][0] == {"type": "function", "name": "f", "description": "does f",
                              "parameters": {"type": "object", "properties": {}}}  # fmt: skip
    beta_cfg = SessionConfig(voice=Voice("en-US-Ava", "azure-standard"), output_rate=16000)
    beta = json.loads(rt.encode_session_update(BETA, beta_cfg))["session"]
    assert beta["voice"] == {"name": "en-US-Ava", "type": "azure-standard"}
    assert beta["output_audio_format"] == "pcm16_16000hz" and beta["input_audio_format"] == "pcm16"
    assert "audio" not in beta


def test_build_url() -> None:
    assert rt.build_url("https://r.services.ai.azure.com", "/voice-live/realtime",
                        {"api-version": "v", "model": "m"}) == (
        "wss://r.services.ai.azure.com/voice-live/realtime?api-version=v&model=m"
    )  # fmt: skip
    assert rt.build_url("ws://127.0.0.1:9/v1/realtime", "/v1/realtime", {"model": "m"}) == (
        "ws://127.0.0.1:9/v1/realtime?model=m"
    )
    with pytest.raises(ConfigError, match="wss://"):
        rt.build_url("ftp://x", "/v1/realtime", {})


def test_assistant_text_items_per_dialect() -> None:
    ga = json.loads(rt.encode_message(GA, "assistant", "hi"))
    beta = json.loads(rt.encode_message(BETA, "assistant", "hi"))
    assert ga["item"]["content"][0]["type"] == "output_text"
    assert beta["item"]["content"][0]["type"] == "text"
    assert json.loads(rt.encode_message(GA, "user", "hi"))["item"]["content"][0]["type"] == (
        "input_text"
    )


# --------------------------------------------------------------------------- parser


@pytest.mark.parametrize("dialect", [GA, BETA])
def test_parse_every_interesting_event(dialect: Dialect) -> None:
    n = rt.NAMES[dialect]

    def p(frame: str | bytes) -> rt.ServerEvent:
        return rt.parse(frame, dialect)

    a = p(audio(dialect, "r", "i", b"\x01\x02", 1))
    assert a == rt.AudioDelta("r", "i", 1, b"\x01\x02")
    assert p(ev(n.transcript_delta, response_id="r", item_id="i", delta="he")) == (
        rt.TranscriptDelta("r", "i", "he")
    )
    assert p(ev(n.transcript_done, response_id="r", item_id="i", transcript="hey")) == (
        rt.TranscriptDone("r", "i", "hey")
    )
    d = p(done("r", "cancelled"))
    assert isinstance(d, rt.ResponseDone) and d.status == "cancelled"
    assert d.usage is not None and d.usage.total_tokens == 3
    assert p(ev("input_audio_buffer.speech_started", audio_start_ms=5, item_id="u")) == (
        rt.SpeechStarted("u", 5)
    )
    err = p(ev("error", error={"type": "server_error", "code": "x", "message": "boom"}))
    assert err == rt.ServerError("server_error", "x", "boom")
    assert isinstance(p(ev("rate_limits.updated")), rt.Ignored)
    assert isinstance(p(ev(n.item_added[0])), rt.Ignored)
    assert isinstance(p("{nope"), rt.Malformed)
    assert isinstance(p(b"\x00"), rt.Malformed)
    assert isinstance(p(ev(n.audio_delta, delta="***")), rt.Malformed)
    assert isinstance(p(json.dumps([1])), rt.Malformed)
    assert isinstance(p(ev("response.brand_new")), rt.Unknown)


def test_the_other_dialects_names_are_unknown() -> None:
    assert isinstance(rt.parse(audio(BETA, "r", "i", b"\0\0"), GA), rt.Unknown)
    assert isinstance(rt.parse(audio(GA, "r", "i", b"\0\0"), BETA), rt.Unknown)


def test_close_codes_map_to_typed_errors() -> None:
    kw = {"provider": "p", "stage": "receive", "auth_hint": "check the key"}
    assert isinstance(rt.close_error(1008, "bad key", **kw), AuthError)
    e = rt.close_error(1011, "", **kw)
    assert isinstance(e, ProviderConnectionError) and e.retryable
    assert rt.close_error(None, "", **kw).code == 1006
    assert not rt.close_error(4000, "beta_api_shape_disabled", **kw).retryable


# --------------------------------------------------------------------------- state machine


def sm(dialect: Dialect = GA) -> RealtimeState:
    return RealtimeState(dialect, output_rate=24000)


def test_a_response_gets_a_generation_and_its_audio_is_delivered() -> None:
    s = sm()
    s.user_text("hi")
    assert s.awaiting
    d = s.feed(created("r1"))
    assert d.act is Act.DELIVER and d.generation == 1
    d = s.feed(audio(GA, "r1", "i1", bytes(480)))
    assert d.act is Act.DELIVER and d.generation == 1
    assert s.received_ms("i1") == pytest.approx(10.0)
    assert s.feed(done("r1")).act is Act.DELIVER
    assert not s.awaiting
    assert s.feed(audio(GA, "r1", "i1", bytes(4))).act is Act.DROP  # audio after done
    assert s.feed(done("r1")).act is Act.DROP  # a second done


def test_interrupt_cancels_truncates_and_drops_late_audio() -> None:
    s = sm()
    s.feed(created("r1"))
    s.feed(audio(GA, "r1", "i1", bytes(48000)))  # 1 s received
    msgs = [json.loads(m) for m in s.interrupt(1, played_ms=300)]
    assert msgs[0] == {"type": "response.cancel", "response_id": "r1"}
    assert msgs[1] == {"type": "conversation.item.truncate", "item_id": "i1",
                       "content_index": 0, "audio_end_ms": 300}  # fmt: skip
    assert s.generation == 2 and not s.awaiting
    late = s.feed(audio(GA, "r1", "i1", bytes(480)))
    assert late.act is Act.DROP and "cancelled" in late.note
    assert s.feed(done("r1", "cancelled")).act is Act.DELIVER  # the app learns it ended
    assert s.interrupt(2, None) == []  # nothing left to cancel or truncate


def test_truncate_never_goes_past_the_audio_received() -> None:
    s = sm()
    s.feed(created("r1"))
    s.feed(audio(GA, "r1", "i1", bytes(4800)))  # 100 ms
    msgs = [json.loads(m) for m in s.interrupt(1, played_ms=5000)]
    assert msgs[-1]["audio_end_ms"] == 100


def test_interrupt_after_done_truncates_without_cancel() -> None:
    s = sm()
    s.feed(created("r1"))
    s.feed(audio(GA, "r1", "i1", bytes(48000)))
    s.feed(done("r1"))
    msgs = [json.loads(m)["type"] for m in s.interrupt(1, played_ms=200)]
    assert msgs == ["conversation.item.truncate"]


def test_interrupt_leaves_a_newer_response_alone() -> None:
    s = sm()
    s.feed(created("r1"))
    s.feed(created("r2"))  # generation 2, created before the interrupt was processed
    assert s.interrupt(1, None) == []
    assert s.feed(audio(GA, "r2", "i2", bytes(4))).act is Act.DELIVER


def test_a_response_interrupted_before_it_was_created_is_cancelled_on_creation() -> None:
    s = sm()
    s.say("hello")
    assert s.interrupt(0, None) == []
    d = s.feed(created("r1"))
    assert d.act is Act.DROP and json.loads(d.send[0]) == {
        "type": "response.cancel",
        "response_id": "r1",
    }
    assert s.feed(audio(GA, "r1", "i", bytes(4))).act is Act.DROP


def test_function_call_arguments_accumulate() -> None:
    s = sm()
    s.feed(created("r1"))
    item = {"id": "f1", "type": "function_call", "call_id": "c1", "name": "get"}
    s.feed(ev("response.output_item.added", response_id="r1", item=item))
    for part in ['{"a"', ": 1}"]:
        d = s.feed(ev("response.function_call_arguments.delta", response_id="r1",
                      item_id="f1", call_id="c1", delta=part))  # fmt: skip
        assert d.act is Act.NOTICE
    d = s.feed(ev("response.function_call_arguments.done", response_id="r1", item_id="f1",
                  call_id="c1"))  # fmt: skip
    assert d.act is Act.DELIVER
    assert d.event == rt.FunctionCallReady("r1", "f1", "c1", "get", '{"a": 1}')
    again = s.feed(ev("response.output_item.done", response_id="r1",
                      item={**item, "arguments": '{"a": 1}'}))  # fmt: skip
    assert again.act is Act.NOTICE  # emitted once
    assert [json.loads(m)["type"] for m in s.tool_result("c1", "42")] == [
        "conversation.item.create",
        "response.create",
    ]


def test_cancel_crossing_the_end_is_not_an_error() -> None:
    s = sm()
    s.feed(created("r1"))
    s.interrupt(1, None)
    err = ev("error", error={"code": "response_cancel_not_active", "message": "none"})
    assert s.feed(err).act is Act.DROP
    other = ev("error", error={"code": "x", "message": "y"})
    assert s.feed(other).act is Act.DELIVER


def test_reconnect_replays_the_conversation_and_an_unheard_request() -> None:
    s = sm()
    s.user_text("first")
    s.feed(created("r1"))
    s.feed(audio(GA, "r1", "i1", bytes(4)))
    s.feed(ev(rt.NAMES[GA].transcript_done, response_id="r1", item_id="i1", transcript="one"))
    s.feed(done("r1"))
    s.user_text("second")  # asked, nothing heard yet
    msgs = [json.loads(m) for m in s.reconnect(SessionConfig(instructions="x"))]
    assert msgs[0]["type"] == "session.update" and msgs[0]["session"]["instructions"] == "x"
    texts = [(m["item"]["role"], m["item"]["content"][0]["text"]) for m in msgs[1:-1]]
    assert texts == [("user", "first"), ("assistant", "one"), ("user", "second")]
    assert msgs[-1] == {"type": "response.create"}
    assert s.awaiting


def test_truncated_assistant_text_is_not_replayed() -> None:
    s = sm()
    s.feed(created("r1"))
    s.feed(audio(GA, "r1", "i1", bytes(4800)))
    s.interrupt(1, 50)
    s.feed(ev(rt.NAMES[GA].transcript_done, response_id="r1", item_id="i1", transcript="long"))
    msgs = s.reconnect(SessionConfig())
    assert len(msgs) == 1  # only the session: the unheard answer is not restored as said


# --------------------------------------------------------------------------- interleavings

client_ops = st.lists(
    st.sampled_from(["text", "say", "interrupt", "tool"]), min_size=1, max_size=12
)


@settings(max_examples=200, deadline=None)
@given(ops=client_ops, schedule=st.lists(st.integers(0, 5), max_size=80))
def test_any_interleaving_never_delivers_old_audio(ops: list[str], schedule: list[int]) -> None:
    """Client calls and a well-behaved server, interleaved in any order: audio of a
    response is delivered only while it is live, with a generation that never goes
    back, and after an interrupt nothing of an older generation is delivered."""
    s = sm()
    server: list[str] = []  # server events still to come, in server order
    next_id = iter(range(1000))
    floor = 0
    last_gen = 0
    pending = list(ops)

    def server_answers() -> None:
        rid = f"r{next(next_id)}"
        server.extend([created(rid), *(audio(GA, rid, f"i{rid}", bytes(96)) for _ in range(3)),
                       done(rid)])  # fmt: skip

    for pick in [*schedule, *([0] * 200)]:
        if not pending and not server:
            break
        if pending and (pick < 2 or not server):
            op = pending.pop(0)
            if op == "text":
                s.user_text("x")
                server_answers()
            elif op == "say":
                s.say("y")
                server_answers()
            elif op == "tool":
                s.tool_result("c", "{}")
                server_answers()
            else:
                target = last_gen
                s.interrupt(target, None)
                floor = max(floor, target + 1)
                assert s.generation >= floor
        else:
            d = s.feed(server.pop(0))
            if d.act is Act.DELIVER and isinstance(d.event, rt.AudioDelta):
                assert d.generation >= floor, "audio of an interrupted generation"
                assert d.generation >= last_gen
            if d.act is Act.DELIVER:
                last_gen = max(last_gen, d.generation)
    assert not s.awaiting or s.current is None


def test_failed_response_carries_its_error_from_status_details() -> None:
    """A real failed response names its error in ``status_details.error`` (no reason)."""
    frame = json.dumps(
        {
            "type": "response.done",
            "event_id": "e",
            "response": {
                "id": "resp_1",
                "status": "failed",
                "status_details": {
                    "type": "failed",
                    "error": {"type": "server_error", "code": "rate_limited", "message": "slow"},
                },
            },
        }
    )
    ev = rt.parse(frame, rt.Dialect.GA)
    assert isinstance(ev, rt.ResponseDone) and ev.status == "failed" and ev.reason == ""
    assert ev.error == rt.ServerError("server_error", "rate_limited", "slow")
