"""The Silero graph rewritten for a batch of streams (plugins/silero/graph.py): N streams in
one run give exactly what N separate runs of the original graph give; only the fields the
rewrite names change; anything that is not that graph is refused with ValueError."""

from __future__ import annotations

import importlib.metadata
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.plugins.silero import batched as silero_batched
from antiphon.plugins.silero import graph

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "question.wav"


def session(data: bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def original() -> bytes:
    return silero_batched.packaged_model().read_bytes()


def windows(streams: int, steps: int) -> npt.NDArray[np.float32]:
    """``[steps, streams, 576]``: each stream a different stretch of the example's speech."""
    with wave.open(str(EXAMPLE)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32767
    out = np.empty((steps, streams, 576), np.float32)
    for s in range(streams):
        start = (s * 3001) % (pcm.size - 512 * (steps + 1))
        for t in range(steps):
            at = start + 512 * t
            out[t, s, :64] = pcm[at - 64 : at] if at >= 64 else 0.0
            out[t, s, 64:] = pcm[at : at + 512]
    return out


@pytest.mark.parametrize("streams", [1, 2, 7, 33])
def test_n_streams_in_one_run_are_n_separate_runs_of_the_original(
    original: bytes, streams: int
) -> None:
    single, batched = session(original), session(graph.batched_graph(original))
    x = windows(streams, steps=12)
    h = np.zeros((1, streams, 128), np.float32)
    c = np.zeros_like(h)
    alone = [(np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32))] * streams
    spoke = 0
    for t in range(x.shape[0]):
        probs, h, c = batched.run(None, {"input": x[t], "h": h, "c": c})
        assert probs.shape == (streams,) and h.shape == c.shape == (1, streams, 128)
        for s in range(streams):
            p, hs, cs = single.run(
                None, {"input": x[t, s : s + 1], "h": alone[s][0], "c": alone[s][1]}
            )
            alone[s] = (hs, cs)
            np.testing.assert_allclose(probs[s], p[0], rtol=0, atol=1e-6)
            np.testing.assert_allclose(h[0, s], hs[0, 0], rtol=0, atol=1e-6)
            spoke += p[0] > 0.5
    assert spoke, "the windows hold speech: some probability must pass 0.5"


def test_only_the_transpose_the_state_shapes_and_the_shape_notes_change(original: bytes) -> None:
    def parts(model: bytes) -> dict[int, list[bytes | int]]:
        g = graph._payloads(model, 7)[0]
        out: dict[int, list[bytes | int]] = {}
        for f in graph._fields(g):
            out.setdefault(f.number, []).append(f.value)
        return out

    before, after = parts(original), parts(graph.batched_graph(original))
    assert after[5] == before[5]  # every weight, byte for byte
    assert 13 in before and 13 not in after  # the exporter's inner shape notes
    changed = [i for i, (a, b) in enumerate(zip(before[1], after[1], strict=True)) if a != b]
    node = after[1][changed[0]]
    assert len(changed) == 1 and isinstance(node, bytes) and graph._text(node, 4) == "Transpose"

    def renamed(field: int) -> list[str]:
        pairs = zip(before[field], after[field], strict=True)
        return [graph._text(v, 1) for v, w in pairs if v != w and isinstance(v, bytes)]

    inputs, outputs = renamed(11), renamed(12)
    assert inputs == list(graph.STATE_INPUTS) and outputs == list(graph.STATE_OUTPUTS)
    other = {k for k in before if k not in (1, 5, 11, 12, 13)}
    assert all(after[k] == before[k] for k in other)


def test_the_model_runs_a_batch_of_streams_with_their_own_state() -> None:
    model = silero_batched.SileroOnnxModel()
    x = windows(3, steps=1)[0]
    state = np.zeros((2, 3, 128), np.float32)
    probs, new_state = model.run(x, state)
    assert probs.shape == (3,) and new_state.shape == (2, 3, 128)
    one, _ = model.run(x[1:2], state[:, 1:2])
    assert float(one[0]) == pytest.approx(float(probs[1]), abs=1e-6)


def test_a_model_path_with_silero_s_own_state_signature_still_loads() -> None:
    """Silero's own export (``state``, ``sr``), as the ``pipecat-ai`` wheel (``make test``)
    carries it, runs unchanged."""
    try:
        dist = importlib.metadata.distribution("pipecat-ai")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pipecat-ai (make test installs it) carries Silero's own export")
    path = Path(str(dist.locate_file("pipecat/audio/vad/data/silero_vad.onnx")))
    model = silero_batched.SileroOnnxModel(path)
    probs, state = model.run(windows(2, steps=1)[0], np.zeros((2, 2, 128), np.float32))
    assert probs.shape == (2,) and state.shape == (2, 2, 128)


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m[: len(m) // 2],  # truncated mid-field
        lambda m: graph._len_field(7, b""),  # an empty graph
        lambda m: m.replace(b"LSTM", b"GRUX"),  # no LSTM
        lambda m: m.replace(b"Transpose", b"Transposf"),  # the LSTM's input made otherwise
    ],
    ids=["truncated", "empty-graph", "no-lstm", "no-transpose"],
)
def test_a_graph_of_another_shape_is_refused(original: bytes, damage: Any) -> None:
    with pytest.raises(ValueError):
        graph.batched_graph(damage(original))


@given(st.binary(max_size=200))
def test_any_bytes_give_a_graph_or_a_value_error(data: bytes) -> None:
    try:
        out = graph.batched_graph(data)
    except ValueError:
        return
    assert isinstance(out, bytes)
