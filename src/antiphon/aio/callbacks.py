"""What a closed object keeps in place of its owner's callback.

An object that reports to its owner through one of the owner's methods (the reply runner,
a realtime session's handover and watchdog) forms a reference cycle with it. When it is
closed it lets go of that method and keeps :func:`ignore` instead, so that the cycle is
broken without the garbage collector (DESIGN.md rule 3) and news that comes after the
close is dropped. ``ignore`` takes ``object``, so it stands in for a callback of any one
argument.
"""

from __future__ import annotations

__all__ = ["ignore"]


def ignore(_: object) -> None:
    """A callback that drops what it is given."""
