"""OpenAI plugins: the Realtime API (speech to speech, GA), streaming chat completions
over any OpenAI-compatible API (OpenAILLM), realtime transcription (OpenAISTT) and file
transcription per speech segment (OpenAIBatchSTT)."""

from antiphon.plugins.openai.llm import OpenAILLM
from antiphon.plugins.openai.realtime import OpenAIRealtime
from antiphon.plugins.openai.stt import OpenAIBatchSTT, OpenAISTT

__all__ = ["OpenAIBatchSTT", "OpenAILLM", "OpenAIRealtime", "OpenAISTT"]
