"""What the Azure SDK plugins' tests share: a plugin pointed at a refusing endpoint.

:func:`on_refusing_endpoint` builds the plugin for a loopback port where nothing listens,
closes it after the test and checks that no socket to that port is left; each test adds
its own checks after it (the STT's threads, the TTS's guard).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

from antiphon.testing import LeakCheck
from antiphon.testing.conformance.tts_harness import free_port

__all__ = ["on_refusing_endpoint"]


class _Closable(Protocol):
    async def aclose(self) -> None: ...


P = TypeVar("P", bound=_Closable)


@contextlib.asynccontextmanager
async def on_refusing_endpoint(make: Callable[[str], P], *, settle: float) -> AsyncIterator[P]:
    """``make(endpoint)`` for ``ws://127.0.0.1:<port>`` where nothing listens; after the
    block it is closed, and no socket to the port may be left after ``settle`` seconds."""
    port = free_port()
    leaks = LeakCheck(ports=[port])
    plugin = make(f"ws://127.0.0.1:{port}")
    try:
        yield plugin
    finally:
        await plugin.aclose()
    await leaks.assert_clean(settle=settle)
