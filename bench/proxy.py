"""What the gateway costs next to nginx: one worker reached directly, through nginx and through the gateway.

One worker process serves the fast deterministic test engine (so the engine
does not dominate). The same client streams the same requests to it three
ways, interleaved round by round in one run: straight to the worker, through
nginx (Debian's package, started here with a generated config: ``proxy_pass``
with ``proxy_buffering off``, ``proxy_request_buffering off``, HTTP/1.1
upstream keep-alive, one worker process) and through the gateway. For each
path and concurrency it reports the time to the first audio chunk (p50/p99),
streams per second and, for every proxy, CPU milliseconds per stream
(user + system time of the proxy's processes over the batch, from the
scheduler's nanosecond counts). Every stream is checked: seq without gaps
and an ``eos`` whose totals match.

Throughput depends on the whole machine, not only on the proxy: the client,
the worker and the proxy share its cores. So each path's row also says where
the machine's time went per stream: the worker's CPU, the client's (this
process), and the cores' idle time (from ``/proc/stat``, in clock ticks of
10 ms: coarse for a smoke run's few streams), over the same batches; and how
busy the worker was (its CPU seconds per second of wall time: near 1.0, one
core, it is the bottleneck).

``--repeat-text N`` asks for the benchmark sentence N times over in each
request: longer streams of more chunks, where what a proxy costs per chunk
weighs more than what it costs per request. The JSON's ``text`` and
``text_chars`` say what was asked. The test engine makes a stream's pieces
at once; ``--piece-delay-ms MS`` has it wait before each (its
``fault_piece_delay_ms``, the worker started with ``--enable-test-faults``),
as an engine that makes audio at its own pace does, so each piece reaches
the proxy on its own (``params`` in the JSON).

With ``--proxy-core`` the proxies (nginx, the floors, every gateway) run on
one core of their own and the client and the workers on the others, as a
gateway on its own machine in front of the workers' would: the throughput
then says whether a proxy holds the workers back, not how much of a shared
core it takes from them (its CPU per stream says that). The JSON's ``cores``
says which layout ran, and each row adds the idle time of the client's and
the workers' cores alone (``shared_cores_idle_ms_per_stream``).

The client (httpx) drops each stream at its ``eos``, before the end of the
chunked body, so every stream is a new connection on every path. With
``--keep-alive`` the client (aiohttp's) reads each body to its end instead
and reuses its connections, as the SDK and clients that read whole bodies
do. Each path has a pool of its own, and each row counts the connections the
client opened (``connections_opened``).

``gateway_httpx`` is the in-run baseline: the gateway with its streams to
the worker over httpx and its route through FastAPI's middleware stack, as
it was before its lean data plane (``--upstream-client httpx
--no-direct-routes``). With ``--against REV`` the gateway of git revision
``REV`` (its ``src/``, with this checkout's dependencies) runs beside this
tree's as ``gateway_before``: a change's before and after in one run.

Three more paths are floors (``bench.relay_floor``), measured the same way: the
cheapest relays Python makes, with no gateway logic. ``floor_aiohttp`` is
aiohttp's server and client on uvloop; ``floor_raw`` is asyncio protocols on
uvloop with httptools' C parsers, bytes passed through as they arrive;
``floor_raw_checked`` is that relay checking each v1 stream's frames as the
gateway does.

Where nginx is not installed the nginx path is skipped with a message and the
JSON says so. Writes ``bench/results/NAME.json`` and ``NAME.png`` (``NAME``
is ``proxy`` unless ``--name`` says otherwise; ``--smoke`` is a reduced run
for the test suite, written as ``proxy_smoke``).

With ``--profile`` (and ``py-spy`` installed) the gateway is then sampled
under load at concurrency 16 for ``--profile-s`` seconds, and the JSON says
where its CPU time went, by layer (the innermost frame of each sample).

With ``--syscalls`` (and ``strace`` installed, with permission to attach)
each proxy's system calls are then counted, by call, over
``SYSCALL_STREAMS`` streams one at a time (every process and thread of it),
and the worker's while it serves the direct path; and beside each path the
client's own (``clients`` in the JSON), since how a proxy writes a stream
is what its reader pays for. The smoke run counts them too, over its few
streams. ``--worker-at REV`` serves every path from the
worker of git revision ``REV``; ``--worker-against REV`` adds a second
worker, of ``REV``, with three paths to it: ``direct_worker_before``,
``nginx_worker_before`` and ``gateway_worker_before`` (this tree's gateway):
a worker change's before and after in one run, for the worker itself (its
CPU, its throughput, its system calls as ``worker_before``) and for the
gateway's ratios to nginx in front of it.

Targets: gateway CPU per stream at most 3x nginx's; gateway throughput at
least 0.95x nginx's at concurrency 16 and 64; gateway TTFB p50 at concurrency 1
within nginx's + 0.5 ms.

    python -m bench.proxy [--requests 300] [--concurrency 1 16 64] [--rounds 3] [--keep-alive] [--syscalls]
                          [--against REV] [--worker-at REV] [--worker-against REV] [--proxy-core]
                          [--repeat-text N] [--piece-delay-ms MS] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench import common, proxy_profile, proxy_syscalls
from bench.common import cpu_seconds, machine, orpheus_process, percentile, pyplot, save_figure, served, write_json
from bench.proxy_clients import (
    CLIENT_KEEP_ALIVE,
    CLIENT_NEW_CONNECTIONS,
    TEXT,
    UPSTREAM_KEEPALIVE_S,
    Client,
    batch,
    open_client,
)
from bench.proxy_cores import Layout, pin, tree_cpu_seconds
from orpheus_tts.serving.local import free_port

TARGET_CPU_RATIO = 3.0
TARGET_THROUGHPUT_RATIO = 0.95
TARGET_TTFB_SLACK_MS = 0.5
NGINX_KEEPALIVE = 256

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream worker {{
        server {upstream};
        keepalive {keepalive};
        keepalive_timeout {keepalive_s}s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://worker;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {upstream};
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """The nginx executable, or ``None`` when it is not installed."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


