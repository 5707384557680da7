"""How long a newcomer waits for the first answer of ``make demo``, cold and warm.

A fresh clone of this repository (its last commit) goes to a temporary directory, and
``make demo`` runs there twice:

- **cold**: no ``.venv`` (``python3 -m venv``, then ``pip install -e .`` of the runtime);
  pip's cache and package index are whatever this machine has (the JSON says which
  index pip is configured with and how big its cache is);
- **warm**: the same clone again, its ``.venv`` already installed.

Each run's output is read line by line and timed from the start of ``make demo``:
``installed`` (the runtime stamp ``.venv/.runtime`` appears; cold only), ``answer``
(``antiphon talk`` printed the agent's reply: the models were loaded, the question
heard in real time, the reply played out in real time into ``reply.wav``), ``serving``
(the playground URL is printed), ``listening`` (the server loaded its agent and
answers). The server is then stopped with Ctrl-C (SIGINT), as a user would.

    .venv/bin/python bench/cold_demo.py [--keep]

Prints the JSON it writes to ``bench/results/cold_demo.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LIMIT = 900.0  # seconds a run may take before it is stopped


def run_demo(clone: Path) -> dict[str, Any]:
    """Run ``make demo`` in ``clone``; the times of its milestones and its output."""
    start = time.monotonic()
    marks: dict[str, float] = {}
    lines: list[str] = []
    stamp = clone / ".venv" / ".runtime"
    had_stamp = stamp.exists()
    proc = subprocess.Popen(
        ["make", "demo", "PYTHON=python3"],
        cwd=clone,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C goes to make and antiphon
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Ctrl-C as in a terminal (a shell's background job inherits it ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    done = threading.Event()

    def watch_stamp() -> None:
        while not done.is_set():
            if not had_stamp and stamp.exists():
                marks.setdefault("installed", time.monotonic() - start)
                return
            done.wait(0.2)

    watcher = threading.Thread(target=watch_stamp, daemon=True)
    watcher.start()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            now = time.monotonic() - start
            lines.append(f"{now:7.2f} {line.rstrip()}")
            if re.match(r"agent: (?!vad=)", line):
                marks.setdefault("answer", now)
            if "http://localhost" in line:
                marks.setdefault("serving", now)
            if "Uvicorn running" in line:  # the page answers now
                marks.setdefault("listening", now)
                os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in the terminal
            if now > LIMIT:
                os.killpg(proc.pid, signal.SIGKILL)
    finally:
        done.set()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        watcher.join()
    return {
        "seconds_from_make_demo": {k: round(v, 1) for k, v in marks.items()},
        "output": lines,
    }


def pip_setup() -> dict[str, Any]:
    """What pip installs from here: its configured indexes and the size of its cache."""
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout.splitlines()
    cache = Path(
        subprocess.run(
            [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True
        ).stdout.strip()
        or Path.home() / ".cache" / "pip"
    )
    size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) if cache.is_dir() else 0
    return {"config": config, "cache_dir": str(cache), "cache_mb": round(size / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = ap.parse_args()
    results: dict[str, Any] = {
        "bench": "cold_demo",
        "commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "pip_before": pip_setup(),
        "load_average_before": os.getloadavg(),
    }
    base = Path(tempfile.mkdtemp(prefix="antiphon-cold-"))
    clone = base / "antiphon"
    try:
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        results["cold"] = run_demo(clone)
        results["warm"] = run_demo(clone)
    finally:
        if args.keep:
            print(f"the clone is kept in {clone}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    path = Path(__file__).parent / "results" / "cold_demo.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
