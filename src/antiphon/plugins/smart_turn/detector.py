"""Smart Turn v3.2 (Daily/Pipecat, BSD-2-Clause) on onnxruntime, on a thread it owns.

How it is built and why:

- **Weights from an installed package, never downloaded.** The model file
  ``smart-turn-v3.2-cpu.onnx`` (8.7 MB, int8) ships inside the ``pipecat-ai`` wheel under
  ``pipecat/audio/turn/smart_turn/data/``. It is found through the distribution's file
  list (``importlib.metadata``), so nothing of Pipecat is imported and Pipecat's own
  dependencies are not needed: install it with ``pip install --no-deps pipecat-ai==1.14.0``
  beside ``antiphon[turn]`` (docs/turns.md). The file is pinned by SHA-256
  (:data:`PINS`) and hashed on the worker thread before it is loaded
  (:mod:`antiphon.plugins.weights`).
- **Inference off the loop** (rule 14): one :class:`~antiphon.aio.worker.ThreadWorker`
  owns the ONNX session; a prediction (features in numpy, then the model: 0.1-0.4 s on
  one core of a loaded 2-core machine, less when idle) runs there. At most one
  prediction is in flight: a second one while the first still runs is refused at once,
  so a slow machine falls back to silence instead of queueing turns behind each other.
  A prediction that misses its deadline is left to finish on the thread (its answer is
  dropped); the worker is not marked stuck by it.
- **Input as the model was trained**: the last 8 s of 16 kHz audio (zero-padded at the
  front when shorter), Whisper log-mel features (:mod:`.features`); the graph's output
  is the probability that the turn is complete.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from antiphon.aio.worker import ThreadWorker, build_niced
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError
from antiphon.plugins.smart_turn.features import SAMPLE_RATE, log_mel, normalise
from antiphon.plugins.weights import verify
from antiphon.services.turn import TurnDetector

__all__ = [
    "DISTRIBUTION",
    "INSTALL_HINT",
    "MODEL_FILE",
    "PINS",
    "SmartTurnDetector",
    "SmartTurnModel",
    "available",
    "fit",
    "packaged_model",
]

PROVIDER = "smart-turn"
#: The wheel that carries the weights, and the version whose file is pinned.
DISTRIBUTION = "pipecat-ai"
DISTRIBUTION_VERSION = "1.14.0"
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
_MODEL_PATH = f"pipecat/audio/turn/smart_turn/data/{MODEL_FILE}"
#: SHA-256 of the Smart Turn v3.2 CPU model in ``pipecat-ai`` 1.14.0 (8,679,182 bytes).
PINS: Mapping[str, str] = {
    MODEL_FILE: "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
}
INSTALL_HINT = (
    "pip install 'antiphon[turn]' && "
    f"pip install --no-deps '{DISTRIBUTION}=={DISTRIBUTION_VERSION}' (see docs/turns.md)"
)
_SECONDS = 8


def packaged_model() -> Path:
    """The Smart Turn ``.onnx`` file inside the installed ``pipecat-ai`` wheel.

    Raises:
        ConfigError: ``pipecat-ai`` is not installed, or its wheel has no such file.
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"the Smart Turn model is not installed; {INSTALL_HINT}") from None
    path = Path(str(dist.locate_file(_MODEL_PATH)))
    if not path.is_file():
        raise ConfigError(f"{DISTRIBUTION} {dist.version} has no {_MODEL_PATH}; {INSTALL_HINT}")
    return path


def available() -> bool:
    """onnxruntime and the packaged model are installed (nothing is loaded or hashed)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    try:
        packaged_model()
    except ConfigError:
        return False
    return True


def fit(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    """The last 8 s of ``samples`` as float, zero-padded at the front when shorter."""
    size = _SECONDS * SAMPLE_RATE
    x = samples[-size:].astype(np.float32) / 32768.0
    if len(x) < size:
        x = np.concatenate([np.zeros(size - len(x), np.float32), x])
    return x


class SmartTurnModel:
    """The ONNX session (blocking; used on one thread at a time)."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # built on a lowered thread: the intra-op pool runs below real-time work
        self._session: Any = build_niced(
            lambda: ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            ),
            name="smart-turn",
        )
        self._input = self._session.get_inputs()[0].name

    def predict(self, samples: npt.NDArray[np.int16]) -> float:
        """P(turn complete) for 16 kHz mono int16 samples."""
        features = log_mel(normalise(fit(samples)))[None, :, :]
        out = self._session.run(None, {self._input: features})
        return float(np.asarray(out[0]).reshape(-1)[0])

    def close(self) -> None:
        self._session = None


