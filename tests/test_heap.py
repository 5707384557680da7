"""The server's heap keeper: young collections and freezes while calls run, full ones
when the server falls idle, or when memory grew by a quarter and enough time passed."""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from antiphon.server.heap import FULL_EVERY, MEMORY_GROWTH, HeapKeeper


@dataclass
class FakeCollector:
    """Counts as :mod:`gc` does: ``young`` objects are tracked and not frozen, ``frozen``
    ones are skipped by collections; ``garbage`` (of the young) and ``frozen_garbage``
    (of the frozen) are unreachable cycles."""

    young: int = 0
    frozen: int = 0
    garbage: int = 0
    frozen_garbage: int = 0
    calls: list[str] = field(default_factory=list)

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect({generation})")
        found, self.garbage = self.garbage, 0
        self.young -= found
        return found

    def freeze(self) -> None:
        self.calls.append("freeze")
        self.frozen += self.young
        self.frozen_garbage += self.garbage
        self.young = self.garbage = 0

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")
        self.young += self.frozen
        self.garbage += self.frozen_garbage
        self.frozen = self.frozen_garbage = 0

    def memory(self) -> int:
        """Objects held, garbage included (the peak is the test's to keep)."""
        return self.young + self.frozen


class Busy:
    def __init__(self) -> None:
        self.calls = 0

    def idle(self) -> bool:
        return self.calls == 0


steps = st.lists(
    st.tuples(
        st.integers(0, 3),  # calls running at the tick
        st.integers(0, 400),  # objects made since the last tick that live on
        st.integers(0, 50),  # young cycles made and dropped since the last tick
        st.integers(0, 200),  # frozen objects freed by reference counting
        st.integers(0, 100),  # frozen objects that became cyclic garbage
        st.sampled_from([1.0, 1.0, 60.0, FULL_EVERY]),  # seconds since the last tick
    ),
    max_size=40,
)


@given(steps)
def test_the_rule_bounds_what_stays_frozen_and_collects_once_idle(
    plan: list[tuple[int, int, int, int, int, float]],
) -> None:
    fake = FakeCollector(young=1000)
    busy = Busy()
    now = [0.0]
    peak = [fake.memory()]
    keeper = HeapKeeper(busy.idle, collector=fake, memory=lambda: peak[0], clock=lambda: now[0])
    assert keeper.settle() == 0 and keeper.base == 1000
    froze = False  # a freeze since the last full collection
    last_full = 0.0
    for calls, made, cycles, freed, died, dt in plan:
        now[0] += dt
        busy.calls = calls
        fake.young += made + cycles
        fake.garbage += cycles
        alive = fake.frozen - fake.frozen_garbage
        fake.frozen -= min(freed, alive)
        alive = fake.frozen - fake.frozen_garbage
        fake.frozen_garbage += min(died, alive)
        peak[0] = max(peak[0], fake.memory())
        due = peak[0] > keeper.base * (1 + MEMORY_GROWTH) and now[0] - last_full >= FULL_EVERY
        before = len(fake.calls)
        outcome = keeper.tick()
        if calls:
            assert outcome == ("collected" if due else "froze")
        did = fake.calls[before:]
        if calls == 0:
            # once each time the server falls idle after freezing; then nothing at all
            assert outcome == ("collected" if froze else "idle")
        if outcome == "idle":
            assert did == []
        elif outcome == "froze":
            assert calls > 0 and did == ["collect(1)", "freeze"]
            # while calls run, a full collection waits for both a quarter's growth of
            # the peak memory and FULL_EVERY since the last one
        else:
            assert did == ["collect(1)", "freeze", "unfreeze", "collect(2)", "freeze"]
            assert fake.frozen_garbage == 0 and keeper.base == peak[0]
            assert calls == 0 or now[0] - last_full >= FULL_EVERY
            last_full = now[0]
        if outcome != "idle":
            assert fake.young == 0 and fake.garbage == 0  # every young cycle collected
        froze = outcome == "froze"


class Node:
    me: Node | None = None

    @classmethod
    def cycle(cls) -> tuple[Node, weakref.ref[Node]]:
        """A node that refers to itself, and a weak reference that tells when it is gone."""
        node = cls()
        node.me = node
        return node, weakref.ref(node)


def test_frozen_cyclic_garbage_is_collected_when_the_server_falls_idle() -> None:
    busy = Busy()
    keeper = HeapKeeper(busy.idle)
    try:
        keeper.settle()
        busy.calls = 1
        young, young_gone = Node.cycle()
        old, old_gone = Node.cycle()
        del young
        assert keeper.tick() == "froze"
        assert young_gone() is None  # young cyclic garbage: the tick's young collection
        del old
        gc.collect()
        assert old_gone() is not None  # frozen while alive: no collection scans it
        busy.calls = 0
        assert keeper.tick() == "collected"
        assert old_gone() is None
        assert keeper.full_collections == 2 and keeper.found >= 2
        assert keeper.tick() == "idle"
    finally:
        gc.unfreeze()


def test_a_busy_server_collects_in_full_once_grown_a_quarter_and_not_too_often() -> None:
    busy = Busy()
    now = [0.0]
    memory = [100]
    keeper = HeapKeeper(busy.idle, memory=lambda: memory[0], clock=lambda: now[0])
    try:
        keeper.settle()
        busy.calls = 1
        old, old_gone = Node.cycle()
        assert keeper.tick() == "froze"
        del old
        memory[0] = 126
        now[0] = FULL_EVERY - 1.0
        assert keeper.tick() == "froze"  # grown, but the last full collection was recent
        assert old_gone() is not None
        now[0] = FULL_EVERY
        assert keeper.tick() == "collected"
        assert old_gone() is None and keeper.base == 126
        now[0] = 3 * FULL_EVERY
        assert keeper.tick() == "froze"  # long since the last one, but no growth
    finally:
        gc.unfreeze()
