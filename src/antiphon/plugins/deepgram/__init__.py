"""Deepgram plugins."""

from antiphon.plugins.deepgram.tts import DeepgramTTS

__all__ = ["DeepgramTTS"]
