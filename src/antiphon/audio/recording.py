"""``CallRecorder``: both sides of a call in one stereo WAV, aligned by time.

The user is on the left channel, the agent on the right, both at one rate
(``sample_rate``, 16 kHz by default). A transport taps the two audio paths::

    recorder = CallRecorder("call.wav")
    recorder.user(frame)        # beside session.push_audio(frame)
    recorder.agent(frame)       # for each frame of session.output sent to the peer
    await recorder.aclose()     # at the end of the call (bounded, idempotent)

How it is built and why:

- **Aligned by timestamps.** Each frame is placed at the time it was heard or played
  (``at``, default the clock's now; the origin is the recorder's creation), so the
  agent's reply starts in the file where it started on the call, whatever each side's
  rate and chunking. A frame that arrives before its channel's end (a burst) or less than
  ``jitter`` after it is appended there: audio is never overwritten or dropped, and only
  a longer gap in time becomes silence.
- **Exact audio** (rule 5): each channel has its own streaming converter
  (:class:`~antiphon.audio.resample.AudioConverter`, state across frames) to the file's
  rate; stereo input is mixed down to mono.
- **Bounded memory** (rule 13): samples wait in memory only until both channels have
  passed them; a channel silent for longer than ``max_lag`` seconds is filled with
  silence up to ``now - max_lag``, so a muted side cannot hold the other's audio back.
- **Nothing lost when a call ends abruptly**: blocks go to the file as soon as both
  sides have passed 0.1 s, and Python's ``wave`` patches the header's sizes after every
  block, so the file on disk is a valid WAV of the call so far at any moment, even if
  the process dies; a transport closes its recorder with :func:`finish_recording`, which
  completes even when the call's task is cancelled (a dropped socket, a shutdown).
- **No disk I/O on the loop** (rule 14): interleaved blocks go to one
  :class:`~antiphon.aio.worker.ThreadWorker` that owns the open file; at most
  ``max_pending`` blocks wait for it (beyond that, a stalled disk, blocks are dropped and
  counted in :attr:`CallRecorder.dropped_seconds`). :meth:`aclose` writes the rest, closes
  the file and joins the thread within ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from antiphon.aio.clock import Clock, MonotonicClock
from antiphon.aio.tasks import shielded_wait
from antiphon.aio.worker import ThreadWorker
from antiphon.audio.frame import AudioFrame
from antiphon.audio.resample import AudioConverter
from antiphon.errors import ConfigError, StreamClosedError

__all__ = ["CallRecorder", "call_recorder", "finish_recording"]

log = logging.getLogger(__name__)

_USER, _AGENT = 0, 1


class _Channel:
    """One side: converted samples not yet written, and the timeline of its input.

    ``expected`` is where (in output samples) the next input frame belongs if the audio
    is continuous; ``head`` counts the output samples placed so far, which trails it by
    the converter's held-back delay. At a real gap the converter is flushed first, so the
    silence goes after the audio before it, and both meet again.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.converter = AudioConverter(rate, 1)
        self.pending: list[npt.NDArray[np.int16]] = []
        self.head = 0
        self.expected = 0.0

    def _append(self, samples: npt.NDArray[np.int16]) -> None:
        if len(samples):
            self.pending.append(samples)
            self.head += len(samples)

    def gap_to(self, at: int) -> None:
        """Silence from the end of the audio so far up to ``at`` (flushing the converter)."""
        tail = self.converter.flush()
        self._append(np.frombuffer(tail.data, "<i2"))
        if at > self.head:
            self._append(np.zeros(at - self.head, np.int16))
        self.expected = float(max(at, self.head))

    def add(self, frame: AudioFrame, at: int, jitter: int) -> None:
        if at > self.expected + jitter:  # a gap in time (not mere arrival jitter)
            self.gap_to(at)
        out = self.converter.process(frame)
        self._append(np.frombuffer(out.data, "<i2"))
        self.expected += frame.samples_per_channel * self.rate / frame.sample_rate

    def take(self, n: int) -> npt.NDArray[np.int16]:
        """The next ``n`` pending samples (silence where there are none)."""
        data = np.concatenate(self.pending) if self.pending else np.zeros(0, np.int16)
        out, rest = data[:n], data[n:]
        self.pending = [rest] if len(rest) else []
        if len(out) < n:
            out = np.concatenate([out, np.zeros(n - len(out), np.int16)])
        return out


