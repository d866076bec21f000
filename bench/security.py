"""The front door under bounded attacks, and what its connection layer costs.

Runs every attack of ``tests/security/`` against real servers on loopback,
each bounded in bytes, connections and seconds, with the default settings
unless a figure needs smaller ones (said in the JSON), and records what it
saw: the largest header accepted, how long each kind of slow connection is
held, memory under header bombs, connections an attacker holds against
requests served to a normal client. Then it compares the server CPU per
request of three HTTP/1.1 implementations on the same app: uvicorn's plain
``httptools`` protocol, ours (:mod:`orpheus_tts.serving.connections`) and
uvicorn's ``h11`` (which has a header size limit of its own). Writes
``bench/results/security.json``.

    python -m bench.security [--cpu-requests N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from tests.security.attacks import (
    cli_server,
    flood,
    header_bomb,
    rss_kib,
    send_head,
    slow_body,
    slow_headers,
    still_open,
)

from bench.common import cpu_seconds, machine, percentile, write_json
from orpheus_tts.serving.local import LOOPBACK, free_port, wait_ready
from orpheus_tts.serving.settings import (
    DEFAULT_BODY_IDLE_TIMEOUT_S,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADER_LINE_BYTES,
    HttpSettings,
)

BOMB_BYTES = 16 * 1024 * 1024
BOMBS = 4
FLOOD_CAP = 64
FLOOD_ATTACKERS = 256
FLOOD_SECONDS = 5.0
NOFILE = 256
NOFILE_ATTACKERS = 300
PROTOCOLS = ("httptools", "guarded", "h11")
TEXT = "Benchmark sentence for the front door."


def _head(line: str) -> bytes:
    return f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\n{line}\r\n\r\n".encode()


def largest_accepted(port: int) -> dict[str, int]:
    """The longest header line, and the largest head of many lines, that still get a 200."""

    def line_ok(n: int) -> bool:
        return send_head(port, _head("X-L: " + "a" * n)).status == 200

    low, high = 1, 4 * DEFAULT_MAX_HEADER_LINE_BYTES
    while low < high:  # the largest value n with line_ok(n)
        mid = (low + high + 1) // 2
        low, high = (mid, high) if line_ok(mid) else (low, mid - 1)
    line_bytes = len(f"X-L: {'a' * low}")

    def head_of(count: int) -> bytes:
        lines = "\r\n".join(f"X-H{i:04d}: " + "a" * 90 for i in range(count))
        return _head(lines)

    low, high = 1, 2 * DEFAULT_MAX_HEADER_BYTES // 100
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if send_head(port, head_of(mid)).status == 200 else (low, mid - 1)
    refused = send_head(port, _head("X-L: " + "a" * (DEFAULT_MAX_HEADER_LINE_BYTES + 1)))
    return {
        "largest_header_line_bytes": line_bytes,
        "largest_head_bytes": len(head_of(low)),
        "over_the_line_limit_status": refused.status or 0,
    }


def bombs(port: int, pid: int) -> dict[str, Any]:
    before = rss_kib(pid)
    with ThreadPoolExecutor(BOMBS) as pool:
        results = list(pool.map(lambda _: header_bomb(port, BOMB_BYTES), range(BOMBS)))
    after = rss_kib(pid)
    return {
        "bombs": BOMBS,
        "bound_bytes_each": BOMB_BYTES,
        "statuses": [r.status for r in results],
        "sent_before_refusal_bytes_max": max(r.sent_bytes for r in results),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_growth_kib": after - before,
    }


def slow(port: int) -> dict[str, Any]:
    """Each slow kind at once, under the default timeouts."""
    bound = DEFAULT_BODY_TIMEOUT_S + 15
    attacks = {
        "headers_1_byte_per_s": lambda: slow_headers(port, interval_s=1.0, max_s=bound),
        "body_stalled": lambda: slow_body(port, interval_s=bound, max_s=bound),
        "body_1_byte_per_2_s": lambda: slow_body(port, interval_s=2.0, max_s=bound),
    }
    with ThreadPoolExecutor(len(attacks)) as pool:
        futures = {name: pool.submit(attack) for name, attack in attacks.items()}
        held = {name: future.result() for name, future in futures.items()}
    return {
        "timeouts_s": {
            "header": DEFAULT_HEADER_TIMEOUT_S,
            "body_idle": DEFAULT_BODY_IDLE_TIMEOUT_S,
            "body_total": DEFAULT_BODY_TIMEOUT_S,
        },
        "attack_bound_s": bound,
        **{name: {"status": h.status, "held_s": round(h.held_s, 2), "closed": h.closed} for name, h in held.items()},
    }


def _normal_client(url: str, until: float, out: list[tuple[int, float]]) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            with httpx.Client(timeout=10) as client:
                status = client.post(f"{url}/v1/tts/stream", json={"text": "Hi."}).status_code
        except httpx.HTTPError:
            status = 0
        out.append((status, time.monotonic() - started))


def flood_figures(attackers: int, seconds: float, *args: str, nofile: int | None = None) -> dict[str, Any]:
    with cli_server("worker", "--engine", "test", *args, nofile=nofile) as (url, port, proc):
        served: list[tuple[int, float]] = []
        with flood(port, attackers) as sockets:
            opened = len(sockets)
            client = threading.Thread(target=_normal_client, args=(url, time.monotonic() + seconds, served))
            client.start()
            client.join()
            held = still_open(sockets)
        alive = proc.poll() is None
    latencies = [s for status, s in served if status == 200]
    return {
        "attacker_connections_opened": opened,
        "attacker_connections_still_held": held,
        "normal_requests": len(served),
        "normal_requests_ok": len(latencies),
        "normal_latency_p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
        "normal_latency_max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "server_alive": alive,
    }


# ------------------------------------------------------------------ CPU per request


def _serve(protocol: str, port: int) -> None:
    """Child mode: a test-engine worker under one HTTP implementation."""
    import uvicorn

    from orpheus_tts.engines.testing import ToneEngine
    from orpheus_tts.serving.connections import guarded_protocol
    from orpheus_tts.worker.app import create_app
    from orpheus_tts.worker.config import WorkerConfig

    app = create_app(ToneEngine(capacity=64), WorkerConfig(max_queue=256))
    http: Any = guarded_protocol(HttpSettings()) if protocol == "guarded" else protocol
    extra: dict[str, Any] = {"h11_max_incomplete_event_size": DEFAULT_MAX_HEADER_BYTES} if protocol == "h11" else {}
    uvicorn.run(app, host=LOOPBACK, port=port, http=http, log_level="warning", **extra)


@contextlib.contextmanager
def _protocol_server(protocol: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.security", "--serve", protocol, "--port", str(port)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_ready(url, proc=proc)
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


async def _load(url: str, requests: int, concurrency: int, stream: bool) -> None:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one() -> None:
            async with gate:
                if stream:
                    response = await client.post(f"{url}/v1/tts/stream", json={"text": TEXT})
                else:
                    response = await client.get(f"{url}/healthz")
                response.raise_for_status()

        await asyncio.gather(*(one() for _ in range(requests)))


def cpu_costs(requests: int, rounds: int) -> dict[str, Any]:
    """Server CPU microseconds per request, per implementation, interleaved round by round."""
    samples: dict[str, dict[str, list[float]]] = {p: {"healthz": [], "stream": []} for p in PROTOCOLS}
    for _ in range(rounds):
        for protocol in PROTOCOLS:
            with _protocol_server(protocol) as (url, pid):
                asyncio.run(_load(url, 50, 8, stream=True))  # warm up
                for kind, count in (("healthz", requests), ("stream", requests // 4)):
                    before = cpu_seconds(pid)
                    asyncio.run(_load(url, count, 16, stream=kind == "stream"))
                    samples[protocol][kind].append((cpu_seconds(pid) - before) / count * 1e6)
    return {
        "requests_per_round": {"healthz": requests, "stream": requests // 4},
        "rounds": rounds,
        "cpu_us_per_request_median": {
            p: {k: round(percentile(v, 50), 1) for k, v in kinds.items()} for p, kinds in samples.items()
        },
        "samples_us": {p: {k: [round(x, 1) for x in v] for k, v in kinds.items()} for p, kinds in samples.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=PROTOCOLS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.port)
        return 0
    results: dict[str, Any] = {"machine": machine()}
    with cli_server("worker", "--engine", "test") as (_, port, proc):
        results["headers"] = largest_accepted(port)
        results["header_bombs"] = bombs(port, proc.pid)
        results["slow_connections"] = slow(port)
    results["flood_past_the_cap"] = {
        "max_connections": FLOOD_CAP,
        "seconds": FLOOD_SECONDS,
        **flood_figures(FLOOD_ATTACKERS, FLOOD_SECONDS, "--max-connections", str(FLOOD_CAP)),
    }
    results["flood_under_low_nofile"] = {
        "rlimit_nofile": NOFILE,
        "max_connections_effective": NOFILE // 2,
        "seconds": FLOOD_SECONDS,
        **flood_figures(NOFILE_ATTACKERS, FLOOD_SECONDS, nofile=NOFILE),
    }
    results["cpu"] = cpu_costs(args.cpu_requests, args.rounds)
    path = write_json("security", results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
