"""bench/concurrency.py: its playback simulation, and its reduced mode end to end through ``serve``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench.concurrency import BYTES_PER_S, playback_gaps

ROOT = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT_S = 240


def test_playback_gaps_follow_a_listener_with_a_jitter_buffer() -> None:
    second = BYTES_PER_S
    on_time = [(0.0, second), (0.9, second), (1.5, second)]
    assert playback_gaps(on_time, jitter_s=0.2) == []
    late = [(0.0, second), (1.5, second), (2.0, second)]
    # The listener starts at 0.2 s, reaches the second chunk at 1.2 s, waits 0.3 s; then it is ahead again.
    assert playback_gaps(late, jitter_s=0.2) == pytest.approx([0.3])
    assert playback_gaps([], jitter_s=0.2) == []


def test_smoke_mode_runs_both_schedulers_and_writes_results(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.concurrency", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "concurrency_smoke.json").read_text())
    assert (tmp_path / "concurrency_smoke.png").stat().st_size > 10_000
    assert set(results["schedulers"]) == {"fifo", "deadline"}
    for result in results["schedulers"].values():
        assert [row["concurrency"] for row in result["bursts"]] == [1, 4]
        assert all(row["ok"] == row["streams"] > 0 for row in result["bursts"])
        assert len(result["ramp"]) == 1
        assert all(row["ttfa_p50_ms"] > 0 for row in result["bursts"])
    assert results["passed"] is True
    assert {"fifo", "deadline"} <= set(results["targets"])
