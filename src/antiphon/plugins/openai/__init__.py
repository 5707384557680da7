"""OpenAI plugins: the Realtime API (speech to speech, GA), streaming chat completions
over any OpenAI-compatible API (OpenAILLM), realtime transcription (OpenAISTT), file
transcription per speech segment (OpenAIBatchSTT) and streamed text to speech (OpenAITTS)."""

from antiphon.plugins.openai.llm import OpenAILLM
from antiphon.plugins.openai.realtime import OpenAIRealtime
from antiphon.plugins.openai.stt import OpenAIBatchSTT, OpenAISTT
from antiphon.plugins.openai.tts import OpenAITTS

__all__ = ["OpenAIBatchSTT", "OpenAILLM", "OpenAIRealtime", "OpenAISTT", "OpenAITTS"]
