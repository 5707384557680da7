"""The Deepgram listen protocol module: options, URL, parsing, close codes, the session."""

from __future__ import annotations

import itertools
import json
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError
from antiphon.protocols import deepgram_stt as dg

RATE = 16000
BPS = RATE * 2  # linear16 mono bytes per second


def results(
    start: float,
    duration: float,
    text: str = "",
    *,
    is_final: bool = True,
    speech_final: bool = False,
    from_finalize: bool = False,
) -> str:
    words = [
        {
            "word": w.lower(),
            "start": start + i * duration / max(1, len(text.split())),
            "end": start + (i + 1) * duration / max(1, len(text.split())),
            "confidence": 0.9,
            "punctuated_word": w,
        }
        for i, w in enumerate(text.split())
    ]
    return json.dumps(
        {
            "type": "Results",
            "channel_index": [0, 1],
            "start": start,
            "duration": duration,
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {"transcript": text, "confidence": 0.9 if text else 0.0, "words": words}
                ]
            },
            "metadata": {"request_id": "r"},
        }
    )


METADATA = json.dumps({"type": "Metadata", "request_id": "r", "duration": 1.0, "channels": 1})


def pcm(seconds: float) -> bytes:
    return bytes(round(seconds * RATE) * 2)


def emitted(actions: list[dg.Action]) -> list[dg.Recognized]:
    return [a.transcript for a in actions if a.act is dg.Act.EMIT and a.transcript is not None]


# --------------------------------------------------------------------------- options


def test_query_has_raw_audio_format_and_chosen_options() -> None:
    opts = dg.ListenOptions(language="en-US", endpointing=False, utterance_end_ms=1000)
    q = opts.query()
    assert q["encoding"] == "linear16" and q["sample_rate"] == "16000"
    assert q["endpointing"] == "false" and q["utterance_end_ms"] == "1000"
    assert q["interim_results"] == "true" and q["language"] == "en-US"
    assert "smart_format" not in q  # None: the server's default
    assert dg.options_from_query(q) == opts


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encoding": "opus"}, "linear16, mulaw, alaw"),
        ({"sample_rate": 4000}, "between 8000 and 48000"),
        ({"endpointing": -5}, "milliseconds"),
        ({"endpointing": True}, "milliseconds"),
        ({"utterance_end_ms": 500}, ">= 1000"),
        ({"utterance_end_ms": 1000, "interim_results": False}, "interim_results=True"),
        ({"model": " "}, "nova-3"),
        ({"channels": 0}, "1 to 8"),
    ],
)
def test_bad_options_say_what_to_fix(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dg.ListenOptions(**kwargs)


def test_query_without_raw_format_is_refused() -> None:
    with pytest.raises(ConfigError, match="encoding and sample_rate"):
        dg.options_from_query({"model": "nova-3"})


def test_build_url_accepts_local_fakes_and_refuses_http() -> None:
    opts = dg.ListenOptions()
    assert dg.build_url("ws://127.0.0.1:9999", opts).startswith("ws://127.0.0.1:9999/v1/listen?")
    assert dg.build_url("wss://api.deepgram.com/v1/listen", opts).count("/v1/listen") == 1
    with pytest.raises(ConfigError, match=r"wss://api\.deepgram\.com"):
        dg.build_url("https://api.deepgram.com", opts)


def test_auth_header_token_or_bearer() -> None:
    assert dg.auth_headers("abc") == {"Authorization": "Token abc"}
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig"
    assert dg.auth_headers(jwt) == {"Authorization": f"Bearer {jwt}"}


# --------------------------------------------------------------------------- parsing


def test_parse_results_with_words() -> None:
    ev = dg.parse(results(1.0, 0.5, "Hello world.", speech_final=True))
    assert isinstance(ev, dg.Results)
    assert ev.transcript == "Hello world." and ev.is_final and ev.speech_final
    assert ev.end == pytest.approx(1.5)
    assert [w.punctuated_word for w in ev.words] == ["Hello", "world."]


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("{nope", dg.Malformed),
        ('{"type": 3}', dg.Malformed),
        ('{"type": "Results", "start": 0}', dg.Malformed),
        ('{"type": "UtteranceEnd"}', dg.Malformed),
        (b"\x00\x01", dg.Malformed),
        ('{"type": "SomethingNew"}', dg.Unknown),
        ('{"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 2.5}', dg.UtteranceEnd),
        ('{"type": "SpeechStarted", "channel": [0], "timestamp": 0.4}', dg.SpeechStarted),
        ('{"type": "Error", "variant": "SchemaError", "description": "bad"}', dg.ErrorMessage),
        (METADATA, dg.Metadata),
    ],
)
def test_parse_every_message_kind(frame: str | bytes, kind: type) -> None:
    assert isinstance(dg.parse(frame), kind)