@contextlib.contextmanager
def _nginx(binary: str, upstream: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="orpheus-nginx-") as prefix:
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                prefix=prefix,
                upstream=upstream.removeprefix("http://"),
                port=port,
                keepalive=NGINX_KEEPALIVE,
                keepalive_s=UPSTREAM_KEEPALIVE_S,
            )
        )
        cmd = [binary, "-p", prefix, "-e", f"{prefix}/error.log", "-c", str(conf)]
        url = f"http://127.0.0.1:{port}"
        with served(cmd, url, quiet=True) as proc:
            yield url, proc


ROOT = Path(__file__).resolve().parent.parent

FLOORS = ("aiohttp", "raw", "raw_checked")
"""The kinds of ``bench.relay_floor`` measured, as paths ``floor_KIND``."""

BASELINE_GATEWAY = ("--upstream-client", "httpx", "--no-direct-routes")
"""``gateway_httpx``: the gateway as it was before its lean data plane, the in-run baseline: streams
to the worker over httpx (on aiohttp's pool) and the route through FastAPI's middleware stack."""


@contextlib.contextmanager
def _floor(kind: str, upstream: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``bench.relay_floor --kind KIND`` in front of ``upstream``: a cheapest Python relay (see its docstring)."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.relay_floor", "--kind", kind, "--upstream", upstream, "--port", str(port)]
    cmd += ["--keepalive-s", str(UPSTREAM_KEEPALIVE_S)]
    url = f"http://127.0.0.1:{port}"
    # Its log would only say that clients hang up after eos (before the chunked body's end).
    with served(cmd, url, quiet=True) as proc:
        yield url, proc


def _idle_seconds(cores: frozenset[int] | None = None) -> tuple[float, float]:
    """Idle time so far of all the machine's cores and of ``cores`` among them (0.0 without), from one
    reading of the counters, so the second is never more than the first (waiting on I/O counted as idle)."""
    idle = [t.idle + getattr(t, "iowait", 0.0) for t in psutil.cpu_times(percpu=True)]
    return float(sum(idle)), float(sum(idle[i] for i in cores)) if cores is not None else 0.0


