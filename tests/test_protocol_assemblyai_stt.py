"""The AssemblyAI v3 protocol module on its own: audio always goes in messages the service
accepts, replay after a drop, and the parser's tolerance."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.errors import ConfigError
from antiphon.protocols import assemblyai_stt as aai

RATE = 16000


def _seconds(message: bytes, options: aai.StreamingOptions) -> float:
    return len(message) / options.bytes_per_second


@given(
    st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=30),
    st.sampled_from(["pcm_s16le", "pcm_mulaw"]),
    st.lists(st.booleans(), max_size=30),
)
def test_every_audio_message_is_50_to_1000_ms(
    pushes: list[int], encoding: str, flushes: list[bool]
) -> None:
    options = aai.StreamingOptions(sample_rate=RATE, encoding=encoding)
    session = aai.StreamingSession(options)
    sent: list[bytes] = []
    pushed = 0
    for i, samples in enumerate(pushes):
        sent += [m for m in session.audio(bytes(2 * samples)) if isinstance(m, bytes)]
        pushed += samples
        if i < len(flushes) and flushes[i]:
            sent += [m for m in session.force_endpoint() if isinstance(m, bytes)]
    sent += [m for m in session.terminate() if isinstance(m, bytes)]
    for m in sent:
        assert aai.MIN_CHUNK_SECONDS - 1e-9 <= _seconds(m, options) <= aai.MAX_CHUNK_SECONDS
    total = sum(_seconds(m, options) for m in sent)
    # everything pushed went out; padding adds less than 50 ms per flush or end
    assert pushed / RATE - 1e-9 <= total <= pushed / RATE + 0.05 * (1 + sum(flushes)) + 1e-9
    assert abs(session.sent - total) < 1e-6


def test_replay_after_a_drop_resends_what_no_final_covered() -> None:
    session = aai.StreamingSession(aai.StreamingOptions())
    first = session.audio(bytes(2 * RATE))  # 1 s: 20 messages
    assert len(first) == 20
    turn: dict[str, Any] = {
        "type": "Turn",
        "turn_order": 0,
        "turn_is_formatted": True,
        "end_of_turn": True,
        "transcript": "Hi.",
        "end_of_turn_confidence": 0.9,
        "words": [
            {"start": 100, "end": 400, "confidence": 0.9, "text": "Hi.", "word_is_final": True}
        ],
    }
    (final,) = session.feed(json.dumps(turn))
    assert final.transcript is not None and final.transcript.end == 0.4
    session.terminate()
    assert not session.lost_is_harmless()  # 0.6 s after the last word
    replay = session.begin_replay()
    assert replay[-1] == aai.TERMINATE
    assert sum(len(m) for m in replay if isinstance(m, bytes)) == 12 * 1600  # from 0.4 s
    assert session.offset == pytest.approx(0.4) and session.connections == 2
    turn["words"] = [
        {"start": 0, "end": 100, "confidence": 0.9, "text": "Hi.", "word_is_final": True}
    ]
    (again,) = session.feed(json.dumps(turn))  # turn 0 of the new connection, shifted
    assert again.transcript is not None and again.transcript.start == pytest.approx(0.4)
    assert again.transcript.utterance == 1
    assert [a.act for a in session.feed('{"type": "Termination"}')] == [aai.Act.DONE]


def test_the_parser_never_raises() -> None:
    for frame in (
        b"\x00",
        "not json",
        "[]",
        '{"type": "Turn"}',
        '{"type": "Turn", "turn_order": 0, "words": [{"text": 1}]}',
    ):
        assert isinstance(aai.parse(frame), aai.Malformed)
    assert aai.parse('{"error": "bad"}') == aai.ErrorMessage("bad")
    assert aai.parse('{"type": "Heartbeat"}') == aai.Unknown("Heartbeat")
    assert isinstance(aai.parse('{"type": "Begin", "id": "x", "expires_at": 1}'), aai.Begin)


def test_update_configuration_refuses_what_cannot_change() -> None:
    assert json.loads(aai.update_configuration(keyterms=["a"], max_turn_silence=None)) == {
        "type": "UpdateConfiguration",
        "keyterms_prompt": ["a"],
    }
    with pytest.raises(ConfigError, match="sample_rate"):
        aai.update_configuration(sample_rate=8000)
