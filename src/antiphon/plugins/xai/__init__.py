"""xAI (Grok) plugins: streaming TTS and the voice agent (speech to speech)."""

from antiphon.plugins.xai.realtime import XAIRealtime
from antiphon.plugins.xai.tts import XAITTS

__all__ = ["XAITTS", "XAIRealtime"]