class CallRecorder:
    """The user (left) and the agent (right) of a call in one stereo WAV (see module doc).

    Build it inside the event loop (it starts its writer thread on the first audio).

    Args:
        path: the WAV file to write (created or replaced).
        sample_rate: the file's rate in Hz.
        clock: the time of each frame when no ``at`` is given (default: the loop's).
        max_lag: seconds a silent channel may hold the other's audio in memory.
        max_pending: blocks that may wait for the writer thread before blocks are dropped.
        jitter: seconds a frame may come later than its channel's end and still follow
            it seamlessly (arrival jitter); a longer gap is silence in the file.

    Raises:
        ConfigError: a bad argument.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sample_rate: int = 16_000,
        clock: Clock | None = None,
        max_lag: float = 2.0,
        max_pending: int = 64,
        jitter: float = 0.1,
    ) -> None:
        if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
            raise ConfigError(
                f"CallRecorder sample_rate must be a positive int, got {sample_rate!r}"
            )
        if not isinstance(max_lag, int | float) or isinstance(max_lag, bool) or max_lag <= 0:
            raise ConfigError(f"CallRecorder max_lag must be seconds > 0, got {max_lag!r}")
        if not isinstance(jitter, int | float) or isinstance(jitter, bool) or jitter < 0:
            raise ConfigError(f"CallRecorder jitter must be seconds >= 0, got {jitter!r}")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigError(f"CallRecorder max_pending must be an int >= 1, got {max_pending!r}")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigError(f"CallRecorder: the folder of {str(self.path)!r} does not exist")
        self.sample_rate = sample_rate
        self.clock: Clock = clock or MonotonicClock()
        self.max_lag = float(max_lag)
        self.max_pending = max_pending
        self.dropped_seconds = 0.0
        self.written_seconds = 0.0
        self._origin = self.clock.now()
        self._jitter = round(jitter * sample_rate)
        self._channels = (_Channel(sample_rate), _Channel(sample_rate))
        self._written = 0  # stereo samples handed to the writer
        self._worker: ThreadWorker[_WavFile] | None = None
        self._pending: set[asyncio.Future[None]] = set()
        self._error: BaseException | None = None
        self._closed = False
        self._closing: asyncio.Future[Path] | None = None

    @property
    def closed(self) -> bool:
        """:meth:`aclose` was called: the taps refuse more audio."""
        return self._closed

    # -- taps (synchronous, cheap: call them on the loop, from the transport)

    def user(self, frame: AudioFrame, at: float | None = None) -> None:
        """Record the user's ``frame``, heard at ``at`` (clock seconds; default now)."""
        self._add(_USER, frame, at)

    def agent(self, frame: AudioFrame, at: float | None = None) -> None:
        """Record the agent's ``frame``, played at ``at`` (clock seconds; default now)."""
        self._add(_AGENT, frame, at)

    def _add(self, side: int, frame: AudioFrame, at: float | None) -> None:
        if self._closed:
            raise StreamClosedError(f"CallRecorder {str(self.path)!r} is closed")
        when = self.clock.now() if at is None else at
        start = max(0, round((when - self._origin) * self.sample_rate))
        self._channels[side].add(frame, start, self._jitter)
        self._drain(final=False)

    # -- writing

    def _drain(self, *, final: bool) -> None:
        user, agent = self._channels
        if final:
            end = max(user.head, agent.head)
        else:
            lag_edge = round((self.clock.now() - self._origin - self.max_lag) * self.sample_rate)
            for ch in (user, agent):
                if ch.expected < lag_edge:  # a silent side: silence up to the lag edge
                    ch.gap_to(lag_edge)
            end = min(user.head, agent.head)
        n = end - self._written
        if n <= 0 or (not final and n < self.sample_rate // 10):  # blocks of >= 0.1 s
            return
        block = np.empty((n, 2), np.int16)
        block[:, 0] = user.take(n)
        block[:, 1] = agent.take(n)
        self._written = end
        self._write(block.tobytes(), n)

    def _write(self, data: bytes, samples: int) -> None:
        self._pending = {f for f in self._pending if not f.done()}
        if len(self._pending) >= self.max_pending:
            self.dropped_seconds += samples / self.sample_rate
            return
        if self._worker is None:
            self._worker = ThreadWorker(self._open, provider="recorder", close=_WavFile.close)
        fut = self._worker.submit(lambda wav: wav.write(data))
        fut.add_done_callback(self._written_cb)
        self._pending.add(fut)
        self.written_seconds += samples / self.sample_rate

    def _written_cb(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None and self._error is None:
            self._error = fut.exception()

    def _open(self) -> _WavFile:
        return _WavFile(self.path, self.sample_rate)

    async def aclose(self, timeout: float = 5.0) -> Path:
        """Write what is left, close the file and join the writer thread (idempotent).

        Raises:
            OSError: the file could not be written.
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
            self._closed = True
            try:
                for ch in self._channels:
                    ch.gap_to(0)  # the converters' held-back tails
                self._drain(final=True)
                if self._worker is None:  # nothing was recorded: an empty, valid file
                    self._worker = ThreadWorker(
                        self._open, provider="recorder", close=_WavFile.close
                    )
                    self._worker.submit(lambda _wav: None)
                await self._worker.aclose(timeout)
                if self._error is not None:
                    raise self._error
                self._closing.set_result(self.path)
            except BaseException as exc:
                self._closing.set_exception(exc)
                self._closing.exception()  # retrieved: the caller gets it below
                raise
            return self.path
        return await asyncio.shield(self._closing)


def call_recorder(folder: str | os.PathLike[str], kind: str = "call") -> CallRecorder:
    """A recorder for one call in ``folder``: ``<kind>-<time>-<random id>.wav``."""
    name = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}.wav"
    return CallRecorder(Path(folder) / name)


async def finish_recording(recorder: CallRecorder, call: str) -> None:
    """Close ``recorder`` at the end of ``call`` (bounded: it joins its writer thread).

    Completes even if the caller is cancelled meanwhile (then re-raises the
    cancellation); a failed write is logged, never raised into the call's end.
    """
    closing = asyncio.get_running_loop().create_task(recorder.aclose())
    try:
        await shielded_wait(closing)
    except OSError as exc:
        log.warning("%s: the recording %s failed: %s", call, recorder.path, exc)


class _WavFile:
    """The open stereo WAV (used on the writer thread only)."""

    def __init__(self, path: Path, rate: int) -> None:
        # the file first: wave.open(name) leaves a half-built writer behind when it fails
        self._fh = path.open("wb")
        try:
            self._wav = wave.open(self._fh, "wb")  # noqa: SIM115 - closed in close()
            self._wav.setnchannels(2)
            self._wav.setsampwidth(2)
            self._wav.setframerate(rate)
        except BaseException:
            self._fh.close()
            raise

    def write(self, data: bytes) -> None:
        self._wav.writeframes(data)

    def close(self) -> None:
        try:
            self._wav.close()  # writes the header's sizes
        finally:
            self._fh.close()
