"""Fixtures of the reliability suite (the harness itself is ``tests/reliability/harness.py``)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.reliability.harness import COMPLETE, CUT, REFUSED, TOTALS, VIOLATION, tone_workers


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
