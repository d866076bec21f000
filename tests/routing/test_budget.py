"""Sliding-window budgets for hedges and failovers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orpheus_tts.routing.budget import Budget, WindowCounter

WINDOW_S = 10.0


def test_reserve_then_ratio() -> None:
    budget = Budget(ratio=0.1, reserve=2, window_s=WINDOW_S)
    for _ in range(10):
        budget.record_request(0.0)
    # 10 requests × 0.1 + 2 reserve = 3 extra requests.
    assert [budget.try_spend(0.0) for _ in range(4)] == [True, True, True, False]
    assert budget.snapshot(0.0).denied_total == 1
    for _ in range(10):
        budget.record_request(0.5)
    assert budget.try_spend(0.5)
    assert not budget.try_spend(0.5)


def test_the_window_slides() -> None:
    budget = Budget(ratio=0.0, reserve=1, window_s=WINDOW_S)
    assert budget.try_spend(0.0)
    assert not budget.try_spend(WINDOW_S / 2)
    assert budget.try_spend(WINDOW_S + 0.1)


def test_window_counter_forgets_old_buckets() -> None:
    counter = WindowCounter(WINDOW_S)
    counter.add(0.0, 5)
    counter.add(5.0, 3)
    assert counter.total(5.0) == 8
    assert counter.total(10.5) == 3
    assert counter.total(1000.0) == 0


@given(st.lists(st.tuples(st.floats(0, 0.5), st.booleans()), max_size=300))
def test_spent_never_exceeds_the_allowance(events: list[tuple[float, bool]]) -> None:
    budget = Budget(ratio=0.1, reserve=3, window_s=WINDOW_S)
    now = 0.0
    for step, is_request in events:
        now += step
        if is_request:
            budget.record_request(now)
        else:
            budget.try_spend(now)
        snap = budget.snapshot(now)
        assert snap.spent <= 0.1 * snap.requests + 3 + 1e-9 or snap.spent <= 3
