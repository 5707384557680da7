"""What the TTS plugins' tests share beside the conformance suite.

:func:`speak` runs one whole synthesis stream, as an agent's turn would, and returns its
audio; the test then checks what the fake was sent and what came back.
"""

from __future__ import annotations

from antiphon.services.tts import TTS, StreamState

__all__ = ["speak"]


async def speak(tts: TTS, *texts: str) -> bytes:
    """The audio of one stream of ``tts`` that pushes each of ``texts`` and flushes it,
    then ends its input; the stream must complete."""
    stream = tts.stream()
    for text in texts:
        stream.push_text(text)
        stream.flush()
    stream.end_input()
    audio = b"".join([f.data async for f in stream])
    await stream.aclose()
    assert stream.state is StreamState.COMPLETED
    return audio
