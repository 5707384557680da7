"""A streaming polyphase FIR resampler for small rational ratios, in numpy.

Why it exists: soxr's filtered qualities resample in large blocks (it convolves by FFT),
so a stream fed 20 ms frames gets its output in bursts. Measured with soxr 1.1 at HQ
(samples out per 20 ms frame in): 24 kHz -> 8 kHz gives ``[0, 0, 0, 490, 0, 0, 489, ...]``
(the first audio after 80 ms, then 60 ms bursts); 16 kHz -> 8 kHz and 8 kHz -> 16 kHz give
one block every 100 ms. This module gives every frame its share at once, held back only
by the filter's group delay (:attr:`PolyphaseFilter.input_delay`, 2.5-6 ms at the
phone rates).

How it is built:

* **The filter.** For ``out/in = L/M`` (after gcd reduction, ``max(L, M) <= MAX_FACTOR``)
  the signal is conceptually upsampled by ``L`` (zeros stuffed), low-pass filtered at the
  lower of the two Nyquist frequencies and kept every ``M``-th sample. The low-pass is a
  Kaiser-windowed sinc designed once per ``(L, M)`` (:func:`design`, cached): flat to
  ``PASSBAND`` of the lower Nyquist, at least ``STOPBAND_DB`` down from the lower Nyquist
  on (so nothing aliases into the output), odd length ``N`` so its delay ``D = (N - 1) / 2``
  is a whole number of upsampled samples and the output is aligned with the input.
* **The polyphase matrix.** Output ``n`` is ``sum_i h[p + i L] x[q - i]`` with
  ``n M + D = q L + p``. Outputs come in cycles of ``L`` that advance the input by ``M``;
  a row of ``G`` cycles (``ROW_OUTPUTS``) reads a window of ``W`` input samples starting
  at ``c G M + first``. So a whole block of rows is one matrix product: the ``(rows, W)``
  windows (a strided view of the buffer of history + new input, copied to contiguous
  memory so BLAS can take it) times the ``(W, G L)`` matrix of taps. No Python loop per
  sample or per row. (One cycle per row would copy ``W`` values per ``L`` outputs: for
  24 kHz -> 8 kHz 189 values per output; rows of 8 cycles overlap less: 26.)
* **Exact, whatever the chunking.** The taps are rounded to multiples of
  ``2**-TAP_BITS`` (each phase summing to exactly 1: a constant stays that constant), and
  the samples are int16, so every product and every partial sum is an integer times
  ``2**-TAP_BITS`` far below 2**53: float64 arithmetic is exact in any order. The result
  therefore does not depend on how BLAS orders the sums, which may change with the shape
  of the product, i.e. with how many outputs a call makes; resampling in any chunks
  gives bit-for-bit the samples of resampling the whole. (Rounding the taps costs
  nothing audible: with 24 bits the error is ~130 dB down.)
* **Streaming.** Output ``n`` is handed out as soon as its last input sample ``q`` has
  arrived. A call may end mid-row; the next call recomputes that row (its unready
  outputs read samples past the input, which have zero taps, so they cannot leak into the
  ready ones). :meth:`PolyphaseResampler.flush` pads zeros for the tail and makes the
  whole output ``ceil(n_in L / M)`` samples long, like the whole-signal answer.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "MAX_FACTOR",
    "PASSBAND",
    "ROW_OUTPUTS",
    "STOPBAND_DB",
    "TAP_BITS",
    "PolyphaseFilter",
    "PolyphaseResampler",
    "design",
    "polyphase_ratio",
]

F64 = npt.NDArray[np.float64]

#: Largest ``L`` or ``M`` (after gcd reduction) served here; others stay with soxr. The
#: telephony and speech rates are all within: 8k <-> 16k, 24k, 32k, 48k; 16k <-> 24k,
#: 32k, 48k; 24k <-> 32k, 48k; 11.025k <-> 22.05k <-> 44.1k. 44.1k <-> 48k is 147/160.
MAX_FACTOR = 8
#: Edge of the flat passband, as a fraction of the lower Nyquist (3.4 kHz at 8 kHz: the
#: telephone band).
PASSBAND = 0.85
#: Stopband attenuation the Kaiser window is designed for, from the lower Nyquist on
#: (measured on the rounded taps: >= 73.5 dB at every ratio served).
STOPBAND_DB = 75.0
#: Taps are multiples of ``2**-TAP_BITS``: see "Exact, whatever the chunking".
TAP_BITS = 24
#: Outputs per row of the matrix product (at least): rows of several cycles overlap less
#: than rows of one, so a 20 ms frame copies ~7x fewer window values (measured: 24 kHz ->
#: 8 kHz, 3.3 µs instead of 7.8 µs for the copy and the product), for a few more
#: multiply-adds with zero taps.
ROW_OUTPUTS = 8
#: A longer call is taken in pieces of this many input samples (the buffer holds one).
_PIECE = 1 << 14
#: At most this many float64 window values are copied for one matrix product (1 MB);
#: a larger call (a whole signal) is done in blocks of rows.
_BLOCK_VALUES = 1 << 17


def polyphase_ratio(in_rate: int, out_rate: int) -> tuple[int, int] | None:
    """``(L, M)`` with ``out_rate / in_rate == L / M`` if both are small, else None."""
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    if up == down or max(up, down) > MAX_FACTOR:
        return None
    return up, down


@dataclass(frozen=True, slots=True, eq=False)
class PolyphaseFilter:
    """The low-pass of one ratio ``up/down``, arranged as a polyphase matrix.

    The outputs are computed by rows of ``group`` cycles: ``group * up`` outputs that
    advance the input by ``group * down``. ``matrix[j, r]`` is the tap that output ``r`` of
    a row gives to sample ``j`` of the row's window; the window of row ``c`` starts at input
    index ``c * group * down + first``.
    """

    up: int
    down: int
    taps: int  # N, odd
    delay: int  # D = (N - 1) // 2, in upsampled samples
    group: int  # cycles per row
    first: int  # offset of a row's window from c * group * down (negative: history)
    width: int  # W, samples in a row's window
    matrix: F64  # (W, group * up), read-only

    @property
    def input_delay(self) -> float:
        """The group delay in input samples (``D / L``): what a stream is held back by."""
        return self.delay / self.up

    def ready(self, n_in: int) -> int:
        """How many outputs depend only on the first ``n_in`` input samples."""
        return max(0, (n_in * self.up - 1 - self.delay) // self.down + 1)

    def total(self, n_in: int) -> int:
        """Length of the whole output for ``n_in`` input samples: ``ceil(n_in L / M)``."""
        return -(-n_in * self.up // self.down)


@functools.cache
def design(up: int, down: int) -> PolyphaseFilter:
    """Design (once per ratio; cached) the Kaiser-windowed sinc low-pass for ``up/down``."""
    if up <= 0 or down <= 0 or math.gcd(up, down) != 1:
        raise ValueError(f"design() takes a reduced ratio, got {up}/{down}")
    # frequencies in cycles per upsampled sample; the lower Nyquist is 1 / (2 max(L, M))
    nyquist = 0.5 / max(up, down)
    transition = (1.0 - PASSBAND) * nyquist
    cutoff = nyquist - transition / 2
    # Kaiser's estimates (Oppenheim & Schafer): the length and beta for STOPBAND_DB
    length = math.ceil((STOPBAND_DB - 7.95) / (2.285 * 2 * math.pi * transition)) + 1
    length += 1 - length % 2  # odd: a whole-sample delay
    beta = 0.1102 * (STOPBAND_DB - 8.7)
    delay = (length - 1) // 2
    k = np.arange(length) - delay
    h = 2 * cutoff * np.sinc(2 * cutoff * k) * np.kaiser(length, beta) * up
    per_phase = -(-length // up)  # K
    padded = np.zeros(per_phase * up)
    padded[:length] = h
    # quantise: phase p is padded[p::up]; each phase sums to exactly 1 (DC passes as is)
    one = 1 << TAP_BITS
    phases = np.rint(padded.reshape(per_phase, up).T * one)  # (up, K): phases[p, i]
    for p in range(up):
        centre = int(np.argmax(np.abs(phases[p])))
        phases[p, centre] += one - phases[p].sum()
    group = -(-ROW_OUTPUTS // up)
    firsts = [(r * down + delay) // up for r in range(group * up)]  # q_r, increasing in r
    first = firsts[0] - (per_phase - 1)
    width = firsts[-1] - firsts[0] + per_phase
    matrix = np.zeros((width, group * up))
    i = np.arange(per_phase)
    for r in range(group * up):
        p = (r * down + delay) % up
        matrix[firsts[r] - i - first, r] = phases[p] / one
    matrix.setflags(write=False)
    return PolyphaseFilter(up, down, length, delay, group, first, width, matrix)


_scratch = threading.local()


def _scratch_values(n: int) -> F64:
    """A per-thread float64 work array of at least ``n`` values, reused across calls."""
    buf: F64 | None = getattr(_scratch, "buf", None)
    if buf is None or buf.size < n:
        buf = np.empty(max(n, 4096))
        _scratch.buf = buf
    return buf[:n]


class PolyphaseResampler:
    """Stream int16 samples through :func:`design`'s filter for ``out_rate / in_rate``.

    Channel-major float64 state: ``_buf[ch, _head + j]`` is input sample ``_base + j``; the
    prehistory before sample 0 is zeros. ``_base`` is always the window start of the row
    (of :attr:`PolyphaseFilter.group` cycles) that holds the next output, so the live
    part of the buffer is only what is still needed; it slides forward (``_head``, a
    multiple of a row's input advance, so the window rows stay one fixed strided view)
    and is moved back to the start only when the end is reached.
    """

    def __init__(self, up: int, down: int, channels: int) -> None:
        self.filter = f = design(up, down)
        self.channels = channels
        # the filter's numbers, copied to attributes: the per-frame path reads them often
        self._ratio = (f.up, f.down, f.delay)
        self._up, self._down = f.group * f.up, f.group * f.down  # outputs, inputs per row
        self._width = f.width
        self._matrix = f.matrix
        self._block = max(1, _BLOCK_VALUES // (channels * f.width))  # rows per product
        self._n_in = 0  # input samples received
        self._out = 0  # outputs handed out
        self._base = f.first
        self._head = 0
        self._alloc(2 * f.width + 4096)

    def _alloc(self, capacity: int) -> None:
        capacity -= capacity % self._down
        buf = np.zeros((self.channels, capacity))
        step = buf.strides[1]
        self._buf = buf
        # window rows: rows[ch, j] is buf[ch, j*M : j*M + W]; all of them inside the buffer
        self._rows: F64 = as_strided(
            buf,
            shape=(self.channels, (capacity - self._width) // self._down + 1, self._width),
            strides=(buf.strides[0], self._down * step, step),
            writeable=False,
        )

    def _append(self, x: npt.NDArray[np.integer] | None, n: int) -> None:
        """Append ``x`` (``(n, channels)``), or ``n`` zeros when ``x`` is None."""
        head, fill = self._head, self._n_in - self._base
        # room for the new samples, and for the last window's overhang past them
        room = fill + n + self._width + self._down
        if head + room > self._buf.shape[1]:
            old = self._buf
            if room > old.shape[1]:
                self._alloc(2 * room)
            self._buf[:, :fill] = old[:, head : head + fill]  # memmove when not reallocated
            self._head = head = 0
        end = head + fill
        if x is None:
            self._buf[:, end : end + n] = 0.0
        else:
            self._buf[:, end : end + n] = x.T
        self._n_in += n

    def process(self, x: npt.NDArray[np.int16]) -> F64:
        """Take ``x`` shaped ``(n, channels)``; return the outputs now ready, ``(k, channels)``.

        The values are in int16 scale, exact multiples of ``2**-TAP_BITS``, not yet
        rounded or clipped; the array is the caller's.
        """
        if x.shape[0] > _PIECE:  # a long call (a whole signal): the buffer stays small
            pieces = [self.process(x[i : i + _PIECE]) for i in range(0, x.shape[0], _PIECE)]
            return np.concatenate(pieces)
        self._append(x, x.shape[0])
        up, down, delay = self._ratio  # outputs n with (n M + D) // L <= n_in - 1
        return self._emit((self._n_in * up - 1 - delay) // down + 1)

    def flush(self) -> F64:
        """Pad the tail with zeros, return the rest of the output, and reset."""
        f = self.filter
        total = f.total(self._n_in)
        out = None
        if total > self._out:
            # the last output reads input up to ((total - 1) M + D) // L: zeros past the end
            end = ((total - 1) * f.down + f.delay) // f.up + 1
            self._append(None, max(0, end - self._n_in))
            out = self._emit(total)
        self.reset()
        return np.zeros((0, self.channels)) if out is None else out

    def reset(self) -> None:
        """Drop all state: the next sample is sample 0 of a new stream."""
        self._n_in = 0
        self._out = 0
        self._base = self.filter.first
        self._head = 0
        self._buf[:, : max(0, -self._base)] = 0.0  # the prehistory

    def _emit(self, ready: int) -> F64:
        """Compute and return outputs ``_out .. ready - 1``, then drop spent input."""
        new = ready - self._out
        channels, per_row = self.channels, self._up
        if new <= 0:
            return np.zeros((0, channels))
        c0, r0 = divmod(self._out, per_row)  # the row holding the next output, and where
        rows = (ready - 1) // per_row + 1 - c0
        row = self._head // self._down  # that row's window in the strided view
        if rows <= self._block:
            out = self._product(row, row + rows)
        else:  # a long call: in blocks, so the copied windows stay small
            out = np.empty((channels * rows, per_row))
            by_channel = out.reshape(channels, rows, per_row)
            for j0 in range(0, rows, self._block):
                j1 = min(rows, j0 + self._block)
                by_channel[:, j0:j1] = self._product(row + j0, row + j1).reshape(
                    channels, j1 - j0, per_row
                )
        self._out = ready
        drop = (ready // per_row - c0) * self._down  # the input of the rows now done
        self._head += drop
        self._base += drop
        ready_out: F64 = out.reshape(channels, rows * per_row)[:, r0 : r0 + new].T
        return ready_out

    def _product(self, row0: int, row1: int) -> F64:
        """The outputs of the rows whose windows are ``_rows[:, row0:row1]``, channel-major:
        ``(channels * rows, outputs per row)``."""
        rows, width = (row1 - row0) * self.channels, self._width
        windows = _scratch_values(rows * width).reshape(self.channels, row1 - row0, width)
        np.copyto(windows, self._rows[:, row0:row1])
        out: F64 = np.matmul(windows.reshape(rows, width), self._matrix)
        return out
