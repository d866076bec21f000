"""The Orpheus GPU check: its reduced CPU mode runs end to end through bench/gpu_check.sh; without a GPU the
benchmark skips cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BENCH_TIMEOUT_S = 480
"""Generous: the smoke run shares the CPU with the rest of the suite."""


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.orpheus_gpu", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )


@pytest.mark.timeout(BENCH_TIMEOUT_S + 60)
def test_smoke_mode_writes_results_and_plot(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--smoke", "--tokens", "28", "--levels", "1,3"],
        cwd=ROOT,
        env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "BUDGET_S": str(BENCH_TIMEOUT_S)},
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S + 30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "orpheus_gpu_smoke.json").read_text())
    assert (tmp_path / "orpheus_gpu_smoke.png").stat().st_size > 10_000
    assert results["backend"] == "transformers"
    llm = results["llm"]
    assert [row["concurrency"] for row in llm] == [1, 3]
    assert all(row["per_stream_tokens_per_s_median"] > 0 for row in llm)
    assert [row["tokens_generated"] for row in llm] == [28, 84], "the stop token is ignored: every token generated"
    assert [row["distinct_prompts"] for row in llm] == [1, 3]
    assert llm[1]["batch_rows_max"] == 3, "the three streams were stepped together"
    assert llm[1]["batch_steps"] < 84
    assert {row["streams"] for row in results["snac_decode"]} == {1, 4}
    assert all(row["batched_speedup"] > 0 for row in results["snac_decode"])
    assert all(row["batched_vs_per_window_max_abs_error"] < 1e-5 for row in results["snac_decode"])
    errors = {(row["left"], row["right"]): row["max_abs_error"] for row in results["decoder_equivalence"]}
    assert errors[(3, 3)] < 1e-5 < errors[(1, 2)]
    ttfa = results["time_to_first_audio"]
    assert [row["concurrency"] for row in ttfa] == [1, 3]
    assert all(row["streams_with_audio"] == row["concurrency"] and row["median_s"] > 0 for row in ttfa)


def test_the_work_bound_reduces_tokens_per_stream(tmp_path: Path) -> None:
    from bench.orpheus_gpu import fit_tokens

    assert fit_tokens((1, 8, 32, 64, 128), 256, 10**9) == 256
    tokens = fit_tokens((1, 8, 32, 64, 128), 256, 40_000)
    assert tokens % 7 == 0
    assert 233 * tokens <= 40_000


def test_without_a_gpu_it_skips_with_a_clear_message() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the full benchmark would run")
    done = run_bench()
    assert done.returncode == 0
    assert "skipped: no CUDA GPU" in done.stdout
