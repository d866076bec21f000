"""Quotas shared by two gateways on one redis store: admissions, and how fast a dead gateway's slots free.

Starts Debian's ``redis-server`` on a loopback port, one worker (the test
engine, with fault knobs) and two gateway processes on the store, with one key
limited to ``--limit`` concurrent streams and a lease of ``--lease-s``. Then:

1. ``--requests`` simultaneous requests, alternating between the gateways,
   each held open after its first chunk (``fault_stall_after``): how many
   were admitted (the limit, if the store is shared and atomic) and refused.
2. Gateway A takes the key's slots and is killed (``SIGKILL``) mid-stream;
   gateway B is asked again and again: seconds from the kill until B admits
   a request (at most the lease time, plus one renewal period of slack).

Writes ``bench/results/quotas.json``. Prints a message and exits 0 where
redis-server is not installed.

    python -m bench.quotas [--requests 20] [--limit 2] [--lease-s 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.common import machine, write_json
from orpheus_tts.gateway.keys import sha256_hex
from orpheus_tts.serving.local import free_port, wait_ready

KEY = "bench-shared-quota-key"
HELD = {"text": "Held open after its first chunk.", "fault_stall_after": 1}
GIVE_UP_S = 60.0


@contextlib.contextmanager
def _process(cmd: list[str], url: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if url is not None:
            wait_ready(url, proc=proc)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _orpheus(*args: str) -> tuple[list[str], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "orpheus_tts.cli", *args, "--host", "127.0.0.1", "--port", str(port)]
    return cmd, f"http://127.0.0.1:{port}"


async def _hold(client: httpx.AsyncClient, stack: contextlib.AsyncExitStack, url: str, bodies: list[Any]) -> int:
    response = await stack.enter_async_context(
        client.stream("POST", f"{url}/v1/tts/stream", json=HELD, headers={"Authorization": f"Bearer {KEY}"})
    )
    if response.status_code == 200:
        body = response.aiter_raw()
        bodies.append(body)  # kept: a collected iterator would close its stream
        await anext(body)
    else:
        await response.aread()
    return response.status_code


async def _measure(a: str, b: str, a_proc: subprocess.Popen[bytes], requests: int, limit: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=requests + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        bodies: list[Any] = []
        async with contextlib.AsyncExitStack() as stack:
            statuses = await asyncio.gather(*(_hold(client, stack, (a, b)[i % 2], bodies) for i in range(requests)))
        async with contextlib.AsyncExitStack() as stack:
            held = [await _hold(client, stack, a, bodies) for _ in range(limit)]
            os.killpg(a_proc.pid, signal.SIGKILL)
            a_proc.wait()
            killed = time.monotonic()
            attempts = 0
            while time.monotonic() - killed < GIVE_UP_S:
                attempts += 1
                response = await client.post(
                    f"{b}/v1/tts/stream", json={"text": "after"}, headers={"Authorization": f"Bearer {KEY}"}
                )
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            freed_s = time.monotonic() - killed
    return {
        "simultaneous": {
            "requests": requests,
            "admitted": statuses.count(200),
            "refused_429": statuses.count(429),
            "other": [s for s in statuses if s not in (200, 429)],
        },
        "killed_gateway": {
            "slots_held": held.count(200),
            "seconds_until_the_other_gateway_admits": round(freed_s, 3),
            "attempts_refused_meanwhile": attempts - 1,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--lease-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    server = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", 1) else None
    )
    if server is None:
        print("skipped: redis-server is not installed (apt-get install redis-server)")
        return 0
    redis_port = free_port()
    store = f"redis://127.0.0.1:{redis_port}/0"
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        keys = Path(tmp) / "keys.toml"
        keys.write_text(
            f'[[keys]]\nname = "shared"\nsha256 = "{sha256_hex(KEY)}"\nmax_concurrent_streams = {args.limit}\n'
        )
        stack.enter_context(
            _process([server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        )
        cmd, worker = _orpheus("worker", "--engine", "test", "--enable-test-faults", "--capacity", "64")
        stack.enter_context(_process(cmd, worker))
        gateway_args = ["gateway", "--worker", worker, "--api-keys-file", str(keys), "--quota-store", store]
        gateway_args += ["--quota-lease-s", str(args.lease_s)]
        cmd, a = _orpheus(*gateway_args)
        a_proc = stack.enter_context(_process(cmd, a))
        cmd, b = _orpheus(*gateway_args)
        stack.enter_context(_process(cmd, b))
        result = asyncio.run(_measure(a, b, a_proc, args.requests, args.limit))
    result.update(
        {
            "machine": machine(),
            "setup": {"gateways": 2, "limit": args.limit, "lease_s": args.lease_s, "renewal_every_s": args.lease_s / 3},
        }
    )
    write_json("quotas", result)
    sim, dead = result["simultaneous"], result["killed_gateway"]
    print(f"{sim['requests']} simultaneous requests, limit {args.limit}: ", end="")
    print(f"{sim['admitted']} admitted, {sim['refused_429']} refused with 429")
    print(
        f"gateway killed holding {dead['slots_held']} slots: the other admits after "
        f"{dead['seconds_until_the_other_gateway_admits']:.2f} s (lease {args.lease_s:g} s)"
    )
    print("wrote bench/results/quotas.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
