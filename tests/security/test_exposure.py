"""Routes that describe the deployment: with keys, nobody without one reads them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from orpheus_tts import cli
from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.serving.local import ThreadedServer, free_port
from orpheus_tts.serving.settings import HttpSettings
from orpheus_tts.worker.app import create_app as create_worker

KEY = "ork_exposure-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}


@contextlib.contextmanager
def gateway(keys: list[str], http: HttpSettings | None = None) -> Iterator[tuple[str, str]]:
    """A gateway in front of one worker; yields (gateway URL, worker URL)."""
    with ThreadedServer(create_worker(ToneEngine())) as worker:
        config = GatewayConfig(workers=(worker.url,), http=http or HttpSettings())
        with ThreadedServer(create_gateway(config, Authenticator.from_keys(keys))) as server:
            yield server.url, worker.url


@pytest.fixture(scope="module")
def keyed() -> Iterator[tuple[str, str]]:
    with gateway([KEY]) as urls:
        yield urls


@pytest.mark.parametrize("path", ["/v1/system", "/metrics"])
def test_with_keys_routes_that_name_the_workers_need_one(keyed: tuple[str, str], path: str) -> None:
    url, worker_url = keyed
    anonymous = httpx.get(f"{url}{path}")
    wrong = httpx.get(f"{url}{path}", headers={"authorization": "Bearer nope"})
    with_key = httpx.get(f"{url}{path}", headers=AUTH)
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthorized")
    assert worker_url not in anonymous.text
    assert wrong.status_code == 401
    assert with_key.status_code == 200
    assert worker_url in with_key.text


def test_health_stays_open(keyed: tuple[str, str]) -> None:
    url, _ = keyed
    assert [httpx.get(f"{url}{p}").status_code for p in ("/healthz", "/readyz")] == [200, 200]


def test_the_system_command_sends_its_key(keyed: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    url, worker_url = keyed
    assert cli.main(["system", "--url", url, "--api-key", KEY, "--json"]) == 0
    assert worker_url in capsys.readouterr().out
    assert cli.main(["system", "--url", url, "--json"]) == 1


def test_a_metrics_port_serves_metrics_alone_and_without_a_key() -> None:
    metrics_port = free_port()
    with gateway([KEY], HttpSettings(metrics_port=metrics_port)) as (url, _):
        metrics_url = f"http://127.0.0.1:{metrics_port}"
        scraped = httpx.get(f"{metrics_url}/metrics")
        on_main = httpx.get(f"{url}/metrics", headers=AUTH)
        others = [httpx.get(f"{metrics_url}{p}", headers=AUTH).status_code for p in ("/v1/system", "/v1/voices", "/")]
        healthy = httpx.get(f"{metrics_url}/healthz").status_code
    assert scraped.status_code == 200
    assert "orpheus_requests_total" in scraped.text or "orpheus_upstream_up" in scraped.text
    assert on_main.status_code == 404
    assert others == [404, 404, 404]
    assert healthy == 200


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_api_docs_are_off_by_default_and_on_behind_the_flag(keyed: tuple[str, str], path: str) -> None:
    url, _ = keyed
    assert httpx.get(f"{url}{path}").status_code == 404
    assert httpx.get(f"{url}/openapi.json").status_code == 200
    with gateway([KEY], HttpSettings(api_docs=True)) as (docs_url, _):
        assert httpx.get(f"{docs_url}{path}").status_code == 200
