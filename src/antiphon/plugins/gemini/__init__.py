"""Google Gemini plugins: streaming generateContent (GeminiLLM)."""

from antiphon.plugins.gemini.llm import GeminiLLM

__all__ = ["GeminiLLM"]
