"""Structured-concurrency helpers: owned tasks, closable channels, deadlines, clocks."""

from antiphon.aio.channel import Channel, ChannelClosed, ChannelFull
from antiphon.aio.clock import Clock, MonotonicClock, VirtualClock
from antiphon.aio.deadline import deadline
from antiphon.aio.tasks import TaskOwner

__all__ = [
    "Channel",
    "ChannelClosed",
    "ChannelFull",
    "Clock",
    "MonotonicClock",
    "TaskOwner",
    "VirtualClock",
    "deadline",
]
