"""Silero VAD v6 as faster-whisper ships it, rewritten so one run serves many streams.

How it is built and why:

- **The file**: ``faster_whisper/assets/silero_vad_v6.onnx`` (1.2 MB; Silero VAD v6, MIT,
  Silero Team; exported by faster-whisper, MIT). faster-whisper is already a runtime
  dependency (the offline Whisper STT), so the model needs no wheel of its own. It is
  found through the distribution's file list, pinned by SHA-256 (:data:`PIN`) and hashed
  before it is read (:mod:`antiphon.plugins.weights`). Nothing is downloaded.
- **Its shape**: the graph was exported for one stream's whole recording: ``input
  [seq, 576]`` (64 samples of context, then a 512-sample window) runs the encoder on
  every window, then a ``Transpose`` makes ``[seq, 1, 128]`` and one LSTM runs them *in
  sequence* through its state ``h, c [1, 1, 128]``.
- **The rewrite** (:func:`batched_graph`): that ``Transpose`` becomes ``[1, seq, 128]``
  (one time step, ``seq`` streams side by side) and ``h, c`` (with ``hn, cn``) get a
  free batch dimension. The rows are then independent streams, each with its own state
  rows: the signature the batch worker needs. Everything after the LSTM already works
  per row. The exporter's shape notes on inner tensors (optional, and now wrong: they
  say ``[seq, 1, 128]``) are dropped; every other byte of the file is kept.
- **Why by hand**: the edit is two graph fields; the ``onnx`` package (16 MB) would be a
  runtime dependency for it. ONNX files are protocol buffers, and the few lines below
  read and write the wire format directly (varints and length-delimited fields).
  ``tests/test_vad_graph.py`` checks the result: N streams in one run give what N
  separate runs of the original graph give.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["STATE_INPUTS", "STATE_OUTPUTS", "batched_graph"]

#: The graph's state inputs and outputs (one ``[1, batch, 128]`` tensor each).
STATE_INPUTS = ("h", "c")
STATE_OUTPUTS = ("hn", "cn")

# ONNX's field numbers (onnx.proto3): the only ones the rewrite reads or writes.
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_VALUE_INFO = 1, 11, 12, 13
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 1, 2, 4, 5
_ATTR_NAME, _ATTR_INTS = 1, 8
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR, _TENSOR_SHAPE, _SHAPE_DIM = 1, 2, 1
_DIM_PARAM = 2
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass(frozen=True, slots=True)
class _Field:
    number: int
    wire: int
    raw: bytes  # the whole encoding: tag and value
    value: bytes | int  # a length-delimited payload, else the number


def _read_varint(buf: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(buf) or shift > 63:
            raise ValueError("truncated or oversized varint")
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(buf: bytes) -> list[_Field]:
    """The top-level fields of one message, in order."""
    out: list[_Field] = []
    at = 0
    while at < len(buf):
        start = at
        tag, at = _read_varint(buf, at)
        number, wire = tag >> 3, tag & 7
        value: bytes | int
        if wire == _VARINT:
            value, at = _read_varint(buf, at)
        elif wire == _I64:
            value, at = int.from_bytes(buf[at : at + 8], "little"), at + 8
        elif wire == _I32:
            value, at = int.from_bytes(buf[at : at + 4], "little"), at + 4
        elif wire == _LEN:
            size, at = _read_varint(buf, at)
            value, at = buf[at : at + size], at + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if at > len(buf):
            raise ValueError("truncated protobuf field")
        out.append(_Field(number, wire, buf[start:at], value))
    return out


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _payloads(buf: bytes, number: int) -> list[bytes]:
    return [f.value for f in _fields(buf) if f.number == number and isinstance(f.value, bytes)]


def _text(buf: bytes, number: int) -> str:
    found = _payloads(buf, number)
    return found[0].decode() if found else ""


def _rewrite(buf: bytes, number: int, edit: Callable[[bytes], bytes]) -> bytes:
    """``buf`` with each length-delimited field ``number`` replaced by ``edit(payload)``."""
    parts = []
    for f in _fields(buf):
        if f.number == number and isinstance(f.value, bytes):
            parts.append(_len_field(number, edit(f.value)))
        else:
            parts.append(f.raw)
    return b"".join(parts)


def _batch_dim(value_info: bytes) -> bytes:
    """A ``[1, 1, 128]`` tensor's declared shape with its second dimension free."""

    def shape(buf: bytes) -> bytes:
        fields = _fields(buf)
        dims = [i for i, f in enumerate(fields) if f.number == _SHAPE_DIM]
        if len(dims) != 3:
            raise ValueError("a state tensor of the Silero graph is not three-dimensional")
        parts = [f.raw for f in fields]
        parts[dims[1]] = _len_field(_SHAPE_DIM, _len_field(_DIM_PARAM, b"batch"))
        return b"".join(parts)

    def tensor(buf: bytes) -> bytes:
        return _rewrite(buf, _TENSOR_SHAPE, shape)

    def type_(buf: bytes) -> bytes:
        return _rewrite(buf, _TYPE_TENSOR, tensor)

    return _rewrite(value_info, _VALUE_TYPE, type_)


