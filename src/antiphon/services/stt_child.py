"""A :class:`~antiphon.services.stt_engines.Recognizer` in a child process.

Split from :mod:`antiphon.services.stt`, which re-exports :class:`ChildProcessRecognizer`.
The parent talks to a spawned process over a pipe, one round trip per method; the child
runs :func:`_serve_recognizer`, which builds the recogniser from a picklable factory and
answers calls until told to stop. It is for native engines that hold the GIL while
they decode: in a child they run on another core while the engine thread waits on the
pipe without the GIL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from antiphon.services.stt_engines import Hypothesis, Recognizer

__all__ = ["ChildProcessRecognizer"]


def _serve_recognizer(
    conn: Any, factory: Callable[..., Recognizer], kwargs: dict[str, Any]
) -> None:
    """The child process: build the recogniser, then answer calls until told to stop."""
    try:
        recognizer = factory(**kwargs)
    except BaseException as exc:  # reported to the parent as the load failure
        conn.send(("err", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", recognizer.sample_rate))
    while True:
        try:
            method, args = conn.recv()
        except EOFError:
            return
        if method == "stop":
            recognizer.close()
            conn.send(("ok", None))
            return
        try:
            conn.send(("ok", getattr(recognizer, method)(*args)))
        except Exception as exc:
            conn.send(("err", f"{type(exc).__name__}: {exc}"))


class ChildProcessRecognizer:
    """A :class:`Recognizer` that runs ``factory(**kwargs)`` in a child process.

    For native engines that hold the GIL while they decode (PocketSphinx): on the engine
    thread they take the event loop's interpreter away for the length of each call, so
    every call of a busy server waits; in a child process they run on another core and
    the engine thread only waits on a pipe (without the GIL). Each method is one round
    trip; :meth:`close` stops the child (joined, killed if it does not stop).
    ``factory`` must be picklable (a module-level function or class).
    """

    def __init__(self, factory: Callable[..., Recognizer], **kwargs: Any) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve_recognizer, args=(child, factory, kwargs), daemon=True
        )
        self._proc.start()
        child.close()
        self.sample_rate = int(self._result())

    def _result(self) -> Any:
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"the engine process failed: {value}")
        return value

    def _call(self, method: str, *args: Any) -> Any:
        self._conn.send((method, args))
        return self._result()

    def start(self) -> None:
        self._call("start")

    def process(self, pcm: bytes) -> None:
        self._call("process", pcm)

    def process_many(self, chunks: list[bytes]) -> None:
        """Several chunks in one round trip (one ``process`` call each in the child)."""
        self._call("process_many", chunks)

    def partial(self) -> Hypothesis | None:
        result: Hypothesis | None = self._call("partial")
        return result

    def finish(self) -> Hypothesis | None:
        result: Hypothesis | None = self._call("finish")
        return result

    def close(self) -> None:
        try:
            if self._proc.is_alive():
                self._call("stop")
        except (OSError, EOFError, RuntimeError):
            pass
        finally:
            self._conn.close()
            self._proc.join(2.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(2.0)
