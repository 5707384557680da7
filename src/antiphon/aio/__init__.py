"""Structured-concurrency helpers: owned tasks, bounded closable channels, deadlines, clocks."""

from antiphon.aio.channel import Channel, ChannelClosed, ChannelFull, Overflow
from antiphon.aio.clock import Clock, MonotonicClock, VirtualClock
from antiphon.aio.deadline import deadline
from antiphon.aio.tasks import TaskOwner, shielded_wait

__all__ = [
    "Channel",
    "ChannelClosed",
    "ChannelFull",
    "Clock",
    "MonotonicClock",
    "Overflow",
    "TaskOwner",
    "VirtualClock",
    "deadline",
    "shielded_wait",
]
