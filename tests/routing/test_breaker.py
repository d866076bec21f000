"""The circuit breaker's state machine, driven with explicit timestamps."""

from __future__ import annotations

import pytest

from orpheus_tts.routing import Breaker, BreakerState

THRESHOLD = 3
COOLDOWN_S = 5.0


@pytest.fixture
def breaker() -> Breaker:
    return Breaker(THRESHOLD, COOLDOWN_S)


def fail(breaker: Breaker, times: int, now: float) -> None:
    for _ in range(times):
        permit = breaker.acquire(now)
        assert permit is not None
        breaker.record_failure(permit, now)


def test_opens_after_threshold_consecutive_failures(breaker: Breaker) -> None:
    fail(breaker, THRESHOLD - 1, now=0.0)
    assert breaker.state(0.0) is BreakerState.CLOSED
    fail(breaker, 1, now=0.0)
    assert breaker.state(0.0) is BreakerState.OPEN
    assert breaker.acquire(1.0) is None
    assert not breaker.available(COOLDOWN_S - 0.01)
    assert breaker.retry_in_s(1.0) == pytest.approx(COOLDOWN_S - 1.0)
    assert breaker.opens == 1


def test_success_resets_the_count(breaker: Breaker) -> None:
    fail(breaker, THRESHOLD - 1, now=0.0)
    permit = breaker.acquire(0.0)
    assert permit is not None
    breaker.record_success(permit)
    fail(breaker, THRESHOLD - 1, now=0.0)
    assert breaker.state(0.0) is BreakerState.CLOSED


def test_half_open_admits_exactly_one_probe(breaker: Breaker) -> None:
    fail(breaker, THRESHOLD, now=0.0)
    later = COOLDOWN_S + 0.1
    assert breaker.state(later) is BreakerState.HALF_OPEN
    probe = breaker.acquire(later)
    assert probe is not None
    assert probe.probe
    assert breaker.acquire(later) is None
    assert not breaker.available(later)
    breaker.record_success(probe)
    assert breaker.state(later) is BreakerState.CLOSED
    assert breaker.acquire(later) is not None


def test_failed_probe_reopens_for_a_full_cooldown(breaker: Breaker) -> None:
    fail(breaker, THRESHOLD, now=0.0)
    probe = breaker.acquire(COOLDOWN_S)
    assert probe is not None
    breaker.record_failure(probe, COOLDOWN_S)
    assert breaker.state(COOLDOWN_S + 1.0) is BreakerState.OPEN
    assert breaker.state(2 * COOLDOWN_S) is BreakerState.HALF_OPEN


def test_released_probe_frees_the_slot(breaker: Breaker) -> None:
    fail(breaker, THRESHOLD, now=0.0)
    probe = breaker.acquire(COOLDOWN_S)
    assert probe is not None
    breaker.release(probe)
    assert breaker.state(COOLDOWN_S) is BreakerState.HALF_OPEN
    assert breaker.acquire(COOLDOWN_S) is not None


def test_outcomes_of_requests_admitted_before_opening_are_ignored(breaker: Breaker) -> None:
    early = [breaker.acquire(0.0) for _ in range(THRESHOLD + 2)]
    for permit in early[:THRESHOLD]:
        assert permit is not None
        breaker.record_failure(permit, 0.0)
    assert breaker.state(0.0) is BreakerState.OPEN
    late_success = early[-1]
    assert late_success is not None
    breaker.record_success(late_success)
    assert breaker.state(0.0) is BreakerState.OPEN, "a stale success must not close an open circuit"
    stale_failure = early[-2]
    assert stale_failure is not None
    breaker.record_failure(stale_failure, 1.0)
    assert breaker.retry_in_s(1.0) == pytest.approx(COOLDOWN_S - 1.0), "a stale failure must not extend the cooldown"


def test_trip_and_end_cooldown(breaker: Breaker) -> None:
    breaker.trip(0.0)
    assert breaker.state(0.0) is BreakerState.OPEN
    breaker.end_cooldown(1.0)
    assert breaker.state(1.0) is BreakerState.HALF_OPEN


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        Breaker(0, 1.0)
