"""Cartesia plugins."""

from antiphon.plugins.cartesia.tts import CartesiaTTS

__all__ = ["CartesiaTTS"]
