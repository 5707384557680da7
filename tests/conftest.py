"""How the suite controls time (docs/testing.md tells the whole story).

- Tests marked ``virtual_time`` (and the conformance suites, whose classes set
  ``virtual_time = True``) run on :class:`antiphon.testing.vloop.VirtualTimeLoop`: the
  clock jumps to the next timer whenever the loop is idle, so deadlines are exact and
  free however loaded the machine is.
- Tests marked ``realtime`` drive real threads (native SDKs, local engines, a browser)
  and keep wall-clock time; their margins scale with ``ANTIPHON_TEST_TIME_SCALE``
  (:func:`antiphon.testing.vloop.time_scale`; 3 when ``CI`` is set). ``-m realtime``
  runs them alone.
- Hypothesis runs under a named profile: ``ci`` when ``CI`` is set, else ``dev``;
  ``HYPOTHESIS_PROFILE`` picks one by name. Property tests get their own per-test
  timeout (:data:`HYPOTHESIS_TIMEOUT`), not the suite's 60 s.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from antiphon.testing.vloop import pytest_asyncio_loop_factories, uses_virtual_time

__all__ = ["pytest_asyncio_loop_factories"]

# No deadline per example and no "too slow" health check: both measure wall-clock time,
# which a loaded machine stretches. The example counts keep the slowest property test far
# under the per-test timeout on a loaded 2-core machine; ``ci`` is derandomized so a run
# is repeatable.
settings.register_profile(
    "dev", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=100
)
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=100,
    derandomize=True,
    print_blob=True,
)
# ``deep``: many more examples, to shake a state machine after a change (by hand, not CI)
settings.register_profile(
    "deep", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=3000
)
_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _CI else "dev"))


#: The per-test timeout of property tests (pyproject's ``timeout`` is for the rest): their
#: cost is examples x CPU, which a loaded machine stretches without anything being wrong.
HYPOTHESIS_TIMEOUT = 240


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if uses_virtual_time(item) and item.get_closest_marker("realtime") is not None:
            raise pytest.UsageError(f"{item.nodeid}: marked both realtime and virtual_time")
        test = getattr(item, "obj", None)
        if getattr(test, "is_hypothesis_test", False) and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(HYPOTHESIS_TIMEOUT))
