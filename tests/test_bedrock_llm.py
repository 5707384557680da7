"""BedrockLLM: the LLM conformance suite on the fake, plugin checks, and ``botocore`` (a
test dependency only) as the witness of the framing, the signature, the shapes and the
fake: its ``EventStreamBuffer`` parses our frames, its ``SigV4Auth`` signs as we do, its
``bedrock-runtime`` model validates the bodies and events, and its client streams from
the fake."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError
from botocore.validate import ParamValidator

from antiphon.agent.pipeline import PipelineSpec
from antiphon.agent.talk import talk
from antiphon.audio.frame import AudioFrame
from antiphon.audio.wav import read_wav
from antiphon.errors import AuthError, ConfigError, ProviderError
from antiphon.plugins.bedrock import BedrockLLM
from antiphon.protocols import aws_eventstream as es
from antiphon.protocols import bedrock_converse as bc
from antiphon.services.llm import ChatContext, LLMDeadlines, StreamState, ToolCall
from antiphon.testing.bedrock_converse import (
    ACCESS_KEY,
    DEFAULT_API_KEY,
    SECRET_KEY,
    FakeBedrockConverse,
    check_body,
)
from antiphon.testing.conformance.llm import (
    LLMFaultConformance,
    LLMHarness,
    LLMRun,
    lookup,
    read_clock,
)
from antiphon.testing.faults import FaultPlan
from antiphon.testing.openai_chat import Reply, ScriptedCall
from antiphon.testing.registry import LoopbackFakes
from antiphon.testing.server import running_in_thread, serving
from antiphon.testing.synth import tone_for_text

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


class BedrockHarness(LLMHarness):
    def __init__(self, *, sign: bool = False) -> None:
        self.sign = sign

    @contextlib.asynccontextmanager
    async def run(
        self,
        replies: Reply | Sequence[Reply],
        plan: FaultPlan,
        deadlines: LLMDeadlines,
        **options: Any,
    ) -> AsyncIterator[LLMRun]:
        fake = FakeBedrockConverse(
            plan,
            replies=replies,
            retry_after=options.pop("retry_after", "1"),
            reject_requests=options.pop("reject_requests", None),
        )
        async with serving(fake):
            key = options.pop("api_key", DEFAULT_API_KEY)
            if self.sign:
                creds: dict[str, Any] = {
                    "api_key": "",
                    "access_key": ACCESS_KEY,
                    "secret_key": SECRET_KEY if key == DEFAULT_API_KEY else "wrong",
                }
            else:
                creds = {"api_key": key}
            llm = BedrockLLM(
                MODEL,
                base_url=options.pop("base_url", fake.url),
                deadlines=deadlines,
                **creds,
                **options,
            )
            yield LLMRun(
                llm,
                ports=[fake.port],
                requests=lambda: len(fake.stats.requests),
                cancels=lambda: fake.stats.cancels,
            )


@pytest.mark.virtual_time
class TestBedrockConformance(LLMFaultConformance):
    harness = BedrockHarness()


@pytest.mark.virtual_time
class TestBedrockSigV4Conformance(LLMFaultConformance):
    """The same suite with every request signed by SigV4 (and checked by the fake)."""

    harness = BedrockHarness(sign=True)


# ----------------------------------------------------------------------------- framing


def _frame(event: str, payload: dict[str, Any]) -> bytes:
    headers = {":event-type": event, ":content-type": "application/json", ":message-type": "event"}
    return es.encode_message(headers, json.dumps(payload).encode())


def test_botocore_parses_our_frames_and_we_parse_them_byte_by_byte() -> None:
    frames = b"".join(
        _frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": f"w{i}"}})
        for i in range(5)
    )
    buffer = EventStreamBuffer()
    buffer.add_data(frames)
    theirs = [(m.headers[":event-type"], json.loads(m.payload)) for m in buffer]
    decoder = es.EventStreamDecoder()
    ours = [m for i in range(len(frames)) for m in decoder.feed(frames[i : i + 1])]
    assert [(m.header(":event-type"), json.loads(m.payload)) for m in ours] == theirs
    assert len(theirs) == 5 and decoder.pending == 0


def test_a_corrupt_or_oversized_frame_is_refused() -> None:
    frame = bytearray(_frame("metadata", {"usage": {}}))
    frame[-6] ^= 0xFF  # the payload: the message CRC no longer matches
    with pytest.raises(es.EventStreamError, match="message's CRC"):
        es.EventStreamDecoder().feed(bytes(frame))
    frame = bytearray(_frame("metadata", {"usage": {}}))
    frame[1] ^= 0x01  # the total length: the prelude CRC no longer matches
    with pytest.raises(es.EventStreamError, match="prelude"):
        es.EventStreamDecoder().feed(bytes(frame))
    big = _frame("metadata", {"pad": "x" * 2000})
    with pytest.raises(es.EventStreamError, match="at most 1000"):
        es.EventStreamDecoder(max_message=1000).feed(big)


def test_sigv4_matches_botocore() -> None:
    url = bc.converse_stream_url(MODEL, region="eu-west-3")
    body = b'{"messages": [{"role": "user", "content": [{"text": "Hi"}]}]}'
    headers = {"content-type": "application/json", "accept": "application/vnd.amazon.eventstream"}
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(Credentials("AKID", "SECRET", "TOKEN"), "bedrock", "eu-west-3").add_auth(request)
    when = dt.datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    ours = es.sigv4_headers(
        "POST",
        url,
        headers,
        body,
        service="bedrock",
        region="eu-west-3",
        access_key="AKID",
        secret_key="SECRET",
        session_token="TOKEN",
        now=when.replace(tzinfo=dt.UTC),
    )
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Security-Token"] == "TOKEN"
    assert "%3A" in url  # the model id's ':' is encoded in the path (and again when signed)


# ----------------------------------------------------------------------------- shapes


def _operation() -> Any:
    session = botocore.session.get_session()
    return session.get_service_model("bedrock-runtime").operation_model("ConverseStream")


def _validate(params: dict[str, Any], shape: Any) -> None:
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()


def test_bodies_validate_against_the_service_model() -> None:
    call = ToolCall("tooluse_1", "read_clock", "{}")
    context = (
        ChatContext()
        .system("Be brief.")
        .user("What time is it, and the weather in Paris?")
        .assistant("Let me look.", tool_calls=[call])
        .tool_result(call, "It is noon.")
    )
    body = bc.build_body(
        context.messages,
        [read_clock, lookup],
        temperature=0.3,
        top_p=0.9,
        stop_sequences=["END"],
        tool_choice="lookup",
    )
    _validate({"modelId": MODEL, **body}, _operation().input_shape)
    assert check_body(body) is None
    assert body["messages"][1]["content"][1]["toolUse"]["input"] == {}
    assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "lookup"}}


@pytest.mark.virtual_time
async def test_every_event_the_fake_sends_validates_against_the_output_shape() -> None:
    reply = Reply("Hello there.", tool_calls=(ScriptedCall("lookup", {"city": "Paris"}),))
    fake = FakeBedrockConverse(replies=reply)
    async with serving(fake), BedrockLLM(MODEL, api_key=DEFAULT_API_KEY, base_url=fake.url) as llm:
        result = await llm.chat(ChatContext().user("Hi"), tools=[lookup]).result()
    assert result.text == "Hello there." and len(result.tool_calls) == 1
    stream_shape = _operation().output_shape.members["stream"]
    names = []
    for event in fake.sent_events:
        payload = dict(event["payload"])
        payload.pop("p")  # Bedrock's padding: on the wire, not in the model
        _validate(payload, stream_shape.members[event["event"]])
        names.append(event["event"])
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]


# ----------------------------------------------------------------------------- plugin


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_BEARER_TOKEN_BEDROCK", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="AWS_BEARER_TOKEN_BEDROCK"):
        BedrockLLM(MODEL)
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
    signed = BedrockLLM(MODEL)
    assert signed.signs and signed.url.startswith("https://bedrock-runtime.eu-central-1.")
    headers = signed.request_headers(b"{}")
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-key")
    bearer = BedrockLLM(MODEL)
    assert (
        not bearer.signs and bearer.request_headers(b"{}")["authorization"] == "Bearer bedrock-key"
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"temperature": 1.5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"region": "mars"}, "region"),
        ({"extra_body": {"messages": []}}, "extra body"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        BedrockLLM(MODEL, api_key="k", **kwargs)


@pytest.mark.virtual_time
async def test_a_tool_call_and_its_result_round_trip() -> None:
    replies = [
        Reply(tool_calls=(ScriptedCall("lookup", {"city": "Paris", "days": 2}),)),
        Reply("Sunny."),
    ]
    fake = FakeBedrockConverse(replies=replies)
    async with serving(fake), BedrockLLM(MODEL, api_key=DEFAULT_API_KEY, base_url=fake.url) as llm:
        context = ChatContext().user("Weather in Paris?")
        first = await llm.chat(context, tools=[lookup]).result()
        assert first.state is StreamState.COMPLETED and first.finish_reason == "tool_calls"
        assert [(c.name, c.args()) for c in first.tool_calls] == [
            ("lookup", {"city": "Paris", "days": 2})
        ]
        (call,) = first.tool_calls
        context.assistant("", tool_calls=[call]).tool_result(call, "sunny")
        second = await llm.chat(context, tools=[lookup]).result()
        assert second.text == "Sunny." and second.usage.completion_tokens >= 1
    body = fake.stats.requests[1].json
    assert body["messages"][-1]["content"][0]["toolResult"]["toolUseId"] == call.id


@pytest.mark.virtual_time
async def test_a_wrong_signature_is_an_auth_error() -> None:
    fake = FakeBedrockConverse()
    async with serving(fake):
        llm = BedrockLLM(
            MODEL, api_key="", access_key=ACCESS_KEY, secret_key="wrong", base_url=fake.url
        )
        async with llm:
            result = await llm.chat(ChatContext().user("Hi")).result()
    assert isinstance(result.error, AuthError) and "signature" in str(result.error)


@pytest.mark.virtual_time
async def test_an_exception_event_is_a_typed_error_after_the_text() -> None:
    plan = FaultPlan(error_mid_stream=True, close_after_chunks=2)
    fake = FakeBedrockConverse(plan, replies=Reply("one two three four"))
    async with serving(fake), BedrockLLM(MODEL, api_key=DEFAULT_API_KEY, base_url=fake.url) as llm:
        result = await llm.chat(ChatContext().user("Count")).result()
    assert result.state is StreamState.FAILED and result.text == "one two"
    assert isinstance(result.error, ProviderError)
    assert "modelStreamErrorException" in str(result.error)


@pytest.mark.realtime
@pytest.mark.timeout(30)
def test_botocore_streams_from_the_fake() -> None:
    with running_in_thread(FakeBedrockConverse(replies=Reply("Hello from the fake."))) as fake:
        client = botocore.session.get_session().create_client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=fake.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        response = client.converse_stream(
            modelId=MODEL, messages=[{"role": "user", "content": [{"text": "Hi"}]}]
        )
        events = list(response["stream"])
        text = "".join(
            e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
        )
        assert text == "Hello from the fake."
        assert events[-2]["messageStop"]["stopReason"] == "end_turn"
        assert events[-1]["metadata"]["usage"]["outputTokens"] >= 1
        wrong = botocore.session.get_session().create_client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=fake.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key="wrong",
        )
        with pytest.raises(ClientError, match="signature"):
            wrong.converse_stream(
                modelId=MODEL, messages=[{"role": "user", "content": [{"text": "Hi"}]}]
            )


@pytest.mark.parametrize("tts", ["rime", "google"])
async def test_talk_with_bedrock_and_the_new_tts_on_the_fakes(tmp_path: Path, tts: str) -> None:
    """``antiphon talk --llm bedrock:MODEL --tts rime|google --fake``, end to end."""
    question = "what is the weather"
    pad = AudioFrame.silence(0.5, 16000).data
    speech = AudioFrame(pad + tone_for_text(question, 16000) + pad, 16000, 1)
    spec = PipelineSpec(
        vad="webrtc",  # tone speech: Silero rightly hears no voice in it
        stt="assemblyai",
        llm=f"bedrock:{MODEL}",
        tts=tts,
        fake=True,
        fake_vocabulary=(question, "something else"),
    )
    out = tmp_path / "reply.wav"
    result = await talk(speech, str(out), spec=spec, timeout=30, fakes=LoopbackFakes())
    assert result.heard == [question]
    assert result.replies == [f"You said: {question}"]  # the fake model echoes the user
    assert result.audio_seconds > 0.5
    assert read_wav(out).duration == pytest.approx(result.audio_seconds)
