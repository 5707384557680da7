"""Deepgram plugins."""

from antiphon.plugins.deepgram.stt import DeepgramSTT
from antiphon.plugins.deepgram.tts import DeepgramTTS

__all__ = ["DeepgramSTT", "DeepgramTTS"]
