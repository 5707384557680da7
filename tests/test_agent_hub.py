"""``EventHub``: listeners and subscriptions get every event in order, from when they joined."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import pytest

from antiphon.agent.events import AgentEvent, AgentSpeaking
from antiphon.agent.hub import EventHub


def said(n: int) -> AgentEvent:
    return AgentSpeaking(f"sentence {n}", n)


async def test_a_subscription_gets_every_event_from_its_subscribe_then_the_end() -> None:
    hub = EventHub()
    hub.emit(said(0))
    sub = hub.subscribe()
    for n in (1, 2):
        hub.emit(said(n))
    hub.close()
    assert [e async for e in sub] == [said(1), said(2)]
    late = hub.subscribe()  # a closed hub: the iteration ends at once
    assert [e async for e in late] == []


def test_listeners_joining_or_leaving_during_an_event_count_from_the_next() -> None:
    hub = EventHub()
    got: list[tuple[str, AgentEvent]] = []
    removers: dict[str, Callable[[], None]] = {}

    def first(event: AgentEvent) -> None:
        got.append(("first", event))
        if event == said(1):
            removers["second"]()  # still gets this event, not the next
            hub.add_listener(lambda e: got.append(("third", e)))  # from the next one

    def second(event: AgentEvent) -> None:
        got.append(("second", event))

    removers["first"] = hub.add_listener(first)
    removers["second"] = hub.add_listener(second)
    hub.emit(said(1))
    hub.emit(said(2))
    removers["second"]()  # removing twice is harmless
    assert got == [
        ("first", said(1)),
        ("second", said(1)),
        ("first", said(2)),
        ("third", said(2)),
    ]


def test_a_failing_listener_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = EventHub()
    got: list[AgentEvent] = []

    def bad(event: AgentEvent) -> None:
        raise RuntimeError("listener bug")

    hub.add_listener(bad)
    hub.add_listener(got.append)
    hub.emit(said(1))
    assert got == [said(1)]
    assert "an agent event listener failed" in caplog.text


async def test_subscriptions_are_held_weakly_and_leave_no_cycle() -> None:
    hub = EventHub()
    kept = hub.subscribe()
    dropped = hub.subscribe()
    gc.disable()  # forgotten by reference counting alone
    try:
        del dropped
        assert len(hub._subscribers) == 1
        hub.emit(said(1))
        await kept.aclose()
        assert len(hub._subscribers) == 0
        hub.emit(said(2))
        assert [e async for e in kept] == []  # aclose dropped what was queued
        other = hub.subscribe()
        ref = weakref.ref(hub)
        del hub, other, kept
        assert ref() is None
    finally:
        gc.enable()
