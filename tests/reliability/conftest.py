"""Fixtures of the reliability suite (the harness itself is ``tests/reliability/harness.py``)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.worker.app import create_app as create_worker
from orpheus_tts.worker.config import WorkerConfig
from tests.reliability.harness import COMPLETE, CUT, REFUSED, TOTALS, VIOLATION, tone_workers
from tests.servers import run_server

FUZZ_MAX_TEXT_CHARS = 200
"""Servers under fuzz accept short texts only, so every accepted request is quick."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many streams the suite checked byte for byte, and how each ended."""
    if not TOTALS:
        return
    total = sum(TOTALS.values())
    terminalreporter.write_line(
        f"reliability: {total} streams verified byte for byte: {TOTALS[COMPLETE]} complete, "
        f"{TOTALS[REFUSED]} refused before audio and {TOTALS[CUT]} cut after a prefix (each with a "
        f"documented error), {TOTALS[VIOLATION]} silently truncated, duplicated or corrupted"
    )


@pytest.fixture(scope="module")
def worker_pair() -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """Two tone-engine worker processes (faults on) shared by a module's tests; never killed by them."""
    with tone_workers(2, "--capacity", "16") as procs:
        yield procs


@pytest.fixture(scope="module")
def fuzz_servers() -> Iterator[dict[str, str]]:
    """A tone worker without fault knobs (fuzzed parameters must not crash it) and a gateway in front."""
    worker_app = create_worker(ToneEngine(capacity=4), WorkerConfig(max_text_chars=FUZZ_MAX_TEXT_CHARS, max_queue=64))
    with run_server(worker_app) as worker:
        config = GatewayConfig(workers=(worker,), max_text_chars=FUZZ_MAX_TEXT_CHARS, probe_interval_s=30.0)
        with run_server(create_gateway(config)) as gw:
            yield {"worker": worker, "gateway": gw}
