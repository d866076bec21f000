"""The demand bound behind ``bench.burst_bound``: what no scheduler can beat, on hand-made streams."""

from __future__ import annotations

import pytest
from bench.burst_bound import Segment, deadlines, demand_ratio, f_min, finest


def seg(cost_s: float, audio_s: float = 1.0, gap_after_s: float = 0.0) -> Segment:
    return Segment("x", cost_s, audio_s, gap_after_s)


def test_finest_cuts_at_every_clause_boundary_and_keeps_every_word() -> None:
    text = "Well, first things first; then, we go. Done: all of it."
    parts = finest(text)
    assert parts == ["Well,", "first things first;", "then,", "we go.", "Done:", "all of it."]
    assert " ".join(parts).split() == text.split()


def test_first_audio_of_every_stream_needs_all_first_segments_done_by_then() -> None:
    # Three streams of one 0.2 s segment on two cores: 0.6 CPU s by F, so F >= 0.3 s.
    streams = [[seg(0.2)] for _ in range(3)]
    assert f_min(streams, cores=2, jitter_s=0.2) == pytest.approx(0.3, abs=2e-3)
    assert demand_ratio(deadlines(streams, 0.3, 0.2), 2)[0] == pytest.approx(1.0)


def test_a_later_segment_is_due_when_playback_reaches_it() -> None:
    # One stream on one core: 0.1 s then 1.0 s of work; the second is due at F + jitter + first audio + gap.
    streams = [[seg(0.1, audio_s=0.5, gap_after_s=0.1), seg(1.0)]]
    jobs = deadlines(streams, 0.4, jitter_s=0.2)
    assert jobs == [(0.4, 0.1), (pytest.approx(1.2), 1.0)]
    # 1.1 CPU s by F + 0.8 s: F >= 0.3 s; its first audio alone would allow 0.1 s.
    assert f_min(streams, cores=1, jitter_s=0.2) == pytest.approx(0.3, abs=2e-3)
    # Twice as fast an engine: 0.55 CPU s by F + 0.8 s, so the first segment binds (0.05 s).
    assert f_min(streams, cores=1, jitter_s=0.2, speedup=2.0) == pytest.approx(0.05, abs=2e-3)


def test_work_beyond_capacity_at_the_tightest_deadline_is_reported_there() -> None:
    jobs = [(1.0, 1.0), (2.0, 3.0), (10.0, 1.0)]
    ratio, at = demand_ratio(jobs, cores=1)
    assert (ratio, at) == (2.0, 2.0)
