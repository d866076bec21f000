"""A gateway with a key in front of the embedded-voice worker, shared by the framework tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from tests.servers import run_server

KEY = "integrations-key"


@pytest.fixture(scope="session")
def gateway_url(embedded_worker: str) -> Iterator[str]:
    app = create_app(GatewayConfig(workers=(embedded_worker,), probe_interval_s=0.5), Authenticator.from_keys([KEY]))
    with run_server(app) as url:
        yield url
