"""The shared retry policy: bounded, growing, jittered waits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antiphon.errors import AuthError, ConfigError, ProviderConnectionError
from antiphon.protocols.retry import Backoff, retry_delay


@settings(max_examples=300, deadline=None)
@given(
    base=st.one_of(st.just(0.0), st.floats(1e-6, 2.0)),
    factor=st.floats(1.0, 4.0),
    cap=st.floats(0.0, 30.0),
    jitter=st.floats(0.0, 1.0),
    draw=st.floats(0.0, 1.0, exclude_max=True),
    attempt=st.integers(0, 10_000),
)
def test_delay_is_within_the_jittered_exponential_and_the_cap(
    base: float, factor: float, cap: float, jitter: float, draw: float, attempt: int
) -> None:
    b = Backoff(base=base, factor=factor, cap=cap, jitter=jitter, rand=lambda: draw)
    try:
        raw = base * factor**attempt
    except OverflowError:
        raw = math.inf if base > 0 else 0.0
    ceiling = min(raw, cap)
    got = b.delay(attempt)
    assert 0.0 <= got <= cap + 1e-9
    assert got <= ceiling * (1 + 1e-9)
    assert got >= ceiling * (1 - jitter) - 1e-9


def test_without_jitter_the_series_doubles_up_to_the_cap() -> None:
    b = Backoff(base=0.25, factor=2.0, cap=1.5, jitter=0.0)
    assert [b.delay(n) for n in range(5)] == [0.25, 0.5, 1.0, 1.5, 1.5]


def test_jitter_spreads_sessions_that_fail_together() -> None:
    b = Backoff(base=1.0, jitter=1.0)
    assert len({round(b.delay(0), 6) for _ in range(50)}) > 10


@pytest.mark.parametrize(
    "kwargs",
    [{"base": -1.0}, {"cap": -1.0}, {"factor": 0.5}, {"jitter": 1.5}],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_retry_delay_uses_the_backoff_series_and_stops_at_max_retries() -> None:
    err = ProviderConnectionError("refused", provider="x", stage="connect", retryable=True)
    b = Backoff(base=0.1, factor=2.0, cap=10.0, jitter=0.0)
    waits = [
        retry_delay(err, delivered=False, attempt=n, max_retries=3, max_wait=5.0, backoff=b)
        for n in range(4)
    ]
    assert waits == [0.1, 0.2, 0.4, None]
    auth = AuthError("bad key", provider="x", stage="connect")
    assert (
        retry_delay(auth, delivered=False, attempt=0, max_retries=3, max_wait=5.0, backoff=b)
        is None
    )
