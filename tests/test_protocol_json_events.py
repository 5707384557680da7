"""json_events.parse_json_event: how the JSON protocols open a server message.

A property over arbitrary text and bytes (it never raises; it answers a Malformed or an
object with a string ``type``), one over JSON values (an object with a string ``type`` comes
back whole, anything else is Malformed), and the protocols that open with it: each answers
the same unusable messages with a Malformed that names its provider.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.protocols import (
    cartesia_tts_wire,
    deepgram_stt_wire,
    deepgram_tts,
    elevenlabs_tts_wire,
    rime_tts,
    xai_tts_wire,
)
from antiphon.protocols.json_events import Malformed, excerpt, parse_json_event
from antiphon.protocols.realtime import events as realtime_events
from antiphon.protocols.realtime.config import Dialect

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.one_of(
        st.text(), st.binary(), st.binary().map(bytearray), st.binary().map(lambda b: memoryview(b))
    )
)
def test_any_message_is_malformed_or_an_object_with_a_string_type(
    frame: str | bytes | bytearray | memoryview,
) -> None:
    got = parse_json_event(frame, provider="P")
    if isinstance(got, Malformed):
        assert "P" in got.reason and got.text == excerpt(frame)
    else:
        assert isinstance(frame, str) and isinstance(got, dict) and isinstance(got["type"], str)


@given(JSON)
def test_an_object_with_a_string_type_comes_back_whole(value: object) -> None:
    text = json.dumps(value)
    got = parse_json_event(text, provider="P")
    typed = isinstance(value, dict) and isinstance(value.get("type"), str)
    assert got == value if typed else isinstance(got, Malformed)
    untyped = parse_json_event(text, provider="P", key=None)
    assert untyped == value if isinstance(value, dict) else isinstance(untyped, Malformed)


@given(JSON, st.text())
def test_an_object_with_a_string_type_is_an_event(body: object, kind: str) -> None:
    value = {"body": body, "type": kind}
    assert parse_json_event(json.dumps(value), provider="P") == value


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x00\x01", "binary frame (Acme sends JSON text only)"),
        (bytearray(b"{}"), "binary frame (Acme sends JSON text only)"),
        ("{nope", "invalid JSON from Acme: "),
        ("", "invalid JSON from Acme: "),
        ("[" * 100_000 + "]" * 100_000, "JSON from Acme nested too deep"),
        ("[1]", "JSON message from Acme that is not an object"),
        ('"type"', "JSON message from Acme that is not an object"),
        ("{}", "JSON message from Acme without a string 'type'"),
        ('{"type": 3}', "JSON message from Acme without a string 'type'"),
        ('{"type": null}', "JSON message from Acme without a string 'type'"),
    ],
)
def test_each_unusable_message_says_why(frame: str | bytes | bytearray, reason: str) -> None:
    got = parse_json_event(frame, provider="Acme")
    assert isinstance(got, Malformed) and got.reason.startswith(reason)
    assert got.text == excerpt(frame)


def test_the_excerpt_is_the_start_of_the_message() -> None:
    assert excerpt("x" * 500) == "x" * 200
    assert excerpt(b"\x00" * 100) == repr(b"\x00" * 50)
    assert excerpt(memoryview(b"ab")) == "b'ab'"


def test_a_key_other_than_type() -> None:
    assert parse_json_event('{"event": "x"}', provider="P", key="event") == {"event": "x"}
    got = parse_json_event('{"type": "x"}', provider="P", key="event")
    assert isinstance(got, Malformed) and got.reason.endswith("without a string 'event'")


PARSERS: dict[str, tuple[Callable[[str | bytes], object], str]] = {
    "xai_tts": (xai_tts_wire.parse, "xAI"),
    "cartesia_tts": (cartesia_tts_wire.parse, "Cartesia"),
    "rime_tts": (rime_tts.parse, "Rime"),
    "elevenlabs_tts": (elevenlabs_tts_wire.parse, "ElevenLabs"),
    "deepgram_tts": (deepgram_tts.parse, "Deepgram"),
    "deepgram_stt": (deepgram_stt_wire.parse, "Deepgram"),
    "realtime": (lambda f: realtime_events.parse(f, Dialect.GA), "the realtime server"),
}
UNTYPED = {"elevenlabs_tts"}  # its messages carry no "type"; any object is read
BINARY_AUDIO = {"deepgram_tts"}  # a binary frame is audio


@pytest.mark.parametrize("name", sorted(PARSERS))
@pytest.mark.parametrize("frame", [b"\x00\x01", "{nope", "[1]", '{"type": 3}'])
def test_each_protocol_opens_a_message_the_shared_way(name: str, frame: str | bytes) -> None:
    parse, provider = PARSERS[name]
    if isinstance(frame, bytes) and name in BINARY_AUDIO:
        assert not isinstance(parse(frame), Malformed)
        return
    want = parse_json_event(frame, provider=provider, key=None if name in UNTYPED else "type")
    got = parse(frame)
    if isinstance(want, Malformed):
        assert got == want and provider in want.reason
    else:  # {"type": 3} for ElevenLabs: an object, read by its own fields
        assert not isinstance(got, Malformed)
