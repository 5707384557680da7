"""OpenAI plugins: the Realtime API (speech to speech, GA) and streaming chat completions
over any OpenAI-compatible API (OpenAILLM), and streamed text to speech (OpenAITTS)."""

from antiphon.plugins.openai.llm import OpenAILLM
from antiphon.plugins.openai.realtime import OpenAIRealtime
from antiphon.plugins.openai.tts import OpenAITTS

__all__ = ["OpenAILLM", "OpenAIRealtime", "OpenAITTS"]
