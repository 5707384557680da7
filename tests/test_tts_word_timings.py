"""Word timings through the TTS protocol sessions: each provider's time base, one shape."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.protocols import cartesia_tts as ca
from antiphon.protocols import elevenlabs_tts as el
from antiphon.protocols import xai_tts as xai
from antiphon.protocols.tts_session import Act, CharWords, WordTiming


def test_char_words_groups_characters_across_messages() -> None:
    words = CharWords()
    first = words.feed([("H", 0.0, 0.1), ("i", 0.1, 0.2), (" ", 0.2, 0.25), ("y", 0.3, 0.4)])
    assert first == (WordTiming("Hi", 0.0, 0.2),)
    # "you" is cut between two messages; it ends at the next space or at finish()
    assert words.feed([("o", 0.4, 0.5), ("u", 0.5, 0.6)]) == ()
    assert words.finish() == (WordTiming("you", 0.3, 0.6),)
    assert words.finish() == ()


@given(st.lists(st.text(alphabet="ab ", min_size=1, max_size=1), max_size=40))
def test_char_words_keeps_every_word_in_order(chars: list[str]) -> None:
    text = "".join(chars)
    words = CharWords()
    timed = [(c, i * 0.1, (i + 1) * 0.1) for i, c in enumerate(text)]
    out = [*words.feed(timed[: len(timed) // 2]), *words.feed(timed[len(timed) // 2 :])]
    out += words.finish()
    assert [w.word for w in out] == text.split()
    assert all(w.start <= w.end for w in out)


def _xai_delta(chars: str, times: list[list[float]], audio: bytes = b"") -> str:
    return json.dumps(
        {
            "type": "audio.delta",
            "delta": base64.b64encode(audio).decode(),
            "audio_timestamps": {"graph_chars": list(chars), "graph_times": times},
        }
    )


def test_xai_timestamps_become_segment_words_even_without_audio() -> None:
    s = xai.XAISession()
    s.speak("Hi you")
    s.end_input()
    times = [[0.0, 0.1], [0.1, 0.2], [0.2, 0.2], [0.2, 0.3], [0.3, 0.4], [0.4, 0.5]]
    a = s.feed(_xai_delta("Hi you", times))
    assert a.act is Act.NOTICE and a.words == (WordTiming("Hi", 0.0, 0.2),)
    assert s.feed(_xai_delta("", [], b"\x00\x00")).act is Act.DELIVER
    done = s.feed(json.dumps({"type": "audio.done", "trace_id": "t"}))
    assert done.act is Act.STREAM_DONE and done.words == (WordTiming("you", 0.2, 0.5),)


def test_xai_inconsistent_timestamps_are_ignored() -> None:
    event = xai.parse(_xai_delta("ab", [[0.0, 0.1]]))
    assert isinstance(event, xai.AudioDelta) and event.timestamps is None


def _el_audio(ctx: str, audio: bytes, chars: str, starts: list[int], final: bool = False) -> str:
    msg: dict[str, object] = {
        "audio": base64.b64encode(audio).decode(),
        "alignment": {
            "chars": list(chars),
            "charStartTimesMs": starts,
            "charDurationsMs": [50] * len(chars),
        },
        "contextId": ctx,
    }
    if final:
        msg["isFinal"] = True
    return json.dumps(msg)


def test_elevenlabs_chunk_relative_alignment_is_added_up() -> None:
    """Each chunk's alignment counts from that chunk's start; the session adds the
    seconds of the context's audio before it (16 kHz linear16: 32,000 bytes a second)."""
    s = el.ContextSession(el.StreamOptions(encoding="linear16", sample_rate=16000), context_id="c")
    s.speak("Hi there ")
    s.end_input()
    half_second = bytes(16000)
    a = s.feed(_el_audio("c", half_second, "Hi th", [0, 50, 100, 150, 200]))
    assert a.act is Act.DELIVER and a.words == (WordTiming("Hi", 0.0, 0.1),)
    b = s.feed(_el_audio("c", half_second, "ere ", [0, 50, 100, 150]))
    assert b.words == (WordTiming("there", 0.15, 0.65),)
    final = s.feed(json.dumps({"isFinal": True, "contextId": "c"}))
    assert final.act is Act.STREAM_DONE and final.words == ()


def test_elevenlabs_alignment_missing_or_inconsistent_gives_no_words() -> None:
    assert el._alignment(None) is None
    assert el._alignment({"chars": ["a"], "charStartTimesMs": [], "charDurationsMs": []}) is None


def _ca_words(ctx: str, words: list[str], start: list[float], end: list[float]) -> str:
    return json.dumps(
        {
            "type": "timestamps",
            "context_id": ctx,
            "done": False,
            "status_code": 206,
            "word_timestamps": {"words": words, "start": start, "end": end},
        }
    )


def _ca_chunk(ctx: str, audio: bytes) -> str:
    return json.dumps(
        {
            "type": "chunk",
            "context_id": ctx,
            "data": base64.b64encode(audio).decode(),
            "done": False,
            "status_code": 206,
        }
    )


def test_cartesia_context_timings_become_segment_relative() -> None:
    """Cartesia counts from the context's start; after a flush_done the session hands
    them on relative to the segment (the driver adds the stream's offset)."""
    s = ca.ContextSession(ca.CartesiaOptions(sample_rate=16000, add_timestamps=True))
    cid = s.context_id
    s.speak("One two.")
    s.flush()
    s.speak(" Three.")
    s.end_input()
    assert s.feed(_ca_chunk(cid, bytes(32000))).act is Act.DELIVER  # one second
    first = s.feed(_ca_words(cid, ["One", "two."], [0.0, 0.5], [0.5, 1.0]))
    assert first.words == (WordTiming("One", 0.0, 0.5), WordTiming("two.", 0.5, 1.0))
    flush_done = {"type": "flush_done", "context_id": cid, "done": False, "flush_id": 1}
    assert s.feed(json.dumps({**flush_done, "status_code": 206})).act is Act.SEGMENT_DONE
    s.feed(_ca_chunk(cid, bytes(16000)))
    second = s.feed(_ca_words(cid, ["Three."], [1.0], [1.5]))
    assert second.act is Act.NOTICE
    assert second.words == (WordTiming("Three.", 0.0, 0.5),)


def test_cartesia_asks_for_timestamps_only_when_configured() -> None:
    assert "add_timestamps" not in ca.CartesiaOptions().fixed_fields()
    assert ca.CartesiaOptions(add_timestamps=True).fixed_fields()["add_timestamps"] is True


@pytest.mark.parametrize("value", [None, {"words": ["a"], "start": [0.0], "end": []}])
def test_cartesia_bad_word_timestamps_give_no_words(value: object) -> None:
    assert ca._word_timestamps(value) == ()
