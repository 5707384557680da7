"""Small helpers the benches share: quantiles, send clocks, latency pairing, process meters.

How it is built: plain functions over lists, so each bench keeps its own loop and output.

- :func:`pct` is the one quantile (nearest rank, ``q`` in 0..1) every bench reports;
  :func:`pct_or_none` is the same with ``None`` for no sample, :func:`pct_linear` the
  interpolated one (``numpy.percentile``) for the bench whose table was built with it.
- :func:`clock_http_writes` and :func:`clock_ws_sends` patch the loopback fakes' send
  path once to stamp ``time.perf_counter_ns()`` at every send (any thread) into
  :data:`HTTP_SENT` / :data:`WS_SENT`; :func:`after_last_send` pairs each receive with
  the last send before it, and :func:`overhead_summary` is the bare-vs-plugin table row.
- :func:`cpu_seconds`, :func:`rss_mb` read another process's CPU and memory from
  ``/proc``; :func:`free_port` and :func:`wait_listening` start a server subprocess.
- :func:`ab_versions` and :func:`version_env` are the two versions an A/B bench
  alternates (``--against``) and the environment of a child that runs one of them;
  :func:`alternate` runs a bench script on each in turn and collects its JSON results.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "HTTP_SENT",
    "WS_SENT",
    "ab_versions",
    "after_last_send",
    "alternate",
    "clock_http_writes",
    "clock_ws_sends",
    "cpu_seconds",
    "free_port",
    "overhead_summary",
    "pct",
    "pct_linear",
    "pct_or_none",
    "rss_mb",
    "version_env",
    "wait_listening",
]

#: perf_counter_ns after every write of an HTTP fake (:func:`clock_http_writes`).
HTTP_SENT: list[int] = []
#: perf_counter_ns before every carrying text frame a WebSocket fake sends.
WS_SENT: list[int] = []
_ws_carries: list[tuple[str, ...]] = [()]
_installed: set[str] = set()


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; NaN when empty."""
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def pct_or_none(values: Sequence[float], q: float) -> float | None:
    """:func:`pct`, or ``None`` when there is no sample."""
    return pct(values, q) if values else None


def pct_linear(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) interpolated between ranks; NaN when empty."""
    return float(np.percentile(values, 100 * q)) if len(values) else float("nan")


def clock_http_writes() -> None:
    """Stamp every write of the loopback HTTP fakes into :data:`HTTP_SENT` (once)."""
    if "http" in _installed:
        return
    _installed.add("http")
    from antiphon.testing.http_server import HttpConnection

    original = HttpConnection.write

    async def write(self: HttpConnection[Any], data: bytes) -> None:
        await original(self, data)
        HTTP_SENT.append(time.perf_counter_ns())

    HttpConnection.write = write  # type: ignore[method-assign]


def clock_ws_sends(carries: tuple[str, ...]) -> None:
    """Stamp every text frame a WebSocket fake sends that contains one of ``carries``.

    The patch is installed once; a later call only changes the markers.
    """
    _ws_carries[0] = carries
    if "ws" in _installed:
        return
    _installed.add("ws")
    from websockets.asyncio.server import ServerConnection

    original = ServerConnection.send

    async def send(self: ServerConnection, message: Any, text: bool | None = None) -> None:
        if isinstance(message, str) and any(c in message for c in _ws_carries[0]):
            WS_SENT.append(time.perf_counter_ns())
        await original(self, message, text=text)

    ServerConnection.send = send  # type: ignore[method-assign,assignment]


def after_last_send(sent: Sequence[int], received: Sequence[int]) -> list[float]:
    """Each receive against the last send stamped before it (ms); receives before any
    send are left out."""
    out: list[float] = []
    for r in received:
        before = [s for s in sent if s <= r]
        if before:
            out.append((r - before[-1]) / 1e6)
    return out


def overhead_summary(bare: Sequence[float], ours: Sequence[float]) -> dict[str, Any]:
    """p50/p99/mean of both sides, what the plugin adds and the ratio (ms)."""
    b50, b99, o50, o99 = pct(bare, 0.5), pct(bare, 0.99), pct(ours, 0.5), pct(ours, 0.99)
    return {
        "bare_ms": {"p50": b50, "p99": b99, "mean": statistics.fmean(bare)},
        "plugin_ms": {"p50": o50, "p99": o99, "mean": statistics.fmean(ours)},
        "added_latency_ms": {"p50": o50 - b50, "p99": o99 - b99},
        "latency_ratio": {"p50": o50 / b50, "p99": o99 / b99},
    }


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB; NaN if it is not reported."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_listening(port: int, proc: asyncio.subprocess.Process, limit: float) -> None:
    """Wait until ``proc`` accepts on ``port`` (loopback), at most ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while loop.time() < end:
        if proc.returncode is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        w.close()
        await w.wait_closed()
        return
    raise RuntimeError(f"the server did not listen on {port} within {limit} s")


def ab_versions(against: Path) -> dict[str, Path]:
    """The ``src`` of this checkout (``this``) and of the checkout ``against``
    (``against``); exits with one line if ``against`` holds no antiphon package."""
    other = against.resolve() / "src"
    if not (other / "antiphon").is_dir():
        raise SystemExit(f"--against: no antiphon package under {other}; give a checkout")
    return {"this": Path(__file__).resolve().parent.parent / "src", "against": other}


def version_env(src: Path, *more: Path) -> dict[str, str]:
    """This process's environment with ``PYTHONPATH`` set to ``src`` (then ``more``), so
    that a child runs that version of antiphon."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in (src, *more)))


def run_json(script: Path, src: Path, args: Sequence[str]) -> dict[str, Any]:
    """Run ``script`` with ``args`` on the antiphon of ``src`` (and the bench folder, for
    ``benchkit``) in a child process; the JSON object of its last line of output, with
    the 1-minute load average at the end as ``load1``."""
    out = subprocess.run(
        [sys.executable, str(script), *args],
        env=version_env(src, script.resolve().parent),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["load1"] = os.getloadavg()[0]
    return result


def alternate(
    script: Path,
    against: Path,
    rounds: int,
    args: Sequence[str],
    show: Callable[[dict[str, Any]], dict[str, Any]] = dict,
) -> dict[str, list[dict[str, Any]]]:
    """``rounds`` runs of ``script`` with ``args`` on this checkout and on ``against``,
    alternated (:func:`run_json`); each result printed as a JSON line (``show`` picks what
    of it), all returned by version."""
    versions = ab_versions(against)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in versions}
    for _ in range(rounds):
        for name, src in versions.items():
            r = run_json(script, src, args)
            runs[name].append(r)
            print(json.dumps({"version": name} | show(r)), flush=True)
    return runs