class SmartTurnDetector(TurnDetector):
    """Smart Turn v3.2: an audio model of whether the speaker finished their turn.

    Args:
        model: an ONNX Smart Turn v3 file; default: the one in ``pipecat-ai``, checked
            against :data:`PINS`.
        checksums: SHA-256 per file name (in ``model``'s directory) to check first.
        threads: CPU threads per prediction (onnxruntime's ``intra_op_num_threads``).
        load_timeout: seconds the first load (hash and ONNX session) may take.

    Raises:
        ConfigError: onnxruntime or the model is missing, or a bad argument.
    """

    provider: ClassVar[str] = PROVIDER
    sample_rate: ClassVar[int] = SAMPLE_RATE
    max_audio: ClassVar[float] = float(_SECONDS)

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        checksums: Mapping[str, str] | None = None,
        threads: int = 1,
        load_timeout: float = 20.0,
    ) -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise ConfigError(f"onnxruntime is not installed; {INSTALL_HINT}")
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ConfigError(f"threads must be an int >= 1, got {threads!r}")
        if model is None:
            self.model_path = packaged_model()
            self._pins: Mapping[str, str] = PINS
        else:
            self.model_path = Path(model)
            if not self.model_path.is_file():
                raise ConfigError(f"Smart Turn model {str(self.model_path)!r} does not exist")
            self._pins = dict(checksums) if checksums else {}
        self._threads = threads
        self.load_timeout = load_timeout
        self._worker: ThreadWorker[SmartTurnModel] | None = None
        self._inflight: asyncio.Future[float] | None = None
        self._closed = False

    @property
    def busy(self) -> bool:
        """A prediction is still running (a new one would be refused)."""
        return self._inflight is not None and not self._inflight.done()

    async def idle(self) -> None:
        """Wait until no prediction runs (a late one finishes; its answer is dropped)."""
        if self._inflight is not None:
            await asyncio.wait([self._inflight])

    def _load(self) -> SmartTurnModel:
        """Check the file and load the model (on the worker thread)."""
        hint = (
            f"reinstall the model: {INSTALL_HINT}"
            if self._pins is PINS
            else "check the model file and its checksum"
        )
        verify(self.model_path.parent, self._pins, provider=PROVIDER, hint=hint)
        return SmartTurnModel(self.model_path, threads=self._threads)

    def _engine(self) -> ThreadWorker[SmartTurnModel]:
        if self._closed:
            raise ProviderError("the turn detector is closed", provider=PROVIDER, stage="predict")
        if self._worker is None:
            self._worker = ThreadWorker(
                self._load, provider=PROVIDER, close=SmartTurnModel.close, inference=True
            )
        return self._worker

    async def prewarm(self, timeout: float | None = None) -> None:
        """Hash and load the model now (bounded by ``timeout``, default ``load_timeout``)."""
        await self._engine().call(
            lambda _model: None, timeout=timeout or self.load_timeout, stage="load"
        )

    async def predict(self, audio: AudioFrame, *, timeout: float) -> float:
        if audio.sample_rate != SAMPLE_RATE or audio.channels != 1:
            raise ConfigError(
                f"Smart Turn takes mono {SAMPLE_RATE} Hz audio, got {audio.channels} channel(s) "
                f"at {audio.sample_rate} Hz; use antiphon.services.turn.TurnAudio to convert"
            )
        if self.busy:
            raise ProviderTimeoutError(
                "the previous prediction is still running",
                provider=PROVIDER,
                stage="predict",
                timeout=0.0,
                hint="the machine is too busy for the turn model: silence decides meanwhile",
            )
        samples = np.frombuffer(audio.data, dtype="<i2")
        fut = self._engine().submit(lambda model: model.predict(samples))
        self._inflight = fut
        done, _ = await asyncio.wait([fut], timeout=timeout)
        if not done:
            raise ProviderTimeoutError(
                "the turn model did not answer in time",
                provider=PROVIDER,
                stage="predict",
                timeout=timeout,
                hint="raise EndOfTurnOptions.model_timeout or give the model a core",
            )
        exc = fut.exception()
        if isinstance(exc, ProviderError):
            raise exc
        if exc is not None:
            raise ProviderError(
                f"the turn model raised {exc!r}", provider=PROVIDER, stage="predict"
            ) from exc
        return fut.result()

    async def aclose(self) -> None:
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.aclose(timeout=self.load_timeout)
