"""The xAI TTS protocol module: options, URL, encoders, parser, close codes, state machine."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError
from antiphon.protocols import xai_tts as xai
from antiphon.protocols.tts_session import Act, ProtocolStateError, TTSSession
from antiphon.protocols.xai_tts import Phase, XAISession


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _delta(data: bytes) -> str:
    return json.dumps({"type": "audio.delta", "delta": _b64(data)})


DONE = json.dumps({"type": "audio.done", "trace_id": "t"})
CLEARED = json.dumps({"type": "audio.clear"})


# ----------------------------------------------------------------------------- options / URL


def test_defaults_match_the_provider() -> None:
    o = xai.XAIOptions()
    assert o.query() == {"voice": "eve", "language": "en", "codec": "pcm", "sample_rate": "24000"}


def test_url_carries_every_option_with_lowercase_booleans() -> None:
    opts = xai.XAIOptions(
        voice="ara",
        language="PT-br",
        encoding="ulaw",
        sample_rate=8000,
        speed=1.2,
        optimize_streaming_latency=2,
        text_normalization=True,
        with_timestamps=False,
    )
    url = xai.build_url("wss://api.x.ai", opts)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "api.x.ai", "/v1/tts")
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    assert q == {
        "voice": "ara",
        "language": "pt-BR",
        "codec": "mulaw",
        "sample_rate": "8000",
        "speed": "1.2",
        "optimize_streaming_latency": "2",
        "text_normalization": "true",
        "with_timestamps": "false",
    }
    assert opts.encoding == "mulaw"


def test_base_url_may_be_a_local_fake_or_carry_the_path() -> None:
    o = xai.XAIOptions()
    assert xai.build_url("ws://127.0.0.1:9", o).startswith("ws://127.0.0.1:9/v1/tts?")
    assert xai.build_url("ws://127.0.0.1:9/v1/tts/", o).startswith("ws://127.0.0.1:9/v1/tts?")
    oci = "wss://inference.generativeai.us-chicago-1.oci.oraclecloud.com/xai"
    assert xai.build_url(oci, o).startswith(oci + "/v1/tts?")


@pytest.mark.parametrize("bad", ["https://api.x.ai", "api.x.ai", "wss://", ""])
def test_bad_base_url_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"wss://api\.x\.ai"):
        xai.build_url(bad, xai.XAIOptions())


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"encoding": "mp3"}, "linear16"),
        ({"encoding": "wav"}, "REST"),
        ({"sample_rate": 32000}, "22050, 24000, 44100"),
        ({"sample_rate": True}, "sample_rate"),
        ({"encoding": "mulaw", "sample_rate": 24000}, "sample_rate=8000"),
        ({"encoding": "alaw", "sample_rate": 16000}, "linear16"),
        ({"language": "klingon"}, "'auto' or one of en"),
        ({"voice": ""}, "voice id"),
        ({"voice": "two words"}, "voice id"),
        ({"speed": 2.0}, "between 0.7 and 1.5"),
        ({"speed": 0.5}, "between 0.7 and 1.5"),
        ({"optimize_streaming_latency": 3}, "0, 1 or 2"),
        ({"optimize_streaming_latency": True}, "0, 1 or 2"),
        ({"text_normalization": "yes"}, "True, False or None"),
    ],
)
def test_bad_options_are_refused_with_a_fix(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        xai.XAIOptions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "canonical"), [("pcm", "linear16"), ("PCM", "linear16")])
def test_encoding_aliases(name: str, canonical: str) -> None:
    assert xai.canonical_encoding(name) == canonical
    assert xai.XAIOptions(encoding="alaw", sample_rate=8000).codec == "alaw"


def test_auth_header_is_bearer() -> None:
    assert xai.auth_headers("xai-abc") == {"Authorization": "Bearer xai-abc"}


# ----------------------------------------------------------------------------- messages


def test_text_delta_and_control_messages() -> None:
    assert [json.loads(m) for m in xai.encode_text_delta("Héllo ")] == [
        {"type": "text.delta", "delta": "Héllo "}
    ]
    assert "Héllo" in xai.encode_text_delta("Héllo")[0]  # UTF-8 as is, not \\u escapes
    assert json.loads(xai.TEXT_DONE) == {"type": "text.done"}
    assert json.loads(xai.TEXT_CLEAR) == {"type": "text.clear"}
    assert xai.encode_text_delta("") == []


def test_long_text_is_split_at_the_cap_without_losing_any() -> None:
    text = " ".join(f"word{i}" for i in range(5000))  # ~39k characters
    parts = [json.loads(m)["delta"] for m in xai.encode_text_delta(text)]
    assert len(parts) == 3
    assert all(len(p) <= xai.MAX_DELTA_CHARS for p in parts)
    assert "".join(parts) == text
    nospace = "x" * (xai.MAX_DELTA_CHARS * 2 + 5)
    assert [len(p) for p in xai.split_text(nospace)] == [15000, 15000, 5]


def test_parse_every_server_message() -> None:
    assert xai.parse(_delta(b"\x01\x02")) == xai.AudioDelta(b"\x01\x02")
    stamped = xai.parse(
        json.dumps(
            {
                "type": "audio.delta",
                "delta": "",
                "audio_timestamps": {
                    "graph_chars": ["H", "i"],
                    "graph_times": [[0, 0.1], [0.1, 0.2]],
                },
            }
        )
    )
    assert stamped == xai.AudioDelta(b"", xai.Timestamps(("H", "i"), ((0.0, 0.1), (0.1, 0.2))))
    assert xai.parse('{"type":"audio.delta"}') == xai.AudioDelta(b"")
    bad_stamps = '{"type":"audio.delta","delta":"","audio_timestamps":{"graph_chars":[]}}'
    assert xai.parse(bad_stamps) == xai.AudioDelta(b"")
    assert xai.parse(DONE) == xai.AudioDone("t")
    assert xai.parse('{"type":"audio.done"}') == xai.AudioDone("")
    assert xai.parse(CLEARED) == xai.AudioClear()
    assert xai.parse('{"type":"error","message":"boom"}') == xai.ErrorMessage("boom")
    assert xai.parse('{"type":"error","error":"old"}') == xai.ErrorMessage("old")
    nested = '{"type":"error","error":{"message":"nested"}}'
    assert xai.parse(nested) == xai.ErrorMessage("nested")
    assert xai.parse('{"type":"error"}') == xai.ErrorMessage("no message given")
    unknown = xai.parse('{"type":"audio.something_new"}')
    assert isinstance(unknown, xai.Unknown) and unknown.type == "audio.something_new"


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x01binary",
        "{not json",
        "[1,2]",
        '{"no":"type"}',
        '{"type":"audio.delta","delta":"***not base64***"}',
        '{"type":"audio.delta","delta":42}',
    ],
)
def test_garbage_is_malformed(frame: str | bytes) -> None:
    assert isinstance(xai.parse(frame), xai.Malformed)


def test_close_codes_map_to_typed_errors() -> None:
    for code, reason in [(1008, "Invalid credentials"), (1008, ""), (4001, "x"), (4003, "")]:
        err = xai.close_error(code, reason, stage="receive")
        assert isinstance(err, AuthError), (code, reason)
        assert "XAI_API_KEY" in str(err)
    policy = xai.close_error(1008, "text too long", stage="receive")
    assert not isinstance(policy, AuthError) and isinstance(policy, ProviderConnectionError)
    for dropped in (None, 1006, 1011, 1001, 1000, 1012, 1013):
        e = xai.close_error(dropped, "gone", stage="receive")
        assert type(e) is ProviderConnectionError and e.retryable, dropped
        assert e.code == (dropped if dropped is not None else 1006)
    for fatal in (1003, 1009, 1007):
        assert not xai.close_error(fatal, "", stage="send").retryable


# ----------------------------------------------------------------------------- state machine


def test_session_implements_the_protocol() -> None:
    s: TTSSession = XAISession()
    assert s.clear_needs_ack


def test_stream_completes_only_after_every_text_done_is_answered() -> None:
    s = XAISession()
    assert s.speak("Hello.") and s.flush() == [xai.TEXT_DONE]
    assert s.speak(" World.") and s.end_input() == [xai.TEXT_DONE]
    assert s.pending_flushes == 2 and s.awaiting_audio and not s.done
    assert s.feed(_delta(b"aa")).act is Act.DELIVER
    assert s.feed(DONE).act is Act.SEGMENT_DONE
    assert not s.done
    d = s.feed(_delta(b"bb"))
    assert d.act is Act.DELIVER and d.audio == b"bb"
    assert s.feed(DONE).act is Act.STREAM_DONE
    assert s.done and s.phase is Phase.IDLE and s.trace_ids == ["t", "t"]
    # Audio and markers after the done marker are stale, never delivered or counted.
    assert s.feed(_delta(b"cc")).act is Act.DROP
    assert s.feed(DONE).act is Act.DROP


def test_audio_done_before_the_send_returned_completes_the_stream() -> None:
    """The xAI race: the server answers text.done before the client's send() returned.

    end_input() counts the owed audio.done when it *returns the message*; the driver has
    not even started sending it, and the answer still completes the stream.
    """
    s = XAISession()
    s.speak("Hi.")
    msgs = s.end_input()  # decided; "the driver has not finished sending"
    assert msgs == [xai.TEXT_DONE] and s.input_ended and not s.done
    assert s.feed(_delta(b"\x00\x00")).act is Act.DELIVER
    assert s.feed(DONE).act is Act.STREAM_DONE
    assert s.done
    # Same for a flush whose answer arrives before end_input() is even called.
    s2 = XAISession()
    s2.speak("One.")
    s2.flush()
    assert s2.feed(DONE).act is Act.SEGMENT_DONE
    assert s2.end_input() == [] and s2.done


def test_audio_before_text_done_belongs_to_the_open_utterance() -> None:
    s = XAISession()
    s.speak("Streaming input may be spoken early.")
    assert s.utterance_open
    assert s.feed(_delta(b"early")).act is Act.DELIVER
    s.end_input()
    assert s.feed(DONE).act is Act.STREAM_DONE


def test_stale_audio_is_dropped_between_segments_and_before_any_text() -> None:
    s = XAISession()
    assert s.feed(_delta(b"old")).act is Act.DROP  # nothing sent yet
    s.speak("A.")
    s.flush()
    s.feed(DONE)
    stale = s.feed(_delta(b"late"))  # after the answer, before more text
    assert stale.act is Act.DROP and "no utterance open" in stale.note


def test_empty_and_garbage_messages_never_deliver() -> None:
    s = XAISession()
    s.speak("x")
    s.end_input()
    assert s.feed('{"type":"audio.delta","delta":""}').act is Act.NOTICE
    assert s.feed(b"\x00\x00").act is Act.DROP
    assert s.feed("{oops").act is Act.DROP
    assert s.feed('{"type":"audio.new"}').act is Act.DROP
    assert s.feed(CLEARED).act is Act.DROP  # no text.clear was sent
    assert not s.done and s.feed(DONE).act is Act.STREAM_DONE


def test_blank_text_sends_no_text_done_and_empty_stream_is_done_at_once() -> None:
    s = XAISession()
    assert s.end_input() == [] and s.done and not s.awaiting_audio
    s2 = XAISession()
    assert s2.speak("  ") == xai.encode_text_delta("  ")
    assert s2.flush() == []
    assert s2.end_input() == [] and s2.done


def test_clear_drops_audio_until_audio_clear() -> None:
    s = XAISession()
    s.speak("A long answer.")
    s.flush()
    assert s.feed(_delta(b"x")).act is Act.DELIVER
    assert s.clear() == [xai.TEXT_CLEAR]
    assert s.awaiting_audio and s.pending_flushes == 0
    assert s.clear() == []  # already clearing
    assert s.feed(_delta(b"old")).act is Act.DROP
    assert s.feed(DONE).act is Act.DROP
    assert s.feed(CLEARED).act is Act.CLEAR_DONE
    assert s.phase is Phase.IDLE and not s.awaiting_audio
    assert s.feed(_delta(b"older")).act is Act.DROP


def test_clear_with_unflushed_text_clears_the_server_buffer() -> None:
    s = XAISession()
    s.speak("Not flushed yet")
    assert s.clear() == [xai.TEXT_CLEAR]


def test_clear_with_nothing_outstanding_sends_nothing() -> None:
    assert XAISession().clear() == []
    s = XAISession()
    s.speak("Done.")
    s.flush()
    s.feed(DONE)
    assert s.clear() == [] and s.phase is Phase.IDLE


def test_misuse_is_refused() -> None:
    s = XAISession()
    s.speak("x")
    s.end_input()
    with pytest.raises(ProtocolStateError):
        s.speak("more")
    with pytest.raises(ProtocolStateError):
        s.flush()
    s2 = XAISession()
    s2.speak("y")
    s2.clear()
    with pytest.raises(ProtocolStateError):
        s2.speak("after clear")


def test_errors_fail() -> None:
    s = XAISession()
    s.speak("x")
    s.flush()
    action = s.feed('{"type":"error","message":"quota exceeded"}')
    assert action.act is Act.FAIL and action.note == "quota exceeded"


def test_replay_only_before_audio() -> None:
    s = XAISession()
    s.speak("One.")
    s.flush()
    assert s.replay() == [*xai.encode_text_delta("One."), xai.TEXT_DONE]
    s.feed(_delta(b"a"))
    assert s.replay() is None
    s.feed(DONE)
    s.speak("Two.")
    assert s.replay() == xai.encode_text_delta("Two.")


def test_text_sent_after_a_flush_survives_its_answer() -> None:
    s = XAISession()
    s.speak("A.")
    s.flush()
    s.speak("B.")  # sent before the server answered the first text.done
    s.flush()
    s.feed(_delta(b"a"))
    s.feed(DONE)
    assert s.replay() == [*xai.encode_text_delta("B."), xai.TEXT_DONE]
    assert s.reset_for_replay() == [*xai.encode_text_delta("B."), xai.TEXT_DONE]
    assert s.pending_flushes == 1 and s.phase is Phase.ACTIVE


# ----------------------------------------------------------------------------- interleavings

# A client op is ("speak", text) | ("flush", "") | ("cancel", ""); the script always ends
# with ("end", ""). The model server buffers text.delta, turns each text.done into a job
# it speaks one message at a time (audio chunks tagged with the utterance number, an empty
# timestamp-only delta, garbage, then audio.done), and answers text.clear by dropping its
# jobs, sending some old audio and audio.clear. After the final audio.done it may send
# stale audio. Every step is chosen by hypothesis.
TEXTS = ["Hi.", " ", "", "Longer text here.", "x" * 20]
client_ops = st.lists(
    st.one_of(
        st.tuples(st.just("speak"), st.sampled_from(TEXTS)),
        st.tuples(st.just("flush"), st.just("")),
        st.tuples(st.just("cancel"), st.just("")),
    ),
    max_size=12,
)


class _ModelServer:
    def __init__(self, stale_after_done: int, stale_after_clear: int) -> None:
        self.buffer: list[str] = []
        self.jobs: list[list[str]] = []  # each: the messages of one utterance, in order
        self.out: list[str | bytes] = []  # server -> client, in flight, in order
        self.utterances = 0
        self.expected: list[bytes] = []  # every audio chunk of every utterance, in order
        self.stale_after_done = stale_after_done
        self.stale_after_clear = stale_after_clear
        self.client_ended = False

    def read(self, raw: str | bytes) -> None:
        msg = json.loads(raw)
        if msg["type"] == "text.delta":
            self.buffer.append(msg["delta"])
        elif msg["type"] == "text.done":
            text = "".join(self.buffer)
            self.buffer.clear()
            n = self.utterances
            self.utterances += 1
            chunks = [f"u{n}:{i}".encode() for i in range(1 + len(text) % 3)]
            self.expected.extend(chunks)
            job: list[str] = [json.dumps({"type": "audio.delta", "delta": ""})]
            job += [_delta(c) for c in chunks]
            job.insert(2, "{garbage")
            job.append(DONE)
            self.jobs.append(job)
        elif msg["type"] == "text.clear":
            self.buffer.clear()
            self.jobs.clear()
            self.out.extend(_delta(b"stale-clear") for _ in range(self.stale_after_clear))
            self.out.append(CLEARED)

    def emit(self, *, more_coming: bool) -> None:
        job = self.jobs[0]
        self.out.append(job.pop(0))
        if not job:
            self.jobs.pop(0)
            # The last answer of the stream: the client can send nothing more.
            if self.client_ended and not more_coming and not self.jobs and not self.buffer:
                self.out.extend(_delta(b"stale-done") for _ in range(self.stale_after_done))


@settings(max_examples=400, deadline=None)
@given(
    ops=client_ops,
    schedule=st.lists(st.integers(0, 3), max_size=80),
    stale_after_done=st.integers(0, 2),
    stale_after_clear=st.integers(0, 2),
)
def test_any_interleaving_ends_once_and_never_delivers_stale_audio(
    ops: list[tuple[str, str]], schedule: list[int], stale_after_done: int, stale_after_clear: int
) -> None:
    """Whatever order sends, answers and a cancel interleave in, the stream ends exactly
    once, delivers exactly its own audio in order, and never audio after the end or cancel."""
    s = XAISession()
    server = _ModelServer(stale_after_done, stale_after_clear)
    wire: list[str | bytes] = []  # client -> server, in order
    script = [*ops, ("end", "")]
    delivered: list[bytes] = []
    stream_done = clear_done = 0
    cancelled = clear_sent = False
    ended_at_once = False
    steps = iter(schedule)

    def client_op() -> None:
        nonlocal cancelled, clear_sent, ended_at_once
        op, text = script.pop(0)
        if op == "speak":
            wire.extend(s.speak(text))
        elif op == "flush":
            wire.extend(s.flush())
        elif op == "cancel":
            msgs = s.clear()
            clear_sent = bool(msgs)
            wire.extend(msgs)
            cancelled = True
            script.clear()  # a cancelled stream takes no more input
        else:
            wire.extend(s.end_input())
            server.client_ended = True
            ended_at_once = s.done

    def client_read() -> None:
        nonlocal stream_done, clear_done
        action = s.feed(server.out.pop(0))
        assert action.act is not Act.FAIL
        if action.act is Act.DELIVER:
            assert not cancelled, "audio delivered after a cancel"
            assert stream_done == 0, "audio delivered after the stream ended"
            delivered.append(action.audio)
        stream_done += action.act is Act.STREAM_DONE
        clear_done += action.act is Act.CLEAR_DONE

    while True:
        moves = []
        if script:
            moves.append(client_op)
        if wire:
            moves.append(lambda: server.read(wire.pop(0)))
        if server.jobs:
            moves.append(lambda: server.emit(more_coming=bool(wire)))
        if server.out:
            moves.append(client_read)
        if not moves:
            break
        choice = next(steps, None)
        moves[choice % len(moves) if choice is not None else 0]()
        assert s.pending_flushes >= 0

    assert all(not a.startswith(b"stale") for a in delivered)
    if cancelled:
        assert stream_done == 0
        assert clear_done == (1 if clear_sent else 0)
        assert not s.awaiting_audio and s.phase is Phase.IDLE
        assert delivered == server.expected[: len(delivered)]
    else:
        assert stream_done + ended_at_once == 1
        assert s.done and s.phase is Phase.IDLE
        assert delivered == server.expected
        assert server.utterances == s.flushes_sent
