"""Cartesia plugins: streaming TTS (CartesiaTTS) and Ink speech to text (CartesiaSTT)."""

from antiphon.plugins.cartesia.stt import CartesiaSTT
from antiphon.plugins.cartesia.tts import CartesiaTTS

__all__ = ["CartesiaSTT", "CartesiaTTS"]