def _set_perm(node: bytes, perm: tuple[int, ...]) -> bytes:
    def attribute(buf: bytes) -> bytes:
        if _text(buf, _ATTR_NAME) != "perm":
            return buf
        kept = b"".join(f.raw for f in _fields(buf) if f.number != _ATTR_INTS)
        return kept + b"".join(_varint(_ATTR_INTS << 3 | _VARINT) + _varint(p) for p in perm)

    return _rewrite(node, _NODE_ATTRIBUTE, attribute)


def _graph(buf: bytes) -> bytes:
    nodes = _payloads(buf, _GRAPH_NODE)
    lstms = [n for n in nodes if _text(n, _NODE_OP_TYPE) == "LSTM"]
    if len(lstms) != 1:
        raise ValueError(f"expected one LSTM in the Silero graph, found {len(lstms)}")
    lstm_in = _payloads(lstms[0], _NODE_INPUT)
    if len(lstm_in) < 7 or tuple(p.decode() for p in lstm_in[5:7]) != STATE_INPUTS:
        raise ValueError("the Silero graph's LSTM does not take its state from h and c")
    feeding = lstm_in[0]
    found = 0

    def node(n: bytes) -> bytes:
        nonlocal found
        if _text(n, _NODE_OP_TYPE) == "Transpose" and feeding in _payloads(n, _NODE_OUTPUT):
            found += 1
            # [seq, 128, 1] -> [1, seq, 128]: one time step of seq streams (was [seq, 1, 128])
            return _set_perm(n, (2, 0, 1))
        return n

    def state(names: tuple[str, ...]) -> Callable[[bytes], bytes]:
        def edit(value_info: bytes) -> bytes:
            if _text(value_info, _VALUE_NAME) in names:
                return _batch_dim(value_info)
            return value_info

        return edit

    buf = _rewrite(buf, _GRAPH_NODE, node)
    if found != 1:
        raise ValueError("the Silero graph's LSTM is not fed by one Transpose")
    buf = _rewrite(buf, _GRAPH_INPUT, state(STATE_INPUTS))
    buf = _rewrite(buf, _GRAPH_OUTPUT, state(STATE_OUTPUTS))
    # onnxruntime infers the inner shapes itself
    return b"".join(f.raw for f in _fields(buf) if f.number != _GRAPH_VALUE_INFO)


def batched_graph(model: bytes) -> bytes:
    """The serialized ONNX ``model`` (faster-whisper's Silero v6) with a batch of streams.

    Raises:
        ValueError: ``model`` is not a graph of that shape (one LSTM with state ``h, c``
            fed by one ``Transpose``).
    """
    return _rewrite(model, _MODEL_GRAPH, _graph)