def test_close_codes_map_to_typed_errors() -> None:
    auth = dg.close_error(1008, "Invalid credentials", stage="connect")
    assert isinstance(auth, AuthError) and not auth.retryable
    bad_audio = dg.close_error(1008, "DATA-0000: cannot decode", stage="receive")
    assert isinstance(bad_audio, ProviderConnectionError) and not bad_audio.retryable
    assert "encoding" in str(bad_audio)
    idle = dg.close_error(1011, "NET-0001: no audio", stage="receive")
    assert idle.retryable and "KeepAlive" in str(idle)
    assert dg.close_error(None, "", stage="receive").code == 1006
    assert dg.close_error(1003, "MESSAGE-0000", stage="send").retryable is False


# --------------------------------------------------------------------------- session


def test_utterance_segments_join_into_one_final() -> None:
    s = dg.ListenSession(dg.ListenOptions())
    s.audio(pcm(2.0))
    got = emitted(s.feed(results(0.0, 0.5, "What", is_final=False)))
    assert got[0].text == "What" and not got[0].is_final
    got = emitted(s.feed(results(0.0, 1.0, "What time")))
    assert got[0].text == "What time" and not got[0].is_final  # segment, utterance goes on
    got = emitted(s.feed(results(1.0, 0.5, "is", is_final=False)))
    assert got[0].text == "What time is"
    got = emitted(s.feed(results(1.0, 1.0, "is it?", speech_final=True)))
    assert [(g.text, g.is_final, g.utterance) for g in got] == [("What time is it?", True, 0)]
    assert got[0].start == pytest.approx(0.0) and got[0].end == pytest.approx(2.0)
    assert s.utterance == 1


def test_finalize_only_when_audio_is_unfinalized() -> None:
    s = dg.ListenSession(dg.ListenOptions())
    assert s.finalize() == []  # nothing sent: nothing owed
    s.audio(pcm(1.0))
    assert s.finalize() == [dg.FINALIZE] and s.awaiting
    assert s.finalize() == []  # the same audio is already being finalized
    s.feed(results(0.0, 1.0, "Hi.", from_finalize=True))
    assert not s.awaiting and s.finalize() == []


def test_finalize_answered_by_coverage_without_the_flag() -> None:
    s = dg.ListenSession(dg.ListenOptions())
    s.audio(pcm(1.0))
    s.finalize()
    got = emitted(s.feed(results(0.0, 1.0, "Hi there.")))  # no from_finalize
    assert not s.awaiting
    assert [g.is_final for g in got] == [True]  # the flush ended the utterance


def test_close_stream_completes_at_metadata() -> None:
    s = dg.ListenSession(dg.ListenOptions())
    s.audio(pcm(1.0))
    assert s.close_stream() == [dg.CLOSE_STREAM]
    with pytest.raises(dg.ProtocolStateError):
        s.audio(pcm(0.1))
    assert not s.lost_is_harmless()
    got = s.feed(results(0.0, 1.0, "Bye", speech_final=False))
    assert emitted(got)[0].is_final is False
    assert s.lost_is_harmless()  # everything finalized: a drop now loses nothing
    actions = s.feed(METADATA)
    assert [a.act for a in actions] == [dg.Act.EMIT, dg.Act.DONE]
    assert emitted(actions)[0].text == "Bye" and emitted(actions)[0].is_final
    assert s.done and not s.awaiting
    assert s.feed(results(0.0, 1.0, "late"))[0].act is dg.Act.DROP


def test_utterance_end_closes_the_open_utterance() -> None:
    s = dg.ListenSession(dg.ListenOptions())
    s.audio(pcm(2.0))
    s.feed(results(0.0, 1.0, "Hello"))
    got = emitted(s.feed('{"type": "UtteranceEnd", "last_word_end": 0.9}'))
    assert [(g.text, g.is_final) for g in got] == [("Hello", True)]
    assert emitted(s.feed('{"type": "UtteranceEnd", "last_word_end": 0.9}')) == []


def test_error_message_fails_and_garbage_is_dropped() -> None:
    s = dg.ListenSession(dg.ListenOptions())
    assert s.feed('{"type": "Error", "variant": "X", "description": "boom"}')[0].act is dg.Act.FAIL
    assert s.feed("{garbage")[0].act is dg.Act.DROP
    assert s.feed('{"type": "New"}')[0].act is dg.Act.DROP


