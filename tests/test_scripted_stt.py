"""The scripted STT double: with ``voiced_only`` it hears words only in voiced frames,
as a recogniser does, so a caller's silence makes no interim and begins no utterance."""

from __future__ import annotations

import asyncio

import pytest

from antiphon.audio.frame import AudioFrame
from antiphon.services.stt import Transcript
from antiphon.testing.agent import silence, speech
from antiphon.testing.doubles import ScriptedSTT

FRAME = 0.02


async def _hear(stt: ScriptedSTT, parts: list[AudioFrame | None]) -> list[Transcript]:
    """Push each part's 20 ms frames (None: a flush), then end the input; every transcript."""
    async with stt:
        s = stt.stream()
        for part in parts:
            if part is None:
                s.flush()
            else:
                for f in part.split(FRAME):
                    s.push_audio(f)
                    await asyncio.sleep(0)
            await asyncio.sleep(0)
        s.end_input()
        return [t async for t in s]


@pytest.mark.parametrize("direct", [True, False])
async def test_voiced_only_hears_words_in_speech_alone(direct: bool) -> None:
    stt = ScriptedSTT(["one two three", "four"], voiced_only=True, direct_audio=direct)
    got = await _hear(stt, [silence(1.0), speech(0.6), silence(0.4), None, silence(1.0), None])
    interims = [t for t in got if not t.is_final]
    finals = [t for t in got if t.is_final]
    # interims while the speech lasts (0.6 s: one every 0.2 s), none in the silences
    assert 2 <= len(interims) <= 3
    assert all(t.text and "one".startswith(t.text[:3]) for t in interims)
    assert all(t.start >= 1.0 - 1e-9 and t.end <= 1.6 + 1e-9 for t in interims)
    # the utterance is the speech: it begins at the first voiced frame, not in the silence
    assert finals[0].start == pytest.approx(1.0)
    assert [(t.text, t.flushed) for t in finals] == [("one two three", True), ("", True)]
    assert stt.script == ["four"]  # the silent second utterance took no line


async def test_by_default_every_frame_counts_silence_included() -> None:
    stt = ScriptedSTT(["one two three", "four"])
    got = await _hear(stt, [silence(1.0), None])
    assert [t.text for t in got if t.is_final] == ["one two three"]
    assert len([t for t in got if not t.is_final]) >= 4  # one every 0.2 s of silence
    assert got[0].start == 0.0
