"""Touch-tones to the agent: every transport hands a caller's key press over here.

A key press is an event, not audio: it reaches the session's listeners (``on_event``,
``events()``) as :class:`~antiphon.agent.events.DTMFReceived`, tagged with the session's
current generation. The session has no public way for a transport to emit an event, so
this module is the one place that uses its event hub (``AgentSession._emit``); the day
the session grows a public hook, only this function changes.
"""

from __future__ import annotations

from antiphon.agent.events import DTMFReceived
from antiphon.agent.session import AgentSession

__all__ = ["DTMF_DIGITS", "deliver_dtmf"]

DTMF_DIGITS = frozenset("0123456789*#ABCD")
"""The sixteen DTMF keys (``A``-``D`` exist on the line, rarely on a phone)."""


def deliver_dtmf(session: AgentSession, digit: str) -> None:
    """Tell the session's listeners the caller pressed ``digit``.

    Raises:
        ValueError: ``digit`` is not one DTMF key.
    """
    if len(digit) != 1 or digit not in DTMF_DIGITS:
        raise ValueError(f"not a DTMF key: {digit[:8]!r} (one of 0-9, *, #, A-D)")
    session._emit(DTMFReceived(digit, session.generation))
