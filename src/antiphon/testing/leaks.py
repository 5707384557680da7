"""Assert that code under test left no task, thread or socket behind.

A fake server may run in the same event loop as the client (``testing.server.serving``):
its tasks are created in a context marked as the fake's side (:func:`fake_side`) and a
task factory records them, so :class:`LeakCheck` counts only the client's tasks. Its
sockets are told apart by port: the check looks for sockets whose *remote* end is the
fake's port, which only the client's are.

:class:`CycleCheck` finds what antiphon left in reference cycles: a session's objects
must go when it ends, by reference counting, not wait for a full garbage collection
(which on a busy server pauses the event loop for tens of milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import os
import sys
import threading
import types
import weakref
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any

__all__ = ["CycleCheck", "LeakCheck", "client_sockets_to", "fake_side", "is_fake_task"]

_FAKE_SIDE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "antiphon_fake_side", default=False
)
_fake_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def is_fake_task(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` was created on a fake server's side (see :func:`fake_side`)."""
    return task in _fake_tasks


def _marking_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    *,
    context: contextvars.Context | None = None,
) -> asyncio.Task[Any]:
    task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, context=context)
    side = context.get(_FAKE_SIDE, False) if context is not None else _FAKE_SIDE.get()
    if side:
        _fake_tasks.add(task)
    return task


@contextlib.contextmanager
def fake_side() -> Iterator[contextvars.Context]:
    """A context in which tasks count as the fake server's, not the client's.

    Yields a :class:`contextvars.Context` to create the fake's tasks in (``create_task(...,
    context=ctx)``); every task, callback and connection started from it inherits the mark.
    Installs a recording task factory on the running loop for the duration.
    """
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    if previous is not None and previous is not _marking_factory:
        raise RuntimeError("the running loop already has a task factory; cannot mark fakes")
    loop.set_task_factory(_marking_factory)  # type: ignore[arg-type]
    ctx = contextvars.copy_context()
    ctx.run(_FAKE_SIDE.set, True)
    try:
        yield ctx
    finally:
        if previous is None:
            loop.set_task_factory(None)


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
        tasks = [
            t
            for t in asyncio.all_tasks()
            if t not in self._tasks and t is not current and not is_fake_task(t)
        ]
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


def _ours(obj: object, ignore: tuple[str, ...]) -> str | None:
    """A short name for ``obj`` if it is antiphon's (a task, frame or error of its code),
    and not of a module under one of the ``ignore`` prefixes."""
    if isinstance(obj, types.FrameType):
        code = obj.f_code
        return f"frame {code.co_name}" if _PACKAGE in code.co_filename else None
    if isinstance(obj, asyncio.Task):
        coro_code: types.CodeType | None = getattr(obj.get_coro(), "cr_code", None)
        if coro_code is not None and _PACKAGE in coro_code.co_filename:
            return f"task {coro_code.co_qualname}"
        return None
    if isinstance(obj, asyncio.CancelledError):
        return "CancelledError"
    module = type(obj).__module__
    if module.startswith(ignore):
        return None
    if module == "antiphon" or module.startswith("antiphon."):
        return type(obj).__qualname__
    return None


_PACKAGE = os.sep + "antiphon" + os.sep


class CycleCheck:
    """Finds antiphon's objects left in reference cycles (freed only by a full collection).

    ``with CycleCheck() as cycles:`` collects, then turns the collector off for the block,
    so what the code under test drops must go by reference counting alone; after the
    objects are dropped, :meth:`found` lists what of antiphon's is still waiting for the
    collector (each as a short name with its count). Leaving the block turns the
    collector back on if it was on.
    """

    def __enter__(self) -> CycleCheck:
        self._was = gc.isenabled()
        gc.collect()
        gc.disable()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._was:
            gc.enable()

    def found(self, *, ignore: tuple[str, ...] = ()) -> dict[str, int]:
        """What of antiphon's sits in reference cycles now (collected by this call);
        objects of modules under an ``ignore`` prefix are not counted."""
        debug = gc.get_debug()
        gc.set_debug(debug | gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            names = [_ours(o, ignore) for o in gc.garbage]
        finally:
            gc.garbage.clear()
            gc.set_debug(debug)
            gc.collect()  # now free them: the next call reports only what is new
        counts: dict[str, int] = {}
        for name in names:
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
        return counts
