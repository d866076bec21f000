"""bench/realtime.py in smoke mode: it runs end to end and writes its JSON and plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.realtime import playback_gaps

REPO = Path(__file__).resolve().parents[1]


def test_playback_gaps_counts_the_waits_of_a_player() -> None:
    assert playback_gaps([]) == (0.0, 0)
    # Audio keeps ahead of playback: no wait.
    assert playback_gaps([(0.0, 1.0), (0.5, 1.0), (1.5, 1.0)]) == (0.0, 0)
    # The second piece arrives 0.5 s after the first one has played out.
    waited, gaps = playback_gaps([(0.0, 1.0), (1.5, 1.0)])
    assert (round(waited, 6), gaps) == (0.5, 1)


def test_smoke_mode_writes_results_and_plot(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.realtime", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "realtime_smoke.json").read_text())
    assert set(results["realtime"]) == set(results["realtime_without_opening"]) == {"1", "2"}
    assert results["cancel_to_cancelled_s"]["n"] == 1
    assert results["v1_first_sentence_ttfa_s"]["median"] > 0
    assert (tmp_path / "realtime_smoke.png").stat().st_size > 10_000