class _Shares:
    """CPU seconds of a path's worker and of the client (this process), and the cores' idle seconds
    (all of them, and those of the client and the workers when the proxies have a core of their own)."""

    def __init__(self, workers: dict[str, int], layout: Layout | None) -> None:
        self._workers = workers
        self._client_pid = os.getpid()
        self._shared = layout.shared if layout is not None else None

    def now(self, path: str) -> tuple[float, float, float, float]:
        return cpu_seconds(self._workers[path]), cpu_seconds(self._client_pid), *_idle_seconds(self._shared)


async def _measure(
    paths: dict[str, tuple[str, int | None]],
    levels: list[int],
    requests: int,
    rounds: int,
    *,
    keep_alive: bool,
    workers: dict[str, int],
    layout: Layout | None = None,
    text: str = TEXT,
    params: dict[str, Any] | None = None,
) -> Any:
    results: dict[str, Any] = {}
    shares = _Shares(workers, layout)
    async with contextlib.AsyncExitStack() as stack:
        # A pool per path: kept-alive connections to one path do not take the room of another's.
        clients: dict[str, Client] = {}
        for name, (url, _) in paths.items():
            client = open_client(max(levels) + 8, keep_alive=keep_alive, text=text, params=params)
            clients[name] = await stack.enter_async_context(client)
            await batch(clients[name], url, 20, 4)  # warm every path
        for level in levels:
            n = max(requests, level * 4)
            per: dict[str, dict[str, Any]] = {
                name: {"ttfb_s": [], "wall_s": 0.0, "cpu_s": 0.0, "connections": 0, "shares": [0.0] * 4}
                for name in paths
            }
            for _ in range(rounds):
                for name, (url, pid) in paths.items():
                    cpu0 = tree_cpu_seconds(pid) if pid is not None else 0.0
                    shares0 = shares.now(name)
                    done = await batch(clients[name], url, n, level)
                    shares1 = shares.now(name)
                    per[name]["ttfb_s"] += done["ttfb_s"]
                    per[name]["wall_s"] += done["wall_s"]
                    per[name]["connections"] += done["connections"]
                    if pid is not None:
                        per[name]["cpu_s"] += tree_cpu_seconds(pid) - cpu0
                    for i, (after, before) in enumerate(zip(shares1, shares0, strict=True)):
                        per[name]["shares"][i] += after - before
            row: dict[str, Any] = {"requests_per_path": n * rounds}
            for name, data in per.items():
                ttfb_ms = [t * 1000 for t in data["ttfb_s"]]
                row[name] = {
                    "ttfb_p50_ms": percentile(ttfb_ms, 50),
                    "ttfb_p99_ms": percentile(ttfb_ms, 99),
                    "streams_per_s": n * rounds / data["wall_s"],
                    "verified": len(ttfb_ms),
                    "connections_opened": data["connections"],
                }
                if paths[name][1] is not None:
                    row[name]["cpu_ms_per_stream"] = data["cpu_s"] * 1000 / (n * rounds)
                worker_s, client_s, idle_s, shared_idle_s = data["shares"]
                row[name]["worker_cpu_ms_per_stream"] = worker_s * 1000 / (n * rounds)
                row[name]["client_cpu_ms_per_stream"] = client_s * 1000 / (n * rounds)
                row[name]["idle_cpu_ms_per_stream"] = idle_s * 1000 / (n * rounds)
                if layout is not None:  # the idle time of the client's and the workers' cores alone
                    row[name]["shared_cores_idle_ms_per_stream"] = shared_idle_s * 1000 / (n * rounds)
                row[name]["worker_busy"] = worker_s / data["wall_s"]
            _compare(row)
            results[str(level)] = row
            print(_line(level, row), flush=True)
    return results