def test_journal_keeps_unfinalized_audio_and_replays_it_with_an_offset() -> None:
    s = dg.ListenSession(dg.ListenOptions())
    msgs = s.audio(pcm(1.0))
    assert len(msgs) == 10 and all(len(m) == BPS // 10 for m in msgs)  # 100 ms chunks
    s.feed(results(0.0, 0.55, "First", speech_final=True))
    s.finalize()
    replay = s.replay()
    assert replay is not None and replay[-1] == dg.FINALIZE
    audio = b"".join(m for m in replay if isinstance(m, bytes))
    assert len(audio) == round(0.45 * RATE) * 2  # cut at the final's end, sample-exact
    s.begin_replay()
    assert s.offset == pytest.approx(0.55)
    got = emitted(s.feed(results(0.0, 0.45, "Second", from_finalize=True)))
    assert got[0].start == pytest.approx(0.55) and got[0].end == pytest.approx(1.0)
    assert got[0].utterance == 1 and not s.awaiting


def test_journal_overflow_means_no_replay() -> None:
    s = dg.ListenSession(dg.ListenOptions(), journal_seconds=0.5)
    s.audio(pcm(0.4))
    assert s.replay() is not None
    s.audio(pcm(0.4))
    assert s.journal.overflowed and s.replay() is None


def test_mulaw_audio_is_encoded_to_one_byte_samples() -> None:
    s = dg.ListenSession(dg.ListenOptions(encoding="mulaw", sample_rate=8000))
    msgs = s.audio(bytes(1600))  # 800 samples of int16
    assert sum(len(m) for m in msgs) == 800 and s.sent == pytest.approx(0.1)


# --------------------------------------------------------------------------- interleavings


class _Server:
    """A well-behaved listen server: answers every message, in order, on one socket."""

    def __init__(self, flag_finalize: bool) -> None:
        self.flag_finalize = flag_finalize
        self.received = 0.0
        self.finalized = 0.0
        self.out: deque[str] = deque()
        self.words = 0

    def _final(self, **flags: bool) -> None:
        if self.received - self.finalized <= 1e-9:
            return
        self.words += 1
        self.out.append(
            results(self.finalized, self.received - self.finalized, f"w{self.words}", **flags)
        )
        self.finalized = self.received

    def take(self, msg: str | bytes, endpoint: bool) -> None:
        if isinstance(msg, bytes):
            self.received += len(msg) / BPS
            self.out.append(
                results(self.finalized, self.received - self.finalized, "x", is_final=False)
            )
            if endpoint:
                self._final(speech_final=True)
        elif msg == dg.FINALIZE:
            self._final(from_finalize=self.flag_finalize)
        elif msg == dg.CLOSE_STREAM:
            self._final(speech_final=True)
            self.out.append(METADATA)


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("audio"), st.integers(1, 8)),
            st.tuples(st.just("flush"), st.just(0)),
            st.tuples(st.just("endpoint"), st.just(0)),
            st.tuples(st.just("deliver"), st.integers(1, 4)),
        ),
        max_size=40,
    ),
    flag_finalize=st.booleans(),
)
def test_any_interleaving_completes_with_ordered_finals(
    ops: list[tuple[str, int]], flag_finalize: bool
) -> None:
    """Client sends and server answers in any interleaving: the session ends exactly at
    the Metadata, nothing stays owed, finals never overlap and utterances count up."""
    s = dg.ListenSession(dg.ListenOptions())
    server = _Server(flag_finalize)
    got: list[dg.Recognized] = []
    endpoint = False

    def deliver(n: int) -> None:
        for _ in range(n):
            if not server.out:
                return
            for a in s.feed(server.out.popleft()):
                assert a.act in (dg.Act.EMIT, dg.Act.DONE, dg.Act.DROP)
                if a.transcript is not None:
                    got.append(a.transcript)

    for op, n in ops:
        if op == "audio":
            for m in s.audio(pcm(0.02 * n)):
                server.take(m, endpoint)
            endpoint = False
        elif op == "flush":
            msgs = s.finalize()
            for m in msgs:
                server.take(m, False)
            if not msgs and not s.marks:  # what the plugin does: the utterance ends here
                got.extend(t for a in s.end_utterance() if (t := a.transcript) is not None)
        elif op == "endpoint":
            endpoint = True  # the next audio ends with an endpoint
        else:
            deliver(n)
        assert not s.done
    for m in s.close_stream():
        server.take(m, False)
    deliver(10_000)
    assert s.done and not s.awaiting and not s.marks
    finals = [t for t in got if t.is_final]
    assert [f.utterance for f in finals] == list(range(len(finals)))
    for a, b in itertools.pairwise(finals):
        assert a.end <= b.start + 1e-6
    # every word the server finalized is in exactly one final transcript, in order
    words = " ".join(f.text for f in finals).split()
    assert words == [f"w{i}" for i in range(1, server.words + 1)]
    if finals:
        assert finals[-1].end == pytest.approx(s.sent)
