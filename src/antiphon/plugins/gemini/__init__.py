"""Google Gemini plugins: streaming generateContent (GeminiLLM) and the Live API (GeminiLive)."""

from antiphon.plugins.gemini.live import GeminiLive
from antiphon.plugins.gemini.llm import GeminiLLM

__all__ = ["GeminiLLM", "GeminiLive"]
