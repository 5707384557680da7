"""AssemblyAI plugins: Universal-Streaming speech to text (AssemblyAISTT)."""

from antiphon.plugins.assemblyai.stt import AssemblyAISTT

__all__ = ["AssemblyAISTT"]
