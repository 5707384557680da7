"""OpenAI plugins: the Realtime API (speech to speech, GA), streaming chat completions
over any OpenAI-compatible API (OpenAILLM) and realtime transcription (OpenAISTT)."""

from antiphon.plugins.openai.llm import OpenAILLM
from antiphon.plugins.openai.realtime import OpenAIRealtime
from antiphon.plugins.openai.stt import OpenAISTT

__all__ = ["OpenAILLM", "OpenAIRealtime", "OpenAISTT"]
