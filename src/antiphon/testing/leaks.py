"""Assert that code under test left no task, thread or socket behind."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterable


def _socket_inodes() -> set[int]:
    inodes: set[int] = set()
    fd_dir = "/proc/self/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def client_sockets_to(ports: Iterable[int]) -> list[str]:
    """Open sockets of this process whose remote end is one of ``ports`` (Linux only)."""
    wanted = set(ports)
    if not wanted or not sys.platform.startswith("linux"):
        return []
    mine = _socket_inodes()
    found: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, remote, inode = cols[1], cols[2], int(cols[9])
            if inode in mine and int(remote.rsplit(":", 1)[1], 16) in wanted:
                found.append(f"{local} -> {remote} (inode {inode})")
    return found


class LeakCheck:
    """Snapshot at creation; :meth:`assert_clean` fails if tasks, threads or client
    sockets to ``ports`` appeared since and did not go away within ``settle`` seconds.
    """

    def __init__(self, *, ports: Iterable[int] = ()) -> None:
        self.ports = set(ports)
        self._tasks = set(asyncio.all_tasks())
        self._threads = set(threading.enumerate())

    def leftovers(self) -> list[str]:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t not in self._tasks and t is not current]
        threads = [t for t in threading.enumerate() if t not in self._threads and t.is_alive()]
        return (
            [f"task {t.get_name()}: {t.get_coro()!r}" for t in tasks]
            + [f"thread {t.name}" for t in threads]
            + [f"socket {s}" for s in client_sockets_to(self.ports)]
        )

    async def assert_clean(self, *, settle: float = 1.0) -> None:
        """Wait up to ``settle`` seconds for stragglers, then fail listing what remains."""
        loop = asyncio.get_running_loop()
        end = loop.time() + settle
        while True:
            left = self.leftovers()
            if not left:
                return
            if loop.time() >= end:
                raise AssertionError("left behind:\n  " + "\n  ".join(left))
            await asyncio.sleep(0.01)
