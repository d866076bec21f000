"""Fixtures of the reliability suite (the harness itself is ``tests/reliability/harness.py``)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.reliability.harness import tone_workers


@pytest.fixture(scope="module")
def worker_pair() -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """Two tone-engine worker processes (faults on) shared by a module's tests; never killed by them."""
    with tone_workers(2, "--capacity", "16") as procs:
        yield procs
