"""What the phone line says besides audio, to the agent: key presses, answering machines.

A key press is an event, not audio: it reaches the session's listeners (``on_event``,
``events()``) as :class:`~antiphon.agent.events.DTMFReceived`, tagged with the session's
current generation; so does Twilio's answering-machine verdict on an outbound call
(:class:`~antiphon.agent.events.MachineDetected`). Both go through the session's public
hook for transports, :meth:`~antiphon.agent.AgentSession.notify`, after the values are
checked here.
"""

from __future__ import annotations

from antiphon.agent.events import DTMFReceived, MachineDetected
from antiphon.agent.session import AgentSession

__all__ = ["ANSWERED_BY", "DTMF_DIGITS", "deliver_answered_by", "deliver_dtmf"]

DTMF_DIGITS = frozenset("0123456789*#ABCD")
"""The sixteen DTMF keys (``A``-``D`` exist on the line, rarely on a phone)."""


def deliver_dtmf(session: AgentSession, digit: str) -> None:
    """Tell the session's listeners the caller pressed ``digit``.

    Raises:
        ValueError: ``digit`` is not one DTMF key.
    """
    if len(digit) != 1 or digit not in DTMF_DIGITS:
        raise ValueError(f"not a DTMF key: {digit[:8]!r} (one of 0-9, *, #, A-D)")
    session.notify(DTMFReceived(digit, session.generation))


ANSWERED_BY = frozenset(
    {"human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other",
     "fax", "unknown"}
)  # fmt: skip
"""Twilio's ``AnsweredBy`` values (answering-machine detection)."""


def deliver_answered_by(session: AgentSession, answered_by: str) -> None:
    """Tell the session's listeners who answered: a person, a machine, a fax.

    Raises:
        ValueError: not one of :data:`ANSWERED_BY`.
    """
    if answered_by not in ANSWERED_BY:
        raise ValueError(f"unknown AnsweredBy {answered_by[:40]!r}")
    session.notify(MachineDetected(answered_by, session.generation))
