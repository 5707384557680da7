"""The Cartesia TTS protocol module: options, encoders, parser and the context state machine."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError
from antiphon.protocols import cartesia_tts as ca
from antiphon.protocols.cartesia_tts import ContextSession, Phase
from antiphon.protocols.tts_session import Act, ProtocolStateError


def _ids(prefix: str = "ctx") -> Any:
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


def _session(**options: Any) -> ContextSession:
    return ContextSession(ca.CartesiaOptions(**options), context_ids=_ids())


def _chunk(cid: str | None, data: bytes, flush_id: int | None = None) -> str:
    msg: dict[str, Any] = {
        "type": "chunk",
        "data": base64.b64encode(data).decode(),
        "done": False,
        "status_code": 206,
        "step_time": 12.5,
    }
    if cid is not None:
        msg["context_id"] = cid
    if flush_id is not None:
        msg["flush_id"] = flush_id
    return json.dumps(msg)


def _flush_done(cid: str, flush_id: int) -> str:
    return json.dumps(
        {
            "type": "flush_done",
            "context_id": cid,
            "done": False,
            "flush_done": True,
            "flush_id": flush_id,
            "status_code": 206,
        }
    )


def _done(cid: str) -> str:
    return json.dumps({"type": "done", "context_id": cid, "done": True, "status_code": 206})


# --------------------------------------------------------------------------- options and url


def test_defaults_are_the_providers() -> None:
    o = ca.CartesiaOptions()
    assert (o.model, o.language, o.encoding, o.sample_rate) == ("sonic-2", "en", "linear16", 24000)
    assert o.cartesia_encoding == "pcm_s16le" and o.api_version == "2026-08-14"
    assert o.fixed_fields() == {
        "model_id": "sonic-2",
        "voice": {"mode": "id", "id": ca.DEFAULT_VOICE},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
        "language": "en",
    }


def test_cartesia_encoding_names_are_normalised() -> None:
    assert ca.CartesiaOptions(encoding="pcm_s16le").encoding == "linear16"
    o = ca.CartesiaOptions(encoding="pcm_alaw", sample_rate=8000)
    assert o.encoding == "alaw" and o.cartesia_encoding == "pcm_alaw"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"encoding": "mp3"}, "raw audio"),
        ({"encoding": "pcm_f32le"}, "use 'linear16'"),
        ({"encoding": "mulaw", "sample_rate": 24000}, "use one of 8000, 16000"),
        ({"sample_rate": 32000}, "8000, 16000, 22050, 24000, 44100, 48000"),
        ({"model": " "}, "sonic-2"),
        ({"voice": "not-a-uuid"}, "UUID"),
        ({"language": "English"}, "language code"),
        ({"api_version": "latest"}, "2026-08-14"),
        ({"speed": 2.0}, "0.6 and 1.5"),
        ({"volume": 0.1}, "0.5 and 2.0"),
        ({"emotion": ""}, "emotion"),
        ({"max_buffer_delay_ms": 9000}, "0 and 5000"),
    ],
)
def test_bad_options_are_refused_with_a_fix(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        ca.CartesiaOptions(**kwargs)


def test_url_carries_path_and_version() -> None:
    o = ca.CartesiaOptions(api_version="2026-03-01")
    assert (
        ca.build_url("wss://api.cartesia.ai", o)
        == "wss://api.cartesia.ai/tts/websocket?cartesia_version=2026-03-01"
    )
    assert ca.build_url("ws://127.0.0.1:9/", o).startswith("ws://127.0.0.1:9/tts/websocket?")
    assert ca.build_url("ws://127.0.0.1:9/tts/websocket", o).count("/tts/websocket") == 1
    with pytest.raises(ConfigError, match=r"wss://api\.cartesia\.ai"):
        ca.build_url("https://api.cartesia.ai", o)


def test_auth_headers() -> None:
    assert ca.auth_headers("sk_car_1") == {
        "Authorization": "Bearer sk_car_1",
        "Cartesia-Version": "2026-08-14",
    }
    assert ca.auth_headers("k", "2026-03-01")["Cartesia-Version"] == "2026-03-01"


# --------------------------------------------------------------------------- encoders


def test_generation_request_shape() -> None:
    o = ca.CartesiaOptions()
    msg = json.loads(ca.encode_generation(o, "c1", "Hello, "))
    assert msg == {
        "model_id": "sonic-2",
        "transcript": "Hello, ",
        "voice": {"mode": "id", "id": ca.DEFAULT_VOICE},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
        "language": "en",
        "context_id": "c1",
        "continue": True,
    }
    flush = json.loads(ca.encode_generation(o, "c1", "", flush=True))
    assert flush["flush"] is True and flush["transcript"] == "" and flush["continue"] is True
    end = json.loads(ca.encode_generation(o, "c1", "", cont=False))
    assert end["continue"] is False and "flush" not in end
    # Everything but transcript/continue/flush is identical on every message of a context.
    fixed = [
        {k: v for k, v in m.items() if k not in ("transcript", "continue", "flush")}
        for m in (msg, flush, end)
    ]
    assert fixed[0] == fixed[1] == fixed[2]


def test_text_is_sent_verbatim() -> None:
    msg = json.loads(ca.encode_generation(ca.CartesiaOptions(), "c", 'Ça va ? "oui" '))
    assert msg["transcript"] == 'Ça va ? "oui" '


def test_cancel_shape() -> None:
    assert json.loads(ca.encode_cancel("c9")) == {"context_id": "c9", "cancel": True}


# --------------------------------------------------------------------------- parser


def test_parse_every_server_message() -> None:
    chunk = ca.parse(_chunk("c", b"\x01\x02\x03", flush_id=2))
    assert chunk == ca.Chunk("c", b"\x01\x02\x03", 2, False)
    assert ca.parse(_flush_done("c", 1)) == ca.FlushDone("c", 1)
    assert ca.parse(_done("c")) == ca.Done("c")
    ts = ca.parse(
        '{"type":"timestamps","context_id":"c","done":false,"status_code":206,'
        '"word_timestamps":{"words":["Hi"],"start":[0],"end":[0.3]}}'
    )
    assert isinstance(ts, ca.Timestamps) and ts.kind == "timestamps" and ts.context_id == "c"
    ph = ca.parse('{"type":"phoneme_timestamps","context_id":"c","done":false}')
    assert isinstance(ph, ca.Timestamps) and ph.kind == "phoneme_timestamps"
    err = ca.parse(
        '{"type":"error","done":true,"context_id":"c","status_code":400,'
        '"title":"Invalid model","message":"no such model","error_code":"invalid_model"}'
    )
    assert err == ca.ErrorMessage("c", "no such model", 400, "invalid_model", "Invalid model")
    assert isinstance(err, ca.ErrorMessage)
    assert err.describe() == "Invalid model: no such model (status 400) [invalid_model]"
    # The older documented shape: a plain "error" string and no context.
    old = ca.parse('{"type":"error","done":true,"error":"Invalid model: x","status_code":400}')
    assert old == ca.ErrorMessage(None, "Invalid model: x", 400)


def test_parse_garbage() -> None:
    unknown = ca.parse('{"type":"something_new","context_id":"c"}')
    assert isinstance(unknown, ca.Unknown) and unknown.type == "something_new"
    for frame in ("{not json", "[1,2]", '{"no":"type"}', '{"type":3}'):
        assert isinstance(ca.parse(frame), ca.Malformed), frame
    assert isinstance(ca.parse(b"\x00\x01"), ca.Malformed)  # Cartesia sends JSON only
    bad_b64 = ca.parse('{"type":"chunk","context_id":"c","data":"@@not base64@@"}')
    assert isinstance(bad_b64, ca.Malformed) and "base64" in bad_b64.reason
    assert isinstance(ca.parse('{"type":"chunk","context_id":"c","data":5}'), ca.Malformed)
    assert ca.parse('{"type":"chunk","context_id":"c"}') == ca.Chunk("c", b"")
    assert ca.parse('{"type":"flush_done","context_id":"c","flush_id":"x"}') == ca.FlushDone("c")


# --------------------------------------------------------------------------- close codes


def test_close_codes_map_to_typed_errors() -> None:
    auth = ca.close_error(1008, "Invalid API key", stage="connect")
    assert isinstance(auth, AuthError) and "CARTESIA_API_KEY" in str(auth)
    for code in (None, 1006, 1011, 1000, 1001, 1012):
        e = ca.close_error(code, "", stage="receive")
        assert isinstance(e, ProviderConnectionError) and not isinstance(e, AuthError)
        assert e.retryable and e.code == (code or 1006), code
    assert not ca.close_error(1003, "bad", stage="receive").retryable
    assert not ca.close_error(1009, "too big", stage="send").retryable
    assert "NET" in str(ca.close_error(1011, "NET", stage="receive"))


# --------------------------------------------------------------------------- state machine


def test_stream_completes_after_every_flush_and_the_done() -> None:
    s = _session()
    assert s.context_id == "ctx-1" and s.phase is Phase.IDLE
    [m1] = s.speak("Hello.")
    [m2] = s.flush()
    assert json.loads(m1)["continue"] is True and json.loads(m2)["flush"] is True
    s.speak(" World.")
    [m3] = s.end_input()
    assert json.loads(m3)["continue"] is False
    assert s.pending_flushes == 2 and s.awaiting_audio and not s.done
    assert s.feed(_chunk("ctx-1", b"aa", 1)).act is Act.DELIVER
    assert s.feed(_flush_done("ctx-1", 1)).act is Act.SEGMENT_DONE
    assert s.pending_flushes == 1 and not s.done
    delivered = s.feed(_chunk("ctx-1", b"bb", 2))
    assert delivered.act is Act.DELIVER and delivered.audio == b"bb"
    assert s.feed(_done("ctx-1")).act is Act.STREAM_DONE
    assert s.done and s.phase is Phase.DONE and not s.awaiting_audio
    # Audio after the done marker is stale, never delivered.
    stale = s.feed(_chunk("ctx-1", b"cc"))
    assert stale.act is Act.DROP and "done" in stale.note


def test_answers_decided_before_the_send_returned_are_not_lost() -> None:
    """The state changes when the message is decided, so an instant answer completes."""
    s = _session()
    s.speak("Hi.")
    msgs = s.end_input()  # decided; the socket send has not even started
    assert len(msgs) == 1
    assert s.feed(_done("ctx-1")).act is Act.STREAM_DONE


def test_empty_stream_sends_nothing_and_is_done_at_once() -> None:
    s = _session()
    assert s.end_input() == [] and s.done and s.phase is Phase.DONE
    s2 = _session()
    assert s2.speak("   ") == []  # leading blank text starts no context
    assert s2.flush() == []
    assert s2.end_input() == [] and s2.done


def test_blank_text_inside_a_context_is_kept_but_not_flushed() -> None:
    s = _session()
    s.speak("Hello")
    s.flush()
    [space] = s.speak(" ")  # verbatim concatenation: the space separates words
    assert json.loads(space)["transcript"] == " "
    assert s.flush() == []  # nothing speakable since the last flush
    assert s.pending_flushes == 1


def test_other_contexts_and_unattributed_audio_are_dropped() -> None:
    s = _session()
    s.speak("Mine.")
    s.end_input()
    other = s.feed(_chunk("ctx-old", b"old"))
    assert other.act is Act.DROP and "another context" in other.note
    assert s.feed(_chunk(None, b"who")).act is Act.DROP
    assert s.feed(_done("ctx-old")).act is Act.DROP
    assert s.feed(_flush_done("ctx-old", 1)).act is Act.DROP
    assert s.pending_flushes == 1 and not s.done


def test_cancel_drops_everything_after_it_without_waiting_for_an_ack() -> None:
    s = _session()
    assert s.clear_needs_ack is False
    s.speak("A long answer.")
    s.flush()
    assert s.feed(_chunk("ctx-1", b"x")).act is Act.DELIVER
    assert s.clear() == [ca.encode_cancel("ctx-1")]
    assert s.phase is Phase.CANCELLED and not s.awaiting_audio and s.pending_flushes == 0
    for frame in (_chunk("ctx-1", b"old"), _flush_done("ctx-1", 1), _done("ctx-1")):
        assert s.feed(frame).act is Act.DROP
    err = '{"type":"error","done":true,"context_id":"ctx-1","message":"cancelled"}'
    assert s.feed(err).act is Act.DROP
    with pytest.raises(ProtocolStateError):
        s.speak("more")


def test_cancel_of_a_context_never_started_or_finished_sends_nothing() -> None:
    assert _session().clear() == []
    s = _session()
    s.speak("Hi.")
    s.end_input()
    s.feed(_done("ctx-1"))
    assert s.clear() == []


def test_errors_fail_only_for_this_context_or_the_connection() -> None:
    s = _session()
    s.speak("Hi.")
    s.flush()
    theirs = '{"type":"error","done":true,"context_id":"ctx-9","message":"x"}'
    assert s.feed(theirs).act is Act.DROP
    mine = s.feed('{"type":"error","done":true,"context_id":"ctx-1","title":"Bad","message":"m"}')
    assert mine.act is Act.FAIL and mine.note == "Bad: m"
    conn = s.feed('{"type":"error","done":true,"message":"rate limited","status_code":429}')
    assert conn.act is Act.FAIL and "429" in conn.note


def test_done_before_the_input_ended_fails() -> None:
    s = _session()
    s.speak("Hi.")
    s.flush()
    action = s.feed(_done("ctx-1"))
    assert action.act is Act.FAIL and "before the input ended" in action.note


def test_noise_is_dropped_and_metadata_is_a_notice() -> None:
    s = _session()
    s.speak("Hi.")
    s.flush()
    assert s.feed("{garbage").act is Act.DROP
    assert s.feed('{"type":"brand_new","context_id":"ctx-1"}').act is Act.DROP
    assert s.feed(b"\x00\x00").act is Act.DROP
    ts = '{"type":"timestamps","context_id":"ctx-1","word_timestamps":{"words":["Hi"]}}'
    assert s.feed(ts).act is Act.NOTICE
    assert s.feed(_chunk("ctx-1", b"")).act is Act.NOTICE  # no audio to deliver
    assert s.feed(_flush_done("ctx-1", 1)).act is Act.SEGMENT_DONE
    assert s.feed(_flush_done("ctx-1", 1)).act is Act.DROP  # a duplicate answers nothing


def test_audio_before_any_flush_is_delivered() -> None:
    """Cartesia may start speaking buffered text before a flush (max_buffer_delay_ms)."""
    s = _session()
    s.speak("Hello there, this is a long sentence.")
    assert not s.awaiting_audio
    assert s.feed(_chunk("ctx-1", b"early")).act is Act.DELIVER
    assert s.replay() is None  # audio was heard: nothing can be replayed


def test_misuse_is_refused() -> None:
    s = _session()
    s.speak("x")
    s.end_input()
    calls: list[Callable[[], object]] = [lambda: s.speak("more"), s.flush, s.end_input]
    for call in calls:
        with pytest.raises(ProtocolStateError):
            call()
    s2 = _session()
    s2.speak("y")
    s2.feed(_chunk("ctx-1", b"a"))
    with pytest.raises(ProtocolStateError, match="replay"):
        s2.reset_for_replay()


def test_replay_uses_a_new_context_and_only_before_audio() -> None:
    s = _session()
    s.speak("One.")
    s.flush()
    replay = s.replay()
    assert replay is not None
    assert [json.loads(m)["context_id"] for m in replay] == ["ctx-2", "ctx-2"]
    assert s.replay() == replay  # pure: the same answer until reset_for_replay
    assert s.reset_for_replay() == replay
    assert s.context_id == "ctx-2" and s.pending_flushes == 1 and s.phase is Phase.ACTIVE
    # Anything of the old context is stale now.
    assert s.feed(_chunk("ctx-1", b"old")).act is Act.DROP
    assert s.feed(_chunk("ctx-2", b"a")).act is Act.DELIVER
    assert s.replay() is None
    assert s.feed(_flush_done("ctx-2", 1)).act is Act.SEGMENT_DONE
    s.speak("Two.")
    again = s.replay()
    assert again is not None and [json.loads(m)["transcript"] for m in again] == ["Two."]


def test_text_sent_after_a_flush_survives_its_answer() -> None:
    s = _session()
    s.speak("A.")
    s.flush()
    s.speak("B.")  # sent before the server answered the first flush
    s.flush()
    s.speak(" C.")
    s.end_input()
    s.feed(_chunk("ctx-1", b"a"))
    s.feed(_flush_done("ctx-1", 1))
    msgs = s.reset_for_replay()
    sent = [(json.loads(m)["transcript"], json.loads(m).get("flush", False)) for m in msgs]
    assert sent == [("B.", False), ("", True), (" C.", False), ("", False)]
    assert s.pending_flushes == 2 and s.input_ended and not s.done
    s.feed(_flush_done("ctx-2", 1))
    assert s.feed(_done("ctx-2")).act is Act.STREAM_DONE


def test_unflushed_text_is_still_flushable_after_a_replay() -> None:
    s = _session()
    s.speak("Pending.")
    s.reset_for_replay()
    assert len(s.flush()) == 1 and s.pending_flushes == 1


# --------------------------------------------------------------------------- interleavings


class _Server:
    """A model of the service for one connection: contexts, flush ids, stale noise."""

    def __init__(self, noise: list[int]) -> None:
        self.contexts: dict[str, dict[str, Any]] = {}
        self.out: list[str | bytes] = []
        self.noise = iter(noise)

    def _noise(self) -> None:
        kind = next(self.noise, 0)
        if kind == 1:
            self.out.append(_chunk("someone-else", b"XX"))
        elif kind == 2:
            self.out.append("{garbage")
        elif kind == 3:
            self.out.append('{"type":"timestamps","context_id":"someone-else"}')

    def read(self, raw: str | bytes) -> None:
        msg = json.loads(raw)
        cid = msg["context_id"]
        if msg.get("cancel"):
            ctx = self.contexts.setdefault(cid, {"text": "", "flush_id": 1, "over": False})
            ctx["over"] = True
            return
        ctx = self.contexts.setdefault(cid, {"text": "", "flush_id": 1, "over": False})
        assert not ctx["over"], "message on a finished context"
        ctx["text"] += msg["transcript"]
        if msg["continue"] is False or msg.get("flush"):
            if ctx["text"].strip():
                self.out.append(_chunk(cid, b"ok", ctx["flush_id"]))
            self._noise()
            ctx["text"] = ""
            if msg["continue"] is False:
                ctx["over"] = True
                self.out.append(_done(cid))
                self.out.append(_chunk(cid, b"ST", ctx["flush_id"]))  # audio after done
            else:
                self.out.append(_flush_done(cid, ctx["flush_id"]))
                ctx["flush_id"] += 1


# A client op is ("speak", text) | ("flush",) | ("cancel",); the stream always ends with
# ("end",). The server reads and answers at any point relative to later client ops.
client_ops = st.lists(
    st.one_of(
        st.tuples(st.just("speak"), st.sampled_from(["Hi.", " ", "", "Longer text here."])),
        st.tuples(st.just("flush"), st.just("")),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=client_ops,
    schedule=st.lists(st.booleans(), max_size=80),
    noise=st.lists(st.integers(0, 3), max_size=20),
    cancel_at=st.one_of(st.none(), st.integers(0, 40)),
)
def test_any_interleaving_ends_once_and_never_delivers_stale_audio(
    ops: list[tuple[str, str]],
    schedule: list[bool],
    noise: list[int],
    cancel_at: int | None,
) -> None:
    """Whatever the order of sends and answers, and whatever stale noise arrives, the
    stream ends exactly once (or is cancelled), and only its own audio is delivered."""
    # A previous stream on this connection was cancelled mid-audio: its leftovers arrive.
    server = _Server(noise)
    server.out.extend([_chunk("ctx-0", b"OL"), _flush_done("ctx-0", 1), _done("ctx-0")])
    s = _session()
    wire: list[str | bytes] = []
    script = [*ops, ("end", "")]
    done_count = 0
    delivered: list[bytes] = []
    cancelled = False
    steps = iter(schedule)
    step = 0

    def client_reads_one() -> None:
        nonlocal done_count
        action = s.feed(server.out.pop(0))
        assert action.act is not Act.FAIL, action.note
        if action.act is Act.DELIVER:
            assert not cancelled and not s.done
            delivered.append(action.audio)
        done_count += action.act is Act.STREAM_DONE

    while script or wire or server.out:
        step += 1
        if cancel_at is not None and step == cancel_at and not s.done and not cancelled:
            wire.extend(s.clear())
            cancelled = True
            script.clear()
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
        elif wire and (choice is None or not server.out):
            server.read(wire.pop(0))
        elif server.out:
            client_reads_one()
        elif wire:
            server.read(wire.pop(0))
        assert s.pending_flushes >= 0
    assert all(chunk == b"ok" for chunk in delivered)  # never OL, XX or ST
    if cancelled:
        assert s.phase is Phase.CANCELLED and not s.awaiting_audio
        assert done_count <= 1
    else:
        assert done_count == 1
        assert s.done and not s.awaiting_audio
        spoken = sum(1 for op, t in ops if op == "speak" and t.strip())
        assert (len(delivered) > 0) == (spoken > 0)
