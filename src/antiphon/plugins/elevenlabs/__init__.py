"""ElevenLabs plugins."""

from antiphon.plugins.elevenlabs.tts import ElevenLabsTTS

__all__ = ["ElevenLabsTTS"]
