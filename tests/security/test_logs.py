"""What the logs say about hostile or broken requests: no keys, no tracebacks."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import httpx
import pytest

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.serving.accesslog import REDACTED
from orpheus_tts.serving.local import LOOPBACK, ThreadedServer
from orpheus_tts.worker.app import create_app
from tests.eventually import eventually_sync
from tests.security.attacks import cli_server

SECRET = "ork_query-string-secret"


def test_a_key_in_the_query_string_is_redacted_from_the_access_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with cli_server("worker", "--engine", "test", "--log-level", "info", log=str(log)) as (url, _, _proc):
        for query in (f"api_key={SECRET}", f"x=1&key={SECRET}2", f"API_KEY={SECRET}3&y=2"):
            assert httpx.get(f"{url}/healthz?{query}").status_code == 200
        assert eventually_sync(lambda: log.read_text().count("GET /healthz?") >= 3)
    text = log.read_text()
    assert SECRET not in text
    assert text.count(REDACTED) >= 3
    assert "x=1&key=" in text, "other parameters are kept"
    assert "y=2" in text


def test_a_client_leaving_during_the_body_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with ThreadedServer(create_app(ToneEngine())) as server:
        with socket.create_connection((LOOPBACK, server.port)) as sock:
            sock.sendall(
                b"POST /v1/tts/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"text": "'
            )
        assert eventually_sync(lambda: any("left during the request body" in r.getMessage() for r in caplog.records))
    lines = [r for r in caplog.records if "left during the request body" in r.getMessage()]
    assert len(lines) == 1
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a client that left"
