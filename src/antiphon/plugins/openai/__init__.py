"""OpenAI plugins: the Realtime API (speech to speech, GA) and streaming chat completions
over any OpenAI-compatible API (OpenAILLM)."""

from antiphon.plugins.openai.llm import OpenAILLM
from antiphon.plugins.openai.realtime import OpenAIRealtime

__all__ = ["OpenAILLM", "OpenAIRealtime"]
