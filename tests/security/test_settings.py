"""The front door's settings reach every server: flags, variables, serve's workers, the open-file cap."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from orpheus_tts import cli
from orpheus_tts.serving.connections import effective_max_connections
from orpheus_tts.serving.settings import HttpSettings
from tests.eventually import eventually_sync
from tests.security.attacks import cli_server, slow_headers


def test_serve_passes_the_connection_limits_to_its_workers() -> None:
    serve = cli.build_parser().parse_args(
        ["serve", "--engine", "test", "--header-timeout-s", "1.5", "--max-connections", "7", "--body-timeout-s", "9"]
    )
    worker = cli.build_parser().parse_args(["worker", "--engine", "test", *cli._http_worker_args(serve)])
    http = cli._worker_config(worker).http
    assert (http.header_timeout_s, http.max_connections, http.body_timeout_s) == (1.5, 7, 9.0)


def test_allowed_origins_and_hosts_also_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORPHEUS_ALLOW_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("ORPHEUS_ALLOW_HOSTS", "tts.internal")
    args = cli.build_parser().parse_args(["gateway", "--worker", "http://w:1", "--allow-origin", "https://c.example"])
    http = cli._gateway_config(args, list(args.worker)).http
    assert http.allow_origins == ("https://c.example", "https://a.example", "https://b.example")
    assert http.allow_hosts == ("tts.internal",)


def test_the_connection_cap_stays_under_half_the_open_file_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert effective_max_connections(HttpSettings(max_connections=10**9)) <= soft // 2
    assert effective_max_connections(HttpSettings(max_connections=3)) == 3


@pytest.mark.parametrize("field", ["header_timeout_s", "body_idle_timeout_s", "body_timeout_s", "max_connections"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        HttpSettings(**{field: 0})  # type: ignore[arg-type]


def test_serve_starts_its_workers_with_the_read_timeouts(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    args = ("serve", "--engine", "test", "--workers", "1", "--header-timeout-s", "1")
    with cli_server(*args, log=str(log)) as (url, _, _proc):
        assert eventually_sync(lambda: " at http://" in log.read_text())
        worker_url = log.read_text().split(" at ", 1)[1].split()[0].rstrip(",")
        assert worker_url != url
        held = slow_headers(int(worker_url.rsplit(":", 1)[1]), interval_s=0.1, max_s=8.0)
    assert (held.status, held.closed) == (408, True)
    assert held.held_s < 6.0
