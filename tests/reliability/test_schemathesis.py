"""Schemathesis against the worker's and the gateway's OpenAPI schemas: no undocumented 5xx, no hang.

Each schema is read from the live server (``GET /openapi.json``); both
``POST /v1/tts/stream`` and the gateway's ``POST /v1/audio/speech`` are driven
with schema-valid (positive) and schema-violating (negative) bodies, a modest
number of each. A 5xx must be one the protocol documents for a valid request
(a tiny ``timeout_s`` is a 504 ``deadline_exceeded``); a hang is a timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

if TYPE_CHECKING:
    from schemathesis.generation.case import Case
    from schemathesis.generation.modes import GenerationMode

schemathesis = pytest.importorskip("schemathesis")

REQUEST_TIMEOUT_S = 10.0
DOCUMENTED_5XX = {503: {"overloaded", "no_workers"}, 504: {"deadline_exceeded"}}
EXAMPLES = 40
"""Per operation and mode: six runs of this finish in a few seconds."""


def _schemathesis_run(url: str, path: str, mode: GenerationMode, examples: int) -> dict[int, int]:
    """Drive one operation with schemathesis-generated cases; returns the status counts seen."""
    raw = httpx.get(f"{url}/openapi.json", timeout=REQUEST_TIMEOUT_S).json()
    operation = schemathesis.openapi.from_dict(raw)[path]["POST"]
    seen: dict[int, int] = {}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case: Case[Any]) -> None:
        response = case.call(base_url=url, timeout=REQUEST_TIMEOUT_S)  # a hang raises a timeout
        status = response.status_code
        seen[status] = seen.get(status, 0) + 1
        if status >= 500:
            code = response.json()["error"]["code"]
            assert code in DOCUMENTED_5XX.get(status, ()), f"{status} {response.text} for {case.body!r}"

    run()
    return seen


@pytest.mark.parametrize(
    ("target", "path"),
    [("worker", "/v1/tts/stream"), ("gateway", "/v1/tts/stream"), ("gateway", "/v1/audio/speech")],
)
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_schemathesis_finds_no_server_error(
    fuzz_servers: dict[str, str], target: str, path: str, mode: GenerationMode
) -> None:
    seen = _schemathesis_run(fuzz_servers[target], path, mode, examples=EXAMPLES)
    print(f"schemathesis {mode.value} {target} {path}: {seen}")
    assert sum(seen.values()) >= 10, f"schemathesis sent too little to mean anything: {seen}"
    if mode is schemathesis.GenerationMode.POSITIVE:
        assert 200 in seen, f"no schema-valid request was ever served: {seen}"
