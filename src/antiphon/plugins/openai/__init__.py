"""OpenAI plugins: the Realtime API (speech to speech, GA)."""

from antiphon.plugins.openai.realtime import OpenAIRealtime

__all__ = ["OpenAIRealtime"]
