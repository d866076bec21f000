"""The benchmarks run end to end in a reduced smoke mode, and what they write says what they measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.proxy import nginx_binary

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, out: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", module, "--smoke", "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def head() -> str | None:
    """This checkout's commit, or ``None`` outside a git checkout (a source tarball)."""
    shown = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return shown.stdout.strip() if shown.returncode == 0 else None


def test_proxy_smoke_measures_every_path(tmp_path: Path) -> None:
    commit = head()
    pinned = len(os.sched_getaffinity(0)) >= 2  # the proxies on a core of their own where there are two
    args = ["--against", "HEAD", "--worker-against", "HEAD"] if commit else []
    args += ["--proxy-core"] if pinned else []
    args += ["--piece-delay-ms", "1"]  # each piece on its own, as from an engine at its own pace
    output = run_bench("bench.proxy", tmp_path, *args)
    result = json.loads((tmp_path / "proxy_smoke.json").read_text())
    if pinned:
        last = max(os.sched_getaffinity(0))
        assert result["cores"] == {"proxies": [last], "client_and_workers": sorted(os.sched_getaffinity(0) - {last})}
        assert f"cores: proxies on [{last}]" in output
    else:
        assert result["cores"].startswith("shared")
    assert (tmp_path / "proxy_smoke.png").stat().st_size > 0
    nginx = [] if nginx_binary() is None else ["nginx"]
    before = ["gateway_before"] if commit else []
    worker_before = ["direct_worker_before", *(f"{n}_worker_before" for n in nginx), "gateway_worker_before"]
    worker_before = worker_before if commit else []
    floors = ["floor_aiohttp", "floor_raw", "floor_raw_checked"]
    expected = ["direct", *nginx, *floors, "gateway_httpx", *before, "gateway", *worker_before]
    assert result["paths"] == expected
    if commit:  # the committed gateway, run from its own unpacked tree beside this one
        assert result["gateway_before"]["revision"] == commit
        assert result["gateway_tree"]["revision"] == commit
        assert result["worker"]["revision"] == commit  # this tree's worker
        assert result["worker_before"]["revision"] == commit  # and the committed one, beside it
        assert "worker/before CPU" in output
        assert "gateway/before CPU" in output
    if nginx_binary() is None:
        assert "nginx is not installed" in output
        assert result["nginx"].startswith("skipped")
    assert "load_average_1m" in result["machine"]
    assert result["text_chars"] == len(result["text"]) > 0
    assert result["params"] == {"fault_piece_delay_ms": 1.0}
    assert "a new connection per stream" in result["client"]
    for row in result["levels"].values():
        for path in expected:
            assert row[path]["verified"] == row["requests_per_path"]  # every stream checked whole
            assert row[path]["connections_opened"] == row["requests_per_path"]  # dropped at eos: a new one each
            # Where the machine's time went, per path: the worker served every stream, the client sent it.
            assert row[path]["worker_cpu_ms_per_stream"] > 0
            assert row[path]["client_cpu_ms_per_stream"] > 0
            assert row[path]["idle_cpu_ms_per_stream"] >= 0
            assert row[path]["worker_busy"] > 0
            if pinned:  # the client's and the workers' cores are some of the cores: idle no more than all
                shared_idle, idle = row[path]["shared_cores_idle_ms_per_stream"], row[path]["idle_cpu_ms_per_stream"]
                assert 0 <= shared_idle <= idle + 1e-6  # sums of the same readings, to float rounding
        assert row["gateway"]["cpu_ms_per_stream"] > 0
        assert row["gateway_httpx"]["cpu_ms_per_stream"] > 0
        for path in worker_before[1:]:  # through a proxy to the worker of the commit
            assert row[path]["cpu_ms_per_stream"] > 0
        if commit:
            assert row["gateway_before"]["cpu_ms_per_stream"] > 0
            assert row["gateway_cpu_over_gateway_before"] > 0
            assert row["worker_cpu_over_worker_before"] > 0
        for floor in ("floor_aiohttp", "floor_raw", "floor_raw_checked"):
            assert "cpu_ms_per_stream" in row[floor]  # so few streams may cost a floor less than a clock tick
    syscalls = result["syscalls"]
    if isinstance(syscalls, str):  # no strace, or no permission to attach: said, not silently left out
        assert syscalls.startswith("skipped: strace")
        assert syscalls in output
    else:
        # The workers', while the client streams from each directly.
        workers = {"worker", "worker_before"} if commit else {"worker"}
        assert set(syscalls["paths"]) == (set(expected) - {"direct", "direct_worker_before"}) | workers
    if commit and nginx:
        assert "with the worker before, gateway/nginx CPU" in output
        for counted in syscalls["paths"].values():
            assert counted["by_call"]
            assert counted["per_stream"] == pytest.approx(sum(counted["by_call"].values()), abs=0.2)
        assert syscalls["paths"]["gateway"]["by_call"]["accept4"] == pytest.approx(1.0), "a connection per stream"
        # The client's own, beside each path (it runs as root here, or says why it could not attach).
        clients = syscalls["clients"]
        if isinstance(clients, str):
            assert clients.startswith("skipped: strace could not attach to the client")
        else:
            assert set(clients) == set(expected)
            assert all(counted["per_stream"] > 0 for counted in clients.values())


@pytest.mark.timeout(300)
def test_hedging_smoke_counts_only_the_measured_requests(tmp_path: Path) -> None:
    run_bench("bench.hedging", tmp_path)
    result = json.loads((tmp_path / "hedging_smoke.json").read_text())
    assert set(result["loads"]) == {"light", "medium", "heavy"}
    for entry in result["loads"].values():
        for key in ("hedging_off", "hedging_on"):
            run = entry[key]
            assert sum(run["per_endpoint_requests"].values()) == run["upstream_requests"]
            assert run["upstream_requests"] >= run["requests"]
            # Each hedge is one extra upstream request (failovers add more): never more hedges than extras.
            assert run["hedges_sent"] <= run["extra_requests"]
        assert entry["hedging_off"]["hedges_sent"] == 0


def test_burst_bound_smoke_is_consistent_with_its_own_demand_test(tmp_path: Path) -> None:
    pytest.importorskip("piper", reason="the embedded voice is not installed")
    run_bench("bench.burst_bound", tmp_path)
    result = json.loads((tmp_path / "burst_bound_smoke.json").read_text())
    assert (tmp_path / "burst_bound_smoke.png").stat().st_size > 0
    assert set(result["segmentations"]) == {"default", "finest"}
    for entry in result["segmentations"].values():
        assert all(s["cpu_s"] > 0 and s["audio_s"] > 0 for text in entry["texts"] for s in text)
        bounds = [r["f_min_s"] for r in entry["by_speedup"]]
        assert bounds == sorted(bounds, reverse=True)  # a faster engine never needs more time
        if result["target_f_s"] is not None:
            assert entry["at_target"]["feasible"] == (entry["f_min_s"] <= result["target_f_s"] + 1e-3)
