"""Where the server's time goes per call: ``antiphon serve`` under cProfile, callers apart.

How it is built: the agent on the in-process doubles (as in ``bench/capacity.py``) is
served by ``python -m cProfile -m antiphon.cli serve`` in a subprocess; the callers run in
a second subprocess (``bench/server_load.py --clients``), so the profile holds the
server's work only. The server is stopped with SIGINT (uvicorn exits cleanly and cProfile
writes its stats); the top functions by own time and by cumulative time are printed.

    .venv/bin/python bench/profile_server.py [--calls 20] [--seconds 10] [--top 30]

Writes the raw profile to ``bench/results/profile_server.prof`` (open it with ``pstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import signal
import sys
import tempfile
from pathlib import Path

from benchkit import free_port, wait_listening
from capacity import AGENT_FILE

HERE = Path(__file__).resolve().parent


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "profile_server.prof")
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        agent_file = Path(tmp) / "agent.py"
        agent_file.write_text(AGENT_FILE)
        port = free_port()
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cProfile", "-o", str(a.out), "-m", "antiphon.cli",
            "serve", str(agent_file), "--port", str(port), "--max-sessions", str(a.calls + 10),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await wait_listening(port, server, 60.0)
            clients = await asyncio.create_subprocess_exec(
                sys.executable, str(HERE / "server_load.py"), "--clients", f"127.0.0.1:{port}",
                "--sizes", str(a.calls), "--seconds", str(a.seconds),
                stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await clients.wait()
        finally:
            if server.returncode is None:
                server.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(server.wait(), 30)
                except TimeoutError:
                    server.kill()
                    await server.wait()
    stats = pstats.Stats(str(a.out))
    stats.sort_stats("tottime").print_stats(a.top)
    stats.sort_stats("cumulative").print_stats(a.top)


if __name__ == "__main__":
    asyncio.run(main())
