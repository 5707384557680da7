"""Speechmatics plugins: real-time speech to text (SpeechmaticsSTT)."""

from antiphon.plugins.speechmatics.stt import SpeechmaticsSTT

__all__ = ["SpeechmaticsSTT"]
