"""ElevenLabs plugins: streaming TTS (ElevenLabsTTS) and Scribe realtime STT (ElevenLabsSTT)."""

from antiphon.plugins.elevenlabs.stt import ElevenLabsSTT
from antiphon.plugins.elevenlabs.tts import ElevenLabsTTS

__all__ = ["ElevenLabsSTT", "ElevenLabsTTS"]
