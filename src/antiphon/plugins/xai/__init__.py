"""xAI (Grok) plugins."""

from antiphon.plugins.xai.tts import XAITTS

__all__ = ["XAITTS"]
