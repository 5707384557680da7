"""Offline TTS with espeak-ng (library and voices from the ``espeakng-loader`` package)."""

from antiphon.plugins.espeak.engine import Voice
from antiphon.plugins.espeak.tts import EspeakTTS

__all__ = ["EspeakTTS", "Voice"]
