"""Rime plugins: streaming text to speech over Rime's JSON WebSocket (RimeTTS)."""

from antiphon.plugins.rime.tts import RimeTTS

__all__ = ["RimeTTS"]
