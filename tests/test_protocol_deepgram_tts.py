"""The Deepgram TTS protocol module: encoders, parser and the connection state machine."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError
from antiphon.protocols import deepgram_tts as dg
from antiphon.protocols.deepgram_tts import Phase, SpeakSession
from antiphon.protocols.tts_session import Act, ProtocolStateError


def test_url_carries_query_parameters() -> None:
    url = dg.build_url(
        "wss://api.deepgram.com",
        dg.SpeakOptions(model="aura-2-andromeda-en", encoding="mulaw", sample_rate=8000, speed=1.2),
    )
    assert url.startswith("wss://api.deepgram.com/v1/speak?")
    assert "model=aura-2-andromeda-en" in url
    assert "encoding=mulaw" in url and "sample_rate=8000" in url and "speed=1.2" in url
    assert dg.build_url("ws://127.0.0.1:9/v1/speak", dg.SpeakOptions()).startswith(
        "ws://127.0.0.1:9/v1/speak?"
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"encoding": "mp3"}, "REST-only"),
        ({"encoding": "mulaw", "sample_rate": 24000}, "8000, 16000"),
        ({"sample_rate": 44100}, "24000"),
        ({"model": ""}, "voice id"),
        ({"speed": 3.0}, "speed"),
    ],
)
def test_bad_options_are_refused_with_a_fix(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        dg.SpeakOptions(**kwargs)  # type: ignore[arg-type]


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="wss://"):
        dg.build_url("https://api.deepgram.com", dg.SpeakOptions())


def test_auth_header_forms() -> None:
    assert dg.auth_headers("abc123") == {"Authorization": "Token abc123"}
    assert dg.auth_headers("eyJh.eyJp.sig")["Authorization"].startswith("Bearer ")


def test_speak_splits_long_text_on_whitespace_without_losing_any() -> None:
    text = " ".join(f"word{i}" for i in range(1000))
    msgs = dg.encode_speak(text)
    assert len(msgs) > 1
    parts = [json.loads(m) for m in msgs]
    assert all(p["type"] == "Speak" and len(p["text"]) <= dg.MAX_SPEAK_CHARS for p in parts)
    assert "".join(p["text"] for p in parts) == text


def test_parse_every_server_message() -> None:
    assert dg.parse(b"\x01\x02") == dg.Audio(b"\x01\x02")
    assert dg.parse('{"type":"Flushed","sequence_id":3}') == dg.Flushed(3)
    assert dg.parse('{"type":"Cleared","sequence_id":0}') == dg.Cleared(0)
    md = dg.parse(
        '{"type":"Metadata","request_id":"r","model_name":"m","model_version":"v","model_uuid":"u"}'
    )
    assert md == dg.Metadata("r", "m", "v", "u")
    assert dg.parse('{"type":"Warning","code":"W1","description":"d"}') == dg.Warning("W1", "d")
    assert dg.parse('{"type":"Warning","warn_code":"W2","warn_msg":"old"}') == dg.Warning(
        "W2", "old"
    )
    err = dg.parse('{"type":"Error","err_code":"E","description":"boom"}')
    assert err == dg.ErrorMessage("E", "boom")
    unknown = dg.parse('{"type":"Bogus"}')
    assert isinstance(unknown, dg.Unknown) and unknown.type == "Bogus"
    assert isinstance(dg.parse("{not json"), dg.Malformed)
    assert isinstance(dg.parse("[1,2]"), dg.Malformed)
    assert dg.parse('{"type":"Flushed"}') == dg.Flushed(-1)


def test_close_codes_map_to_typed_errors() -> None:
    assert isinstance(dg.close_error(1008, "invalid credentials", stage="s"), AuthError)
    data = dg.close_error(1008, "DATA-0000", stage="s")
    assert not isinstance(data, AuthError) and isinstance(data, ProviderConnectionError)
    e = dg.close_error(1011, "NET-0001", stage="receive")
    assert e.code == 1011 and e.retryable and "NET-0001" in str(e)
    assert dg.close_error(None, "", stage="s").code == 1006


def test_stream_completes_only_after_every_flush_is_answered() -> None:
    s = SpeakSession()
    assert s.speak("Hello.") and s.flush() == [dg.FLUSH]
    assert s.speak(" World.") and s.end_input() == [dg.FLUSH]
    assert s.receive(dg.Audio(b"aa")).act is Act.DELIVER
    assert s.receive(dg.Flushed(0)).act is Act.SEGMENT_DONE
    assert not s.done
    assert s.receive(dg.Audio(b"bb")).act is Act.DELIVER
    assert s.receive(dg.Flushed(1)).act is Act.STREAM_DONE
    assert s.done and s.phase is Phase.IDLE
    # Audio after the done marker is stale, never delivered.
    stale = s.receive(dg.Audio(b"cc"))
    assert stale.act is Act.DROP and "idle" in stale.note


def test_flushed_before_the_send_returned_is_not_lost() -> None:
    """The state is updated when the Flush is decided, so an instant ack completes."""
    s = SpeakSession()
    s.speak("Hi.")
    msgs = s.end_input()  # decided; the socket send has not even started
    assert msgs == [dg.FLUSH]
    assert s.receive(dg.Flushed(0)).act is Act.STREAM_DONE


def test_blank_text_sends_no_flush_and_empty_stream_is_done_at_once() -> None:
    s = SpeakSession()
    assert s.end_input() == [] and s.done
    s2 = SpeakSession()
    s2.speak("   ")
    assert s2.flush() == []
    assert s2.end_input() == [] and s2.done


def test_clear_drops_audio_until_cleared() -> None:
    s = SpeakSession()
    s.speak("A long answer.")
    s.flush()
    assert s.receive(dg.Audio(b"x")).act is Act.DELIVER
    assert s.clear() == [dg.CLEAR]
    assert s.awaiting_audio
    assert s.receive(dg.Audio(b"old")).act is Act.DROP
    assert s.receive(dg.Flushed(0)).act is Act.DROP
    assert s.receive(dg.Cleared(0)).act is Act.CLEAR_DONE
    assert s.phase is Phase.IDLE
    s.begin_stream()
    assert s.speak("Next.")


def test_clear_on_an_idle_connection_sends_nothing() -> None:
    assert SpeakSession().clear() == []


def test_misuse_is_refused() -> None:
    s = SpeakSession()
    s.speak("x")
    s.end_input()
    with pytest.raises(ProtocolStateError):
        s.speak("more")
    s2 = SpeakSession()
    s2.speak("y")
    s2.flush()
    with pytest.raises(ProtocolStateError):
        s2.begin_stream()


def test_replay_only_before_audio() -> None:
    s = SpeakSession()
    s.speak("One.")
    s.flush()
    assert s.replay() == [*dg.encode_speak("One."), dg.FLUSH]
    s.receive(dg.Audio(b"a"))
    assert s.replay() is None
    s.receive(dg.Flushed(0))
    s.speak("Two.")
    assert s.replay() == dg.encode_speak("Two.")


def test_text_sent_after_a_flush_survives_its_answer() -> None:
    s = SpeakSession()
    s.speak("A.")
    s.flush()
    s.speak("B.")  # sent before the server answered the first Flush
    s.flush()
    s.receive(dg.Audio(b"a"))
    s.receive(dg.Flushed(0))
    # The drop now would lose B unless it is still owed.
    assert s.replay() == [*dg.encode_speak("B."), dg.FLUSH]
    assert s.reset_for_replay() == [*dg.encode_speak("B."), dg.FLUSH]
    assert s.pending_flushes == 1


def test_errors_fail_and_noise_is_dropped() -> None:
    s = SpeakSession()
    assert s.receive(dg.ErrorMessage("E", "bad")).act is Act.FAIL
    assert s.receive(dg.Unknown("Bogus", {})).act is Act.DROP
    assert s.receive(dg.Malformed("x", "y")).act is Act.DROP
    assert s.receive(dg.Metadata("r")).act is Act.NOTICE
    assert s.receive(dg.Flushed(0)).act is Act.DROP


# A client op is ("speak", text) | ("flush",) | ("end",); the server answers each
# Flush with some audio then Flushed, at any point relative to later client ops.
client_ops = st.lists(
    st.one_of(
        st.tuples(st.just("speak"), st.sampled_from(["Hi.", " ", "", "Longer text here."])),
        st.tuples(st.just("flush"), st.just("")),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(ops=client_ops, schedule=st.lists(st.booleans(), max_size=60))
def test_any_interleaving_completes_exactly_once(
    ops: list[tuple[str, str]], schedule: list[bool]
) -> None:
    """Whatever order client sends and server answers interleave in, the stream ends once."""
    s = SpeakSession()
    wire: list[str | bytes] = []  # client -> server, in order
    server_out: list[dg.ServerEvent] = []  # server -> client, in order
    script = [*ops, ("end", "")]
    done_count = 0
    delivered = 0
    steps = iter(schedule)

    def server_reads_one() -> None:
        msg = json.loads(wire.pop(0))
        if msg["type"] == "Flush":
            server_out.extend([dg.Audio(b"\0\0"), dg.Flushed(0)])

    def client_reads_one() -> None:
        nonlocal done_count, delivered
        action = s.receive(server_out.pop(0))
        done_count += action.act is Act.STREAM_DONE
        delivered += action.act is Act.DELIVER
        assert action.act is not Act.FAIL

    while script or wire or server_out:
        choice = next(steps, None)
        if script and (choice is None or choice) and not (wire and choice is None):
            op, text = script.pop(0)
            if op == "speak":
                wire.extend(s.speak(text))
            elif op == "flush":
                wire.extend(s.flush())
            else:
                wire.extend(s.end_input())
                done_count += s.done  # nothing owed: done at once
        elif wire and (choice is None or not server_out):
            server_reads_one()
        elif server_out:
            client_reads_one()
        elif wire:
            server_reads_one()
        assert s.pending_flushes >= 0
    assert done_count == 1
    assert s.done and s.phase is Phase.IDLE
    assert delivered == s.flushes_sent
