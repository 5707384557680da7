"""The server's heap, settled once it has started: what startup made is never scanned again.

CPython's cycle collector pauses the event loop while it scans; a full collection scans
every tracked object, so in a server that has loaded its models, modules and app it
costs tens of milliseconds, every call's audio late by as much. :func:`settle_heap`
runs once, after startup: a last full collection, then ``gc.freeze()`` moves every object
left into the permanent generation, which collections skip. What calls make stays
collectable, and antiphon leaves none of it in reference cycles
(``tests/test_no_cycles.py``), so it goes by reference counting and collections stay
short and rare. Measured in ``docs/performance.md`` (capacity).
"""

from __future__ import annotations

import gc
import logging

__all__ = ["settle_heap"]

log = logging.getLogger(__name__)


def settle_heap() -> int:
    """Collect, then freeze what is left (see the module doc); returns the frozen count."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("heap settled: %d objects frozen out of collections", frozen)
    return frozen
