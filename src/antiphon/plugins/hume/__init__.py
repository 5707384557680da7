"""Hume plugins: Octave text to speech, streamed (HumeTTS)."""

from antiphon.plugins.hume.tts import HumeTTS

__all__ = ["HumeTTS"]
