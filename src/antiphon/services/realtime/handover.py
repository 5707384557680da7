"""When a realtime session moves to a new connection on the server's notice:
:class:`Handover`.

Gemini Live ends every connection after a while and says so first (``goAway`` with the
time left); a changed configuration also needs a new connection there. Resuming with the
session handle loses nothing at a quiet moment (no response owed, nothing said since the
newest handle), and may cut a turn short otherwise. So a move is *announced* for one
connection and *requested* (``request(conn_id)``, a mailbox item for the session's main
task) at the first quiet moment the handler reports, or when the time allowed runs out,
whichever comes first. One timer per announcement; cancelled when the connection goes.
No I/O: the session owns the move itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from antiphon.aio.callbacks import ignore

__all__ = ["Handover"]


class Handover:
    """One pending move at a time.

    Args:
        request: called once per announcement with the connection id to move from.
    """

    def __init__(self, request: Callable[[int], None]) -> None:
        self._request = request
        self._conn_id: int | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        return self._conn_id is not None

    def announce(self, conn_id: int, within: float) -> None:
        """Move away from ``conn_id`` at the next quiet moment, at the latest in ``within``
        seconds. A second announcement for the same connection keeps the earlier limit."""
        if self._conn_id == conn_id:
            return
        self.cancel()
        self._conn_id = conn_id
        self._timer = asyncio.get_running_loop().call_later(max(within, 0.0), self._fire)

    def quiet(self) -> None:
        """Nothing would be lost by moving now."""
        if self._conn_id is not None:
            self._fire()

    def cancel(self) -> None:
        """The connection is gone (or the session ended): nothing to move."""
        self._conn_id = None
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        """The session ended: cancel, and let go of ``request`` (the session's method;
        the session holds this, a cycle). Announcements after it change nothing."""
        self.cancel()
        self._request = ignore

    def _fire(self) -> None:
        conn_id = self._conn_id
        self.cancel()
        if conn_id is not None:
            self._request(conn_id)
