"""Anthropic plugins: streaming Messages (AnthropicLLM)."""

from antiphon.plugins.anthropic.llm import AnthropicLLM

__all__ = ["AnthropicLLM"]
