"""AWS Bedrock plugins: streaming chat over ``ConverseStream`` (BedrockLLM), no SDK."""

from antiphon.plugins.bedrock.llm import BedrockLLM

__all__ = ["BedrockLLM"]
