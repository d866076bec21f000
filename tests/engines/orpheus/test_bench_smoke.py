"""The Orpheus GPU benchmark: its reduced CPU mode runs end to end; without a GPU it skips cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BENCH_TIMEOUT_S = 240


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.orpheus_gpu", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )


def test_smoke_mode_writes_results_and_plot(tmp_path: Path) -> None:
    done = run_bench("--smoke", "--out", str(tmp_path), "--tokens", "28")
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "orpheus_gpu_smoke.json").read_text())
    assert (tmp_path / "orpheus_gpu_smoke.png").stat().st_size > 10_000
    assert results["backend"] == "transformers"
    assert [row["concurrency"] for row in results["llm"]] == [1, 2]
    assert all(row["per_stream_tokens_per_s_median"] > 0 for row in results["llm"])
    assert {row["streams"] for row in results["snac_decode"]} == {1, 4}
    assert all(row["batched_speedup"] > 0 for row in results["snac_decode"])
    errors = {(row["left"], row["right"]): row["max_abs_error"] for row in results["decoder_equivalence"]}
    assert errors[(3, 3)] < 1e-5 < errors[(1, 2)]
    assert len(results["time_to_first_audio"]) == 2


def test_without_a_gpu_it_skips_with_a_clear_message() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the full benchmark would run")
    done = run_bench()
    assert done.returncode == 0
    assert "skipped: no CUDA GPU" in done.stdout