def revision(rev: str) -> dict[str, str]:
    """The commit ``rev`` names in this checkout: its full id and subject line."""
    shown = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%H%n%s", rev], capture_output=True, text=True, check=True
    )
    commit, _, subject = shown.stdout.strip().partition("\n")
    return {"revision": commit, "subject": subject}


def this_tree() -> dict[str, Any] | str:
    """What ``gateway`` runs: this checkout's commit, and whether its ``src/`` has changes not committed."""
    try:
        head = revision("HEAD")
        status = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return {**head, "src_changed_since": bool(status.stdout.strip())}


@contextlib.contextmanager
def _orpheus_at(commit: str | None, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``orpheus-tts ARGS`` of ``commit`` (its ``src/`` unpacked from git, imported ahead of this tree's),
    or of this tree when ``commit`` is ``None``."""
    if commit is None:
        with orpheus_process(*args) as served_at:
            yield served_at
        return
    with tempfile.TemporaryDirectory(prefix="orpheus-before-") as tree:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        env = {**os.environ, "PYTHONPATH": str(Path(tree) / "src")}
        with orpheus_process(*args, env=env) as served_at:
            yield served_at


def _gateway_at(commit: str, worker: str) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen[bytes]]]:
    """The gateway of ``commit``, in front of ``worker``."""
    return _orpheus_at(commit, "gateway", "--worker", worker)


def _compare(row: dict[str, Any]) -> None:
    """Gateway against nginx: the ratios and whether each target is met."""
    if "direct_worker_before" in row:  # the worker's own change, measured on the direct path
        now, before = row["direct"], row["direct_worker_before"]
        row["worker_cpu_over_worker_before"] = now["worker_cpu_ms_per_stream"] / before["worker_cpu_ms_per_stream"]
        row["direct_throughput_over_worker_before"] = now["streams_per_s"] / before["streams_per_s"]
        row["direct_ttfb_p50_over_worker_before_ms"] = now["ttfb_p50_ms"] - before["ttfb_p50_ms"]
        if "nginx_worker_before" in row:  # the gateway against nginx, both in front of that worker
            gwb, ngb = row["gateway_worker_before"], row["nginx_worker_before"]
            row["worker_before_cpu_ratio"] = gwb["cpu_ms_per_stream"] / ngb["cpu_ms_per_stream"]
            row["worker_before_throughput_ratio"] = gwb["streams_per_s"] / ngb["streams_per_s"]
            row["worker_before_ttfb_p50_extra_ms"] = gwb["ttfb_p50_ms"] - ngb["ttfb_p50_ms"]
    if "nginx" not in row:
        return
    gw, ng = row["gateway"], row["nginx"]
    row["cpu_ratio"] = gw["cpu_ms_per_stream"] / ng["cpu_ms_per_stream"] if ng["cpu_ms_per_stream"] else None
    row["throughput_ratio"] = gw["streams_per_s"] / ng["streams_per_s"]
    row["ttfb_p50_extra_ms"] = gw["ttfb_p50_ms"] - ng["ttfb_p50_ms"]
    row["meets_cpu_target"] = row["cpu_ratio"] is not None and row["cpu_ratio"] <= TARGET_CPU_RATIO
    row["meets_throughput_target"] = row["throughput_ratio"] >= TARGET_THROUGHPUT_RATIO
    row["meets_ttfb_target"] = row["ttfb_p50_extra_ms"] <= TARGET_TTFB_SLACK_MS
    for baseline in ("gateway_httpx", "gateway_before"):
        if baseline in row:
            base = row[baseline]
            ng_cpu = ng["cpu_ms_per_stream"]
            row[f"{baseline}_cpu_ratio"] = base["cpu_ms_per_stream"] / ng_cpu if ng_cpu else None
            row[f"{baseline}_throughput_ratio"] = base["streams_per_s"] / ng["streams_per_s"]
            row[f"{baseline}_ttfb_p50_extra_ms"] = base["ttfb_p50_ms"] - ng["ttfb_p50_ms"]
            row[f"gateway_cpu_over_{baseline}"] = gw["cpu_ms_per_stream"] / base["cpu_ms_per_stream"]
    for kind in FLOORS:
        if (path := f"floor_{kind}") in row:
            floor = row[path]
            cpu = floor["cpu_ms_per_stream"]
            row[f"{path}_cpu_ratio"] = cpu / ng["cpu_ms_per_stream"] if ng["cpu_ms_per_stream"] else None
            row[f"{path}_throughput_ratio"] = floor["streams_per_s"] / ng["streams_per_s"]
            row[f"{path}_ttfb_p50_extra_ms"] = floor["ttfb_p50_ms"] - ng["ttfb_p50_ms"]
            row[f"gateway_cpu_over_{path}"] = gw["cpu_ms_per_stream"] / cpu if cpu else None


def _line(level: int, row: dict[str, Any]) -> str:
    parts = [f"c={level:>3}"]
    baselines = ("gateway_httpx", "gateway_before")
    before = tuple(f"{name}_worker_before" for name in ("direct", "nginx", "gateway"))
    for name in ("direct", "nginx", *(f"floor_{kind}" for kind in FLOORS), *baselines, "gateway", *before):
        if name in row:
            r = row[name]
            cpu = f", {r['cpu_ms_per_stream']:.2f} ms CPU" if "cpu_ms_per_stream" in r else ""
            parts.append(
                f"{name} p50 {r['ttfb_p50_ms']:.2f} p99 {r['ttfb_p99_ms']:.2f} ms {r['streams_per_s']:.0f}/s{cpu}"
                f", worker busy {r['worker_busy']:.2f}"
            )
    if row.get("cpu_ratio") is not None:
        parts.append(f"gateway/nginx CPU {row['cpu_ratio']:.2f}x, throughput {row['throughput_ratio']:.2f}x")
    if "gateway_cpu_over_gateway_before" in row:
        before, now = row["gateway_before"], row["gateway"]
        throughput = now["streams_per_s"] / before["streams_per_s"]
        parts.append(f"gateway/before CPU {row['gateway_cpu_over_gateway_before']:.2f}x, throughput {throughput:.2f}x")
    if "worker_cpu_over_worker_before" in row:
        parts.append(
            f"worker/before CPU {row['worker_cpu_over_worker_before']:.2f}x, "
            f"direct throughput {row['direct_throughput_over_worker_before']:.2f}x"
        )
    if "worker_before_cpu_ratio" in row:
        parts.append(
            f"with the worker before, gateway/nginx CPU {row['worker_before_cpu_ratio']:.2f}x, "
            f"throughput {row['worker_before_throughput_ratio']:.2f}x"
        )
    return " | ".join(parts)


def _plot(results: dict[str, Any], names: list[str], name: str) -> None:
    plt = pyplot()
    levels = list(results)
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    x = list(range(len(levels)))
    width = 0.8 / len(names)
    for i, path in enumerate(names):
        xs = [v + (i - (len(names) - 1) / 2) * width for v in x]
        color = f"C{i}"  # one colour per path in every panel (the CPU panel has no bar for direct)
        axes[0].bar(xs, [results[lv][path]["ttfb_p50_ms"] for lv in levels], width, label=f"{path} p50", color=color)
        axes[0].scatter(xs, [results[lv][path]["ttfb_p99_ms"] for lv in levels], marker="_", s=200, color="black")
        axes[1].bar(xs, [results[lv][path]["streams_per_s"] for lv in levels], width, label=path, color=color)
        if "cpu_ms_per_stream" in results[levels[0]][path]:
            axes[2].bar(xs, [results[lv][path]["cpu_ms_per_stream"] for lv in levels], width, label=path, color=color)
    top = levels[-1]  # where the machine's time went, per stream, at the highest concurrency
    bottom = [0.0] * len(names)
    for part, key in (
        ("client", "client_cpu_ms_per_stream"),
        ("worker", "worker_cpu_ms_per_stream"),
        ("proxy", "cpu_ms_per_stream"),
        ("idle", "idle_cpu_ms_per_stream"),
    ):
        heights = [results[top][path].get(key, 0.0) for path in names]
        axes[3].bar(range(len(names)), heights, 0.6, bottom=bottom, label=part)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes[3].set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    axes[3].set_title(f"Machine time per stream at c={top}")
    axes[3].set_ylabel("core ms")
    axes[3].legend(fontsize=6)
    for ax, title, unit in (
        (axes[0], "Time to first audio (bar p50, tick p99)", "ms"),
        (axes[1], "Throughput", "streams / s"),
        (axes[2], "Proxy CPU per stream", "ms"),
    ):
        ax.set_xticks(x, [f"c={lv}" for lv in levels])
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.legend(fontsize=6)
    save_figure(fig, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per batch (at least 4x concurrency)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per path and level")
    parser.add_argument("--name", default=None, help="results file name (default proxy, or proxy_smoke)")
    parser.add_argument("--smoke", action="store_true", help="a reduced run (the test suite's)")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    parser.add_argument("--profile", action="store_true", help="then sample the gateway with py-spy")
    parser.add_argument("--profile-s", type=float, default=15.0, help="seconds to sample")
    parser.add_argument(
        "--syscalls", action="store_true", help="then count each proxy's system calls per stream with strace"
    )
    parser.add_argument(
        "--keep-alive", action="store_true", help="read each body to its end, so the client reuses its connections"
    )
    parser.add_argument(
        "--against", metavar="REV", default=None, help="also run the gateway of git revision REV, as gateway_before"
    )
    parser.add_argument(
        "--worker-at", metavar="REV", default=None, help="serve every path from the worker of git revision REV"
    )
    parser.add_argument(
        "--worker-against",
        metavar="REV",
        default=None,
        help="also run the worker of git revision REV, with paths to it direct, through nginx and the gateway",
    )
    parser.add_argument(
        "--repeat-text",
        type=int,
        default=1,
        metavar="N",
        help="ask for the benchmark sentence N times over in each request (longer streams, more chunks)",
    )
    parser.add_argument(
        "--piece-delay-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="have the test engine wait MS before each piece, as an engine at its own pace does",
    )
    parser.add_argument(
        "--proxy-core",
        action="store_true",
        help="run the proxies on a core of their own, the client and the workers on the others",
    )
    args = parser.parse_args(argv)
    layout: Layout | None = None
    if args.proxy_core:
        try:
            layout = Layout(os.sched_getaffinity(0))
        except ValueError as exc:
            parser.error(str(exc))
        pin(os.getpid(), layout.shared)  # the client; the processes it starts begin there too
    if args.repeat_text < 1:
        parser.error("--repeat-text needs at least 1")
    text = " ".join([TEXT] * args.repeat_text)
    if args.piece_delay_ms < 0:
        parser.error("--piece-delay-ms cannot be negative")
    params = {"fault_piece_delay_ms": args.piece_delay_ms} if args.piece_delay_ms else None
    if args.out:
        common.RESULTS_DIR = Path(args.out)
    if args.smoke:
        args.requests, args.concurrency, args.rounds = 8, [1, 4], 1
        args.syscalls = True
    name = args.name or ("proxy_smoke" if args.smoke else "proxy")
    binary = nginx_binary()
    if binary is None:
        print("nginx is not installed: the nginx path is skipped (apt-get install nginx-light to compare)")
    against = revision(args.against) if args.against else None
    worker_at = revision(args.worker_at) if args.worker_at else None
    worker_before = revision(args.worker_against) if args.worker_against else None
    load_before = os.getloadavg()[0]
    worker_args = ["worker", "--engine", "test", "--capacity", "1024", "--max-queue", "4096"]
    if params:  # the test engine takes its fault knobs (here, a pace) only with them enabled
        worker_args.append("--enable-test-faults")
    with contextlib.ExitStack() as stack:
        worker_commit = worker_at["revision"] if worker_at is not None else None
        worker, worker_proc = stack.enter_context(_orpheus_at(worker_commit, *worker_args))
        paths: dict[str, tuple[str, int | None]] = {"direct": (worker, None)}
        if binary is not None:
            url, proc = stack.enter_context(_nginx(binary, worker))
            paths["nginx"] = (url, proc.pid)
        for kind in FLOORS:
            url, floor_proc = stack.enter_context(_floor(kind, worker))
            paths[f"floor_{kind}"] = (url, floor_proc.pid)
        base_url, base_proc = stack.enter_context(orpheus_process("gateway", "--worker", worker, *BASELINE_GATEWAY))
        paths["gateway_httpx"] = (base_url, base_proc.pid)
        if against is not None:
            before_url, before_proc = stack.enter_context(_gateway_at(against["revision"], worker))
            paths["gateway_before"] = (before_url, before_proc.pid)
        url, gw_proc = stack.enter_context(orpheus_process("gateway", "--worker", worker))
        paths["gateway"] = (url, gw_proc.pid)
        workers = {name: worker_proc.pid for name in paths}
        if worker_before is not None:
            before_worker, before_worker_proc = stack.enter_context(
                _orpheus_at(worker_before["revision"], *worker_args)
            )
            paths["direct_worker_before"] = (before_worker, None)
            if binary is not None:
                url, proc = stack.enter_context(_nginx(binary, before_worker))
                paths["nginx_worker_before"] = (url, proc.pid)
            url, proc = stack.enter_context(orpheus_process("gateway", "--worker", before_worker))
            paths["gateway_worker_before"] = (url, proc.pid)
            workers.update({name: before_worker_proc.pid for name in paths if name.endswith("_worker_before")})
        if layout is not None:
            for worker_pid in {*workers.values()}:
                pin(worker_pid, layout.shared)
            for _, proxy_pid in paths.values():
                if proxy_pid is not None:
                    pin(proxy_pid, layout.proxy)
            print(f"cores: proxies on {sorted(layout.proxy)}, the client and the workers on {sorted(layout.shared)}")
        measured = _measure(
            paths,
            args.concurrency,
            args.requests,
            args.rounds,
            keep_alive=args.keep_alive,
            workers=workers,
            layout=layout,
            text=text,
            params=params,
        )
        results = asyncio.run(measured)
        gw_url = paths["gateway"][0]
        profile = None
        if args.profile:
            profile = proxy_profile.profile(
                gw_url, gw_proc.pid, args.profile_s, keep_alive=args.keep_alive, text=text, params=params
            )
        syscalls: dict[str, Any] | str | None = None
        if args.syscalls:
            streams = args.requests if args.smoke else proxy_syscalls.SYSCALL_STREAMS
            syscalls = proxy_syscalls.syscalls(
                paths, streams, keep_alive=args.keep_alive, workers=workers, text=text, params=params
            )
            print(proxy_syscalls.syscall_line(syscalls))
    write_json(
        name,
        {
            "machine": {**machine(), "load_average_1m_before": load_before},
            "text": text,
            "text_chars": len(text),
            "params": params,
            "client": CLIENT_KEEP_ALIVE if args.keep_alive else CLIENT_NEW_CONNECTIONS,
            "paths": list(paths),
            "gateway_tree": this_tree(),
            "gateway_before": against,
            "worker": worker_at or this_tree(),
            "worker_before": worker_before,
            "nginx": "skipped: nginx is not installed" if binary is None else "measured",
            "cores": layout.describe() if layout is not None else "shared: every process may run on every core",
            "levels": results,
            "gateway_profile": profile,
            "syscalls": syscalls,
            "targets": {
                "cpu": f"gateway CPU per stream <= {TARGET_CPU_RATIO}x nginx",
                "throughput": f"gateway >= {TARGET_THROUGHPUT_RATIO}x nginx at 16 and 64",
                "ttfb_p50": f"gateway p50 at concurrency 1 <= nginx + {TARGET_TTFB_SLACK_MS} ms",
            },
        },
    )
    _plot(results, list(paths), name)
    print(f"wrote {name}.json and {name}.png in {common.RESULTS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
