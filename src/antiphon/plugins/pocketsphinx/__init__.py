"""Offline English STT with PocketSphinx (model shipped in the ``pocketsphinx`` wheel)."""

from antiphon.plugins.pocketsphinx.stt import PocketsphinxRecognizer, PocketsphinxSTT

__all__ = ["PocketsphinxRecognizer", "PocketsphinxSTT"]
