"""What a web page can make the server do: JSON bodies only, no foreign origins, no rebound Host."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import openai
import pytest

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.sdk import OrpheusTTS
from orpheus_tts.serving.local import ThreadedServer
from orpheus_tts.serving.settings import HttpSettings
from orpheus_tts.worker.app import create_app as create_worker

KEY = "ork_browser-checks-key"
ALLOWED = "https://app.example"
SPEECH = {"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "pcm"}


@contextlib.contextmanager
def gateway(keys: list[str], http: HttpSettings | None = None) -> Iterator[str]:
    with ThreadedServer(create_worker(ToneEngine())) as worker:
        config = GatewayConfig(workers=(worker.url,), http=http or HttpSettings())
        with ThreadedServer(create_gateway(config, Authenticator.from_keys(keys))) as server:
            yield server.url


@pytest.fixture(scope="module")
def open_gateway() -> Iterator[str]:
    with gateway([], HttpSettings(allow_origins=(ALLOWED,), allow_hosts=("tts.internal",))) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_gateway() -> Iterator[str]:
    with gateway([KEY]) as url:
        yield url


def post(url: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{url}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_post_that_is_not_json_is_415(open_gateway: str, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    v1 = post(open_gateway, "/v1/tts/stream", content=b'{"text": "Hi."}', headers=headers)
    speech = post(open_gateway, "/v1/audio/speech", content=b'{"model": "m", "input": "Hi."}', headers=headers)
    assert (v1.status_code, v1.json()["error"]["code"]) == (415, "unsupported_media_type")
    assert (speech.status_code, speech.json()["error"]["type"]) == (415, "invalid_request_error")
    assert speech.json()["error"]["code"] == "unsupported_media_type"


def test_json_with_a_charset_is_accepted(open_gateway: str) -> None:
    body = b'{"text": "Hi."}'
    response = post(
        open_gateway, "/v1/tts/stream", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


def test_a_foreign_origin_is_refused_and_the_own_and_allowed_ones_pass(open_gateway: str) -> None:
    host = open_gateway.removeprefix("http://")
    foreign = post(open_gateway, "/v1/tts/stream", json={"text": "Hi."}, headers={"origin": "https://evil.example"})
    own = post(open_gateway, "/v1/tts/stream", json={"text": "Hi."}, headers={"origin": f"http://{host}"})
    allowed = post(open_gateway, "/v1/tts/stream", json={"text": "Hi."}, headers={"origin": ALLOWED})
    null = post(open_gateway, "/v1/tts/stream", json={"text": "Hi."}, headers={"origin": "null"})
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (403, "forbidden")
    assert null.status_code == 403
    assert own.status_code == allowed.status_code == 200


def test_a_rebound_host_is_refused_on_an_open_loopback_server(open_gateway: str) -> None:
    port = open_gateway.rsplit(":", 1)[1]
    rebound = httpx.get(f"{open_gateway}/v1/voices", headers={"host": f"attacker.example:{port}"})
    localhost = httpx.get(f"{open_gateway}/v1/voices", headers={"host": f"localhost:{port}"})
    allowed = httpx.get(f"{open_gateway}/v1/voices", headers={"host": "tts.internal"})
    assert (rebound.status_code, rebound.json()["error"]["code"]) == (403, "forbidden")
    assert localhost.status_code == allowed.status_code == 200


def test_with_keys_the_host_is_not_checked(keyed_gateway: str) -> None:
    headers = {"host": "tts.example.com", "authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{keyed_gateway}/v1/voices", headers=headers).status_code == 200


def test_the_official_openai_client_still_works(keyed_gateway: str) -> None:
    client = openai.OpenAI(base_url=f"{keyed_gateway}/v1", api_key=KEY, max_retries=0, timeout=30)
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="pcm")
    assert len(audio.content) > 0


async def test_the_sdk_still_works(keyed_gateway: str) -> None:
    async with OrpheusTTS(keyed_gateway, api_key=KEY) as tts:
        audio = b"".join([chunk async for chunk in tts.stream(text="Hi.")])
    assert audio
