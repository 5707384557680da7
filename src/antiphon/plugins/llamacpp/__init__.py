"""A local GGUF language model in process (``antiphon[local-llm]``: llama-cpp-python)."""

from antiphon.plugins.llamacpp.llm import INSTALL_HINT, LlamaCppLLM, LlamaCppStream

__all__ = ["INSTALL_HINT", "LlamaCppLLM", "LlamaCppStream"]
