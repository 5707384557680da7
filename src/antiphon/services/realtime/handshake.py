"""The start of every connection of a realtime session, bounded by the ``ready`` deadline.

How it is built: one coroutine, :func:`handshake`, run by the session's main task on a
fresh connection: wait for the server's greeting (``session.created``; xAI's
``conversation.created``) when the service speaks first, send the configuring messages
(``session.update``, Gemini's ``setup``, plus what a reconnect replays), then wait for the
acknowledgement (``session.updated``, ``setupComplete``). Everything else the server says
meanwhile goes to the session's ``on_decision``. One ``asyncio.timeout`` covers the whole
exchange, so a server that accepts the socket and says nothing fails with a
:class:`~antiphon.errors.ProviderTimeoutError` naming the step it stopped at.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from antiphon.errors import ProviderError, ProviderTimeoutError
from antiphon.net.ws import ConnectionLost, WsConnection
from antiphon.protocols import realtime as rt

__all__ = ["CloseError", "handshake"]

log = logging.getLogger("antiphon.services.realtime")


class CloseError(Protocol):
    """The model's mapping of a server close to a typed error."""

    def __call__(self, code: int | None, reason: str, *, stage: str) -> ProviderError: ...


async def handshake(
    conn: WsConnection,
    sm: rt.RealtimeState,
    first_messages: Sequence[str],
    *,
    server_speaks_first: bool,
    ready_timeout: float,
    provider: str,
    close_error: CloseError,
    on_decision: Callable[[rt.Decision], None],
) -> str | None:
    """Configure the session on ``conn``; the session id the server gave, if any.

    Raises:
        ProviderTimeoutError: no greeting or no acknowledgement within ``ready_timeout``
            (stage ``session.created`` or ``session.update``).
        ProviderError: the server closed the connection (from ``close_error``).
    """
    session_id: str | None = None
    stage = "session.created"
    ready = asyncio.timeout(ready_timeout)
    try:
        async with ready:
            created = not server_speaks_first
            while not created:
                for d in sm.feed_all(await conn.recv(stage=stage)):
                    if d.act is rt.Act.CREATED:
                        assert isinstance(d.event, rt.SessionCreated)
                        session_id = d.event.session_id
                        created = True
                    else:
                        log.debug("%s: before session.created: %s", provider, d.event)
            stage = "session.update"
            for m in first_messages:
                await conn.send(m, stage="send")
            configured = False
            while not configured:
                for d in sm.feed_all(await conn.recv(stage=stage)):
                    if d.act is rt.Act.READY:
                        configured = True
                        if isinstance(d.event, rt.SessionCreated):
                            session_id = d.event.session_id
                    else:
                        on_decision(d)
    except TimeoutError:
        if not ready.expired():
            raise
        # only the ready deadline lands here: a send that hangs is a ProviderTimeoutError
        # of its own (stage "send"), which is not a builtin TimeoutError
        raise ProviderTimeoutError(
            f"no {'session.created' if stage == 'session.created' else 'session.updated'}",
            provider=provider,
            stage=stage,
            timeout=ready_timeout,
            hint="the server accepted the connection but did not start the session",
        ) from None
    except ConnectionLost as exc:
        raise close_error(exc.close_code, exc.close_reason, stage=stage) from None
    return session_id
