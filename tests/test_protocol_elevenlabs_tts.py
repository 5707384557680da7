"""The ElevenLabs TTS protocol module: options, encoders, parser and the context session."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError
from antiphon.protocols import elevenlabs_tts as el
from antiphon.protocols.elevenlabs_tts import ContextSession, Phase
from antiphon.protocols.tts_session import Act, ProtocolStateError


def _msgs(msgs: list[str | bytes]) -> list[dict[str, Any]]:
    return [json.loads(m) for m in msgs]


def _audio(ctx: str | None, data: bytes = b"\x01\x02", key: str = "contextId") -> str:
    msg: dict[str, Any] = {"audio": base64.b64encode(data).decode()}
    if ctx is not None:
        msg[key] = ctx
    return json.dumps(msg)


def _final(ctx: str | None) -> str:
    return json.dumps({"isFinal": True, "contextId": ctx})


# ----------------------------------------------------------------- config


def test_url_carries_voice_and_query_parameters() -> None:
    opts = el.StreamOptions(
        voice="v0ice",
        model="eleven_turbo_v2_5",
        encoding="mulaw",
        sample_rate=8000,
        language_code="en",
        inactivity_timeout=60,
        auto_mode=True,
        apply_text_normalization="on",
    )
    url = el.build_url("wss://api.elevenlabs.io", opts)
    assert url.startswith("wss://api.elevenlabs.io/v1/text-to-speech/v0ice/multi-stream-input?")
    for part in (
        "model_id=eleven_turbo_v2_5",
        "output_format=ulaw_8000",
        "language_code=en",
        "inactivity_timeout=60",
        "auto_mode=true",
        "apply_text_normalization=on",
    ):
        assert part in url
    assert "enable_logging" not in url  # None: the server's default, nothing sent
    default = el.build_url("ws://127.0.0.1:9", el.StreamOptions())
    assert default == (
        f"ws://127.0.0.1:9/v1/text-to-speech/{el.DEFAULT_VOICE}/multi-stream-input"
        "?model_id=eleven_flash_v2_5&output_format=pcm_24000"
    )
    # A base URL that already names the endpoint or /v1 is not doubled.
    assert el.build_url("wss://h/v1", el.StreamOptions()).startswith("wss://h/v1/text-to-speech/")
    assert el.build_url(
        "wss://h/v1/text-to-speech/x/multi-stream-input", el.StreamOptions(voice="y")
    ).startswith("wss://h/v1/text-to-speech/y/multi-stream-input?")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"encoding": "mp3"}, "mp3/opus are compressed"),
        ({"encoding": "mulaw", "sample_rate": 16000}, "use one of 8000"),
        ({"sample_rate": 48000}, "8000, 16000, 22050, 24000, 44100"),
        ({"model": ""}, "model id"),
        ({"model": "eleven_v3"}, "eleven_flash_v2_5"),
        ({"voice": "no spaces please"}, "voice id"),
        ({"inactivity_timeout": 500}, "1 to 180"),
        ({"apply_text_normalization": "yes"}, "auto, on, off"),
        ({"seed": -1}, "seed"),
        ({"chunk_length_schedule": (10,)}, "between 50 and 500"),
        ({"language_code": "English"}, "ISO 639-1"),
    ],
)
def test_bad_options_are_refused_with_a_fix(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        el.StreamOptions(**kwargs)


def test_voice_settings_ranges() -> None:
    assert el.VoiceSettings(stability=0.5, use_speaker_boost=True).to_json() == {
        "stability": 0.5,
        "use_speaker_boost": True,
    }
    with pytest.raises(ConfigError, match=r"0\.7 and 1\.2"):
        el.VoiceSettings(speed=2.0)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        el.VoiceSettings(similarity_boost=1.5)


def test_output_formats() -> None:
    assert el.parse_output_format("pcm_22050") == ("linear16", 22050)
    assert el.parse_output_format("ulaw_8000") == ("mulaw", 8000)
    assert el.parse_output_format("alaw_8000") == ("alaw", 8000)
    with pytest.raises(ConfigError, match="compressed"):
        el.parse_output_format("opus_48000_64")
    with pytest.raises(ConfigError, match="pcm_24000"):
        el.parse_output_format("wav")
    assert el.resolve_format(None, None, None) == ("linear16", 24000)
    assert el.resolve_format("mulaw", None, None) == ("mulaw", 8000)
    assert el.resolve_format(None, None, "pcm_16000") == ("linear16", 16000)
    with pytest.raises(ConfigError, match="contradicts"):
        el.resolve_format("mulaw", None, "pcm_16000")


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="wss://"):
        el.build_url("https://api.elevenlabs.io", el.StreamOptions())


def test_auth_header() -> None:
    assert el.auth_headers("sk_abc") == {"xi-api-key": "sk_abc"}


# ----------------------------------------------------------------- messages


def test_encoders() -> None:
    opts = el.StreamOptions(voice_settings=el.VoiceSettings(stability=0.3))
    assert json.loads(el.encode_init("c1", opts)) == {
        "text": " ",
        "context_id": "c1",
        "voice_settings": {"stability": 0.3},
    }
    assert json.loads(el.encode_init("c1")) == {"text": " ", "context_id": "c1"}
    assert json.loads(el.encode_text("c1", "Hi ")) == {"text": "Hi ", "context_id": "c1"}
    assert json.loads(el.encode_text("c1", "Hi ", flush=True))["flush"] is True
    assert json.loads(el.encode_flush("c1")) == {"context_id": "c1", "flush": True}
    assert json.loads(el.encode_close_context("c1")) == {"context_id": "c1", "close_context": True}
    assert json.loads(el.encode_keepalive("c1")) == {"text": "", "context_id": "c1"}
    assert json.loads(el.CLOSE_SOCKET) == {"close_socket": True}
    assert json.loads(el.encode_text("c", "é ")) == {"text": "é ", "context_id": "c"}


def test_parse_every_server_message() -> None:
    assert el.parse(_audio("c1", b"ab")) == el.Audio(b"ab", "c1")
    assert el.parse(_audio("c1", b"ab", key="context_id")) == el.Audio(b"ab", "c1")
    assert el.parse(_audio(None, b"ab")) == el.Audio(b"ab", None)
    with_alignment = json.dumps(
        {
            "audio": base64.b64encode(b"xy").decode(),
            "normalizedAlignment": {"chars": ["H"], "charStartTimesMs": [0]},
            "alignment": None,
            "contextId": "c1",
            "isFinal": False,
        }
    )
    assert el.parse(with_alignment) == el.Audio(b"xy", "c1")
    assert el.parse(_final("c1")) == el.Final("c1")
    assert el.parse('{"is_final": true, "context_id": "c2"}') == el.Final("c2")
    assert el.parse('{"isFinal": true, "audio": null}') == el.Final(None)
    combined = json.dumps({"audio": base64.b64encode(b"zz").decode(), "isFinal": True})
    assert el.parse(combined) == el.Final(None, b"zz")
    err = el.parse(
        '{"message": "Maximum simultaneous contexts", "error": "max_active_conversations",'
        ' "code": 1008}'
    )
    assert err == el.ErrorMessage(
        "max_active_conversations", "Maximum simultaneous contexts", None, 1008
    )
    assert el.parse('{"error": "x", "contextId": "c3"}') == el.ErrorMessage("x", "", "c3")
    assert el.parse('{"type": "flush_done", "context_id": "c4"}') == el.FlushDone("c4")
    unknown = el.parse('{"type": "Bogus"}')
    assert isinstance(unknown, el.Unknown) and unknown.type == "Bogus"
    assert isinstance(el.parse('{"audio": null, "contextId": "c1"}'), el.Unknown)
    assert isinstance(el.parse("{not json"), el.Malformed)
    assert isinstance(el.parse("[1, 2]"), el.Malformed)
    assert isinstance(el.parse(b"\x00\x01"), el.Malformed)
    assert isinstance(el.parse('{"audio": "%%% not base64"}'), el.Malformed)


def test_close_codes_map_to_typed_errors() -> None:
    for reason in ("Invalid API key", "Invalid credentials", "Unauthorized"):
        e = el.close_error(1008, reason, stage="s")
        assert isinstance(e, AuthError) and "ELEVEN_API_KEY" in str(e)
    limit = el.close_error(1008, "max_active_conversations", stage="s")
    assert not isinstance(limit, AuthError) and not limit.retryable
    quota = el.close_error(1008, "This request exceeds your quota of 10000.", stage="s")
    assert not quota.retryable and "quota" in (quota.hint or "")
    idle = el.close_error(
        1008, "Have not received a new text input within the timeout of 20 seconds.", stage="s"
    )
    assert idle.retryable and isinstance(idle, ProviderConnectionError)
    oops = el.close_error(1008, "We are sorry, something went wrong.", stage="s")
    assert oops.retryable
    vs = el.close_error(1008, el_voice_settings_reason(), stage="s")
    assert not vs.retryable and "first message" in (vs.hint or "")
    other = el.close_error(1008, "voice_id not found", stage="s")
    assert not isinstance(other, AuthError) and not other.retryable
    e = el.close_error(1011, "boom", stage="receive")
    assert e.code == 1011 and e.retryable and "boom" in str(e)
    assert el.close_error(None, "", stage="s").code == 1006
    assert el.close_error(None, "", stage="s").retryable
    assert el.close_error(1012, "", stage="s").retryable
    assert not el.close_error(1009, "", stage="s").retryable


def el_voice_settings_reason() -> str:
    return "voice_settings field must be provided in the first message and then not change."


# ----------------------------------------------------------------- the session


def test_a_stream_opens_one_context_and_completes_at_its_final() -> None:
    s = ContextSession(context_id="c1")
    first = _msgs(s.speak("Hello there, how"))
    assert first == [
        {"text": " ", "context_id": "c1"},
        {"text": "Hello there, ", "context_id": "c1"},
    ]
    assert s.speak(" are you?") == [el.encode_text("c1", "how are ")]
    assert not s.awaiting_audio
    end = _msgs(s.end_input())
    assert end == [
        {"text": "you? ", "context_id": "c1", "flush": True},
        {"context_id": "c1", "close_context": True},
    ]
    assert s.phase is Phase.CLOSING and s.pending_flushes == 1 and s.awaiting_audio
    assert s.feed(_audio("c1", b"aa")).act is Act.DELIVER
    assert not s.done
    final = s.feed(_final("c1"))
    assert final.act is Act.STREAM_DONE and s.done and s.pending_flushes == 0
    # Anything after isFinal is stale.
    stale = s.feed(_audio("c1", b"cc"))
    assert stale.act is Act.DROP and "done" in stale.note
    assert s.feed(_final("c1")).act is Act.DROP


def test_audio_of_another_context_is_always_dropped() -> None:
    s = ContextSession(context_id="mine")
    s.speak("Hi ")
    s.flush()
    for frame in (_audio("old"), _audio(None), _final("old"), '{"error":"x","contextId":"old"}'):
        action = s.feed(frame)
        assert action.act is Act.DROP, frame
    assert s.awaiting_audio  # nothing of ours arrived yet
    assert s.feed(_audio("mine")).act is Act.DELIVER


def test_a_flush_is_owed_until_its_first_audio() -> None:
    s = ContextSession(context_id="c")
    s.speak("One. ")
    assert s.flush() == [el.encode_flush("c")]
    assert s.pending_flushes == 1 and s.flushes_sent == 1
    s.feed(_audio("c"))
    assert s.pending_flushes == 0 and not s.awaiting_audio  # no per-flush ack exists
    assert s.flush() == []  # nothing new to flush
    s.speak("Two")
    assert _msgs(s.flush()) == [{"text": "Two ", "context_id": "c", "flush": True}]


def test_flushed_before_the_send_returned_is_not_lost() -> None:
    """The state is updated when the close is decided, so an instant isFinal completes."""
    s = ContextSession(context_id="c")
    s.speak("Hi.")
    s.end_input()  # decided; the socket send has not even started
    assert s.feed(_final("c")).act is Act.STREAM_DONE


def test_blank_text_opens_no_context_and_an_empty_stream_is_done_at_once() -> None:
    s = ContextSession()
    assert s.end_input() == [] and s.done
    s2 = ContextSession()
    assert s2.speak("   ") == [] and s2.speak("") == []
    assert s2.flush() == []
    assert s2.end_input() == [] and s2.done and s2.phase is Phase.DONE


def test_partial_words_wait_and_every_text_ends_with_a_space() -> None:
    s = ContextSession(context_id="c")
    sent: list[str] = []
    for token in ["Hel", "lo", " wor", "ld.\n", "Bye"]:
        sent += [m["text"] for m in _msgs(s.speak(token)) if m["text"] != " "]
    sent += [m["text"] for m in _msgs(s.end_input()) if "text" in m]
    assert sent == ["Hello ", "world.\n ", "Bye "]
    assert "".join(sent).split() == ["Hello", "world.", "Bye"]


def test_cancel_closes_the_context_and_drops_everything_after() -> None:
    s = ContextSession(context_id="c")
    s.speak("A long answer. ")
    s.flush()
    assert s.feed(_audio("c")).act is Act.DELIVER
    assert s.clear() == [el.encode_close_context("c")]
    assert s.phase is Phase.CANCELLED and not s.awaiting_audio
    assert not ContextSession.clear_needs_ack
    assert s.feed(_audio("c")).act is Act.DROP
    assert s.feed(_final("c")).act is Act.DROP
    assert s.clear() == []  # once is enough
    with pytest.raises(ProtocolStateError):
        s.speak("more")


def test_cancel_after_the_input_ended_tells_the_server_again() -> None:
    s = ContextSession(context_id="c")
    s.speak("Bye.")
    s.end_input()
    assert s.clear() == [el.encode_close_context("c")]
    assert s.feed(_final("c")).act is Act.DROP


def test_cancel_before_anything_was_sent_sends_nothing() -> None:
    assert ContextSession().clear() == []
    done = ContextSession()
    done.end_input()
    assert done.clear() == [] and done.phase is Phase.DONE


def test_misuse_is_refused() -> None:
    s = ContextSession()
    s.speak("x")
    s.end_input()
    with pytest.raises(ProtocolStateError):
        s.speak("more")
    with pytest.raises(ProtocolStateError):
        s.flush()
    with pytest.raises(ProtocolStateError):
        s.end_input()


def test_replay_until_the_first_audio() -> None:
    s = ContextSession(context_id="c")
    s.speak("One. ")
    s.flush()
    journal = [el.encode_init("c"), el.encode_text("c", "One. "), el.encode_flush("c")]
    assert s.replay() == journal
    assert s.reset_for_replay() == journal  # the same context on a new connection
    s.feed(_audio("c"))
    assert s.replay() is None  # no per-flush ack: what was heard cannot be told apart


def test_errors_fail_and_noise_is_dropped() -> None:
    s = ContextSession(context_id="c")
    s.speak("Hi ")
    fail = s.feed('{"error": "internal", "message": "boom"}')
    assert fail.act is Act.FAIL and fail.note == "internal: boom"
    assert s.feed('{"error": "quota", "contextId": "c"}').act is Act.FAIL
    assert s.feed('{"type": "flush_done", "contextId": "c"}').act is Act.NOTICE
    assert s.feed('{"type": "flush_done", "contextId": "x"}').act is Act.DROP
    assert s.feed('{"type": "Bogus"}').act is Act.DROP
    assert s.feed("{nope").act is Act.DROP
    assert s.feed(b"\x00").act is Act.DROP


def test_final_with_audio_carries_the_last_chunk() -> None:
    s = ContextSession(context_id="c")
    s.speak("Hi.")
    s.end_input()
    combined = json.dumps(
        {"audio": base64.b64encode(b"zz").decode(), "isFinal": True, "contextId": "c"}
    )
    action = s.feed(combined)
    assert action.act is Act.STREAM_DONE and action.audio == b"zz"


def test_context_closed_by_the_server_mid_stream() -> None:
    """isFinal before the input ended: the server timed the context out (inactivity)."""
    s = ContextSession(context_id="c")
    s.speak("First. ")
    s.flush()
    s.feed(_audio("c"))
    notice = s.feed(_final("c"))
    assert notice.act is Act.NOTICE and s.phase is Phase.NEW
    assert s.context_id == "c-1"
    reopened = _msgs(s.speak("Second. "))
    assert reopened[0] == {"text": " ", "context_id": "c-1"}
    assert s.feed(_audio("c")).act is Act.DROP  # the old incarnation is stale
    s.end_input()
    assert s.feed(_final("c-1")).act is Act.STREAM_DONE

    owed = ContextSession(context_id="d")
    owed.speak("Never spoken. ")
    owed.flush()
    assert owed.feed(_final("d")).act is Act.FAIL


# A client op is ("speak", text) | ("flush",); the server answers each flush with audio,
# a close_context with isFinal, and now and then sends audio and isFinal of an old context.
client_ops = st.lists(
    st.one_of(
        st.tuples(st.just("speak"), st.sampled_from(["Hi.", " ", "", "Long", "er text. ", "a\n"])),
        st.tuples(st.just("flush"), st.just("")),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=client_ops,
    schedule=st.lists(st.integers(min_value=0, max_value=3), max_size=80),
    cancel_at=st.one_of(st.none(), st.integers(min_value=0, max_value=40)),
)
def test_any_interleaving_ends_once_and_never_delivers_stale_audio(
    ops: list[tuple[str, str]], schedule: list[int], cancel_at: int | None
) -> None:
    """Whatever order sends, answers and stale messages come in, the stream ends once."""
    s = ContextSession(context_id="now")
    wire: list[dict[str, Any]] = []  # client -> server, in order
    server_out: list[str] = []  # server -> client, in order
    script = [*ops, ("end", "")]
    done_count = 0
    delivered: list[bytes] = []
    buffered = ""  # the server's text buffer for our context
    closed = False
    steps = iter(schedule)
    step_no = 0
    cancelled = False

    def server_reads_one() -> None:
        nonlocal buffered, closed
        msg = wire.pop(0)
        assert msg["context_id"] == "now"
        if msg.get("close_context"):
            if not closed:
                closed = True
                server_out.append(_final("now"))
            return
        buffered += msg.get("text", "")
        if msg.get("flush") and buffered.strip():
            data = buffered.strip().encode()
            server_out.append(_audio("now", data))
            buffered = ""

    def client_reads_one() -> None:
        nonlocal done_count
        action = s.feed(server_out.pop(0))
        assert action.act is not Act.FAIL
        done_count += action.act is Act.STREAM_DONE
        if action.act is Act.DELIVER:
            assert not cancelled and not s.done
            delivered.append(action.audio)

    while script or wire or server_out:
        choice = next(steps, None)
        step_no += 1
        if cancel_at is not None and step_no == cancel_at and not s.done:
            wire.extend(json.loads(m) for m in s.clear())
            cancelled = True
            script.clear()
        if choice == 3:  # a stale message of an interrupted turn
            server_out.append(_audio("old", b"OLD") if step_no % 2 else _final("old"))
        elif script and (choice in (None, 0)) and not (wire and choice is None):
            op, text = script.pop(0)
            if op == "speak":
                wire.extend(json.loads(m) for m in s.speak(text))
            elif op == "flush":
                wire.extend(json.loads(m) for m in s.flush())
            else:
                wire.extend(json.loads(m) for m in s.end_input())
                done_count += s.done  # nothing was ever sent: done at once
        elif wire and (choice in (None, 1) or not server_out):
            server_reads_one()
        elif server_out:
            client_reads_one()
        elif wire:
            server_reads_one()
        elif script:
            op, text = script.pop(0)
            msgs = s.speak(text) if op == "speak" else s.flush() if op == "flush" else s.end_input()
            wire.extend(json.loads(m) for m in msgs)
            done_count += op == "end" and s.done
        assert s.pending_flushes in (0, 1)
    assert b"OLD" not in delivered
    if cancelled:
        assert done_count <= 1 and s.phase in (Phase.CANCELLED, Phase.DONE)
    else:
        assert done_count == 1 and s.done and s.phase is Phase.DONE
        # Every word spoken exactly once, in order (a flush may split a word in two).
        spoken = "".join(t for op, t in ops if op == "speak")
        assert "".join(b"".join(delivered).decode().split()) == "".join(spoken.split())
