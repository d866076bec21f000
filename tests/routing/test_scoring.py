"""Peak-EWMA, fading hints, the load score and the power of two choices."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orpheus_tts.routing.scoring import DecayingValue, PeakEwma, load_score, pick_two

PRIOR_MS = 200.0
DECAY_S = 10.0


def test_a_slow_sample_is_adopted_at_once() -> None:
    ewma = PeakEwma(PRIOR_MS, DECAY_S, now=0.0)
    ewma.observe(2000.0, now=0.1)
    assert ewma.value(0.1) == pytest.approx(2000.0)


def test_fast_samples_pull_the_estimate_down() -> None:
    ewma = PeakEwma(PRIOR_MS, DECAY_S, now=0.0)
    ewma.observe(50.0, now=0.0)
    ewma.observe(1000.0, now=1.0)
    for step in range(1, 600):
        ewma.observe(50.0, now=1.0 + step * 0.1)
    assert 50.0 < ewma.value(1.1) < 1000.0
    assert ewma.value(60.9) == pytest.approx(50.0, rel=0.05)


def test_steady_samples_hold_the_estimate_steady() -> None:
    ewma = PeakEwma(PRIOR_MS, DECAY_S, now=0.0)
    for step in range(200):
        ewma.observe(120.0, now=step * 0.05)
    assert ewma.value(10.0) == pytest.approx(120.0, rel=0.01)


def test_an_idle_estimate_fades_so_the_endpoint_is_tried_again() -> None:
    ewma = PeakEwma(PRIOR_MS, DECAY_S, now=0.0)
    ewma.observe(3000.0, now=0.0)
    assert ewma.value(DECAY_S) == pytest.approx(3000.0 / math.e, rel=1e-3)
    assert ewma.value(10 * DECAY_S) < 1.0
    ewma.observe(80.0, now=10 * DECAY_S)
    assert ewma.value(10 * DECAY_S) == pytest.approx(80.0, rel=1e-3), "after a silence the new sample rules"


def test_the_prior_applies_until_the_first_sample() -> None:
    ewma = PeakEwma(PRIOR_MS, DECAY_S, now=0.0)
    assert ewma.value(0.0) == PRIOR_MS
    ewma.observe(20.0, now=0.0)
    assert ewma.value(0.0) == pytest.approx(20.0)


def test_censored_sample_only_raises() -> None:
    ewma = PeakEwma(PRIOR_MS, DECAY_S, now=0.0)
    ewma.observe(100.0, now=0.0)
    ewma.observe_at_least(50.0, now=0.0)
    assert ewma.value(0.0) == pytest.approx(100.0)
    ewma.observe_at_least(900.0, now=0.0)
    assert ewma.value(0.0) == pytest.approx(900.0)


def test_a_lost_race_keeps_its_endpoint_penalised_until_a_real_sample() -> None:
    ewma = PeakEwma(PRIOR_MS, DECAY_S, now=0.0)
    ewma.observe(40.0, now=0.0)
    ewma.observe_censored(340.0, now=1.0)  # lost a hedged race after 340 ms: slower than that
    assert ewma.value(1.0) == pytest.approx(340.0)
    assert ewma.value(1.0 + 10 * DECAY_S) == pytest.approx(340.0), "a lower bound is not news that fades"
    ewma.observe_censored(100.0, now=200.0)
    assert ewma.value(200.0) == pytest.approx(340.0), "a smaller bound says nothing new"
    ewma.observe(60.0, now=300.0)
    assert ewma.value(300.0) == pytest.approx(60.0), "a real sample replaces the bound"
    ewma.observe_censored(500.0, now=301.0)
    ewma.restart(PRIOR_MS, now=302.0)
    assert ewma.value(302.0) == PRIOR_MS, "an endpoint back from the dead starts afresh"


def test_queue_hint_fades_with_age() -> None:
    hint = DecayingValue(decay_s=5.0)
    assert hint.value(0.0) == 0.0
    hint.set(40.0, now=0.0)
    assert hint.value(0.0) == pytest.approx(40.0)
    assert hint.value(5.0) == pytest.approx(40.0 / 2.718281828, rel=1e-3)
    assert hint.value(100.0) < 0.01


def test_load_score_formula() -> None:
    assert load_score(100.0, inflight=2, queue_hint=3.0) == pytest.approx(600.0)
    assert load_score(100.0, inflight=0, queue_hint=0.0) == pytest.approx(100.0)


def test_pick_two_between_two_always_takes_the_lower() -> None:
    rng = random.Random(1)
    scores = {"a": 5.0, "b": 1.0}
    assert {pick_two(["a", "b"], scores.__getitem__, rng) for _ in range(50)} == {"b"}


def test_pick_two_never_picks_the_worst_of_many_and_spreads_load() -> None:
    rng = random.Random(2)
    scores = {name: float(i) for i, name in enumerate("abcde")}
    picks = [pick_two(list(scores), scores.__getitem__, rng) for _ in range(500)]
    assert "e" not in picks
    assert {"a", "b", "c"} <= set(picks), "two random choices must not collapse onto the single best"


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_pick_two_returns_a_candidate_no_worse_than_some_other(scores: list[float], seed: int) -> None:
    items = list(range(len(scores)))
    chosen = pick_two(items, scores.__getitem__, random.Random(seed))
    assert chosen in items
    if len(items) > 1:
        assert sum(scores[chosen] <= s for s in scores) >= 2


def test_pick_two_needs_candidates() -> None:
    with pytest.raises(ValueError, match="no candidates"):
        pick_two([], float, random.Random())
