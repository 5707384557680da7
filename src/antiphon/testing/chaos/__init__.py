"""Call-level chaos: one fault at a time, alongside healthy calls, through the real server.

:func:`run_chaos` serves :func:`~antiphon.server.app.create_app` on loopback (uvicorn in
the caller's event loop), opens ``healthy`` calls that talk turn after turn over real
WebSockets, injects one :data:`FAULTS` entry (a faulty call, a hostile peer, or a drain)
and records, as a :class:`ChaosResult`:

- how the faulty call ended: the close code the server chose (read from the call's
  bridge, so a peer that never reads still has one) and, where the peer can see it, the
  code it got; when, on the run's clock, measured from the start of the fault;
- for each healthy call: turns answered, and the worst gap between two frames of agent
  audio within one reply, on the run's clock (a frame is stamped when the peer receives
  it);
- ``/livez`` polled throughout (status and wall latency);
- what was left afterwards: tasks, threads, sockets (:class:`~antiphon.testing.leaks.LeakCheck`)
  and calls still in the server's registry.

Two clocks. ``virtual=True`` (the test suite): the app's deadlines and every session run
on one :class:`~antiphon.aio.clock.VirtualClock`; a conductor sends each peer's next
20 ms frame, waits until the server has taken every frame and the loop is quiet, then
moves the clock 20 ms. Deadlines that the providers and tools keep on the loop's own
clock (an LLM's idle deadline, ``tool_timeout``, ``send_timeout``) still pass in real
time meanwhile. ``virtual=False`` (``bench/chaos.py``): everything on real time, frames
sent every 20 ms of the loop's clock, gaps and bounds in seconds of wall time.

The services are the doubles of :mod:`antiphon.testing.agent` (one STT per call, a
shared LLM and TTS); a provider fault swaps in a real plugin talking to its loopback
fake server with a :class:`~antiphon.testing.faults.FaultPlan` (OpenAI chat for the LLM,
Deepgram for TTS), each fake on a thread of its own started before the leak snapshot.

The package, along its seams: :mod:`.calls` (the tick clock, the agent, the peers, the
result and the :class:`Chaos` conductor), :mod:`.faults` (:class:`Fault` and the
:data:`FAULTS` table) and :mod:`.runner` (:func:`run_chaos`). The names are imported here.
"""

from antiphon.testing.chaos.calls import Chaos, ChaosResult, HealthyCall, TickClock
from antiphon.testing.chaos.faults import FAULTS, TURNS, Fault
from antiphon.testing.chaos.runner import run_chaos

__all__ = [
    "FAULTS",
    "TURNS",
    "Chaos",
    "ChaosResult",
    "Fault",
    "HealthyCall",
    "TickClock",
    "run_chaos",
]
