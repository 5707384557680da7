"""Gladia plugins: live speech to text (GladiaSTT)."""

from antiphon.plugins.gladia.stt import GladiaSTT

__all__ = ["GladiaSTT"]
