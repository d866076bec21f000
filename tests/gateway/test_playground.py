"""The web playground: served files and headers, then the page itself in headless Chromium.

The browser tests drive Debian's ``chromium`` with Playwright's Python package
against a real gateway in front of a real tone-engine worker, both on loopback
ports. They are skipped, with the reason, where either is missing.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.gateway.playground import PLAYGROUND_CSP, STATIC_DIR, add_playground_routes
from orpheus_tts.protocol import SAMPLE_RATE_HZ
from orpheus_tts.worker.app import create_app as create_worker
from orpheus_tts.worker.config import WorkerConfig
from tests.servers import run_server

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
KEY = "playground-test-key"
TEXT = (
    "Streaming speech arrives in small pieces. The page plays each piece as soon as it lands, "
    "draws the waveform, and measures the time to first audio."
)
PAGE_TIMEOUT_MS = 30_000
"""Upper bound for anything the page must do; it only proves nothing hangs."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


# --------------------------------------------------------------------------- served files (no browser)


async def asgi_get(app: Any, path: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.request(method, path)


def plain_app() -> Starlette:
    app = Starlette()
    add_playground_routes(app)
    return app


def test_static_files_are_package_data() -> None:
    for name in ("index.html", "app.js", "style.css"):
        assert (STATIC_DIR / name).is_file(), name


async def test_page_is_served_with_a_strict_policy() -> None:
    response = await asgi_get(plain_app(), "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == PLAYGROUND_CSP
    assert "connect-src 'self'" in PLAYGROUND_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    page = response.text
    assert 'src="static/app.js"' in page
    assert 'href="static/style.css"' in page
    # No inline script or style (the policy forbids them) and nothing from another origin.
    assert "<script>" not in page
    assert "<style" not in page
    assert "http://" not in page
    assert "https://" not in page


@pytest.mark.parametrize(("path", "media_type"), [("/static/app.js", "javascript"), ("/static/style.css", "text/css")])
async def test_assets_are_served(path: str, media_type: str) -> None:
    response = await asgi_get(plain_app(), path)
    assert response.status_code == 200
    assert media_type in response.headers["content-type"]
    assert response.headers["cache-control"] == "no-cache"
    assert response.content == (STATIC_DIR / path.rsplit("/", 1)[1]).read_bytes()


@pytest.mark.parametrize("path", ["/static/missing.js", "/static/../playground.py", "/static/%2e%2e/playground.py"])
async def test_nothing_else_is_served(path: str) -> None:
    response = await asgi_get(plain_app(), path)
    assert response.status_code == 404


def test_script_uses_only_its_own_origin() -> None:
    script = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    assert "http://" not in script
    assert "https://" not in script
    assert 'fetch("v1/tts/stream"' in script
    assert 'fetch("v1/voices"' in script


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: no JavaScript syntax check")
def test_script_parses() -> None:
    import subprocess

    result = subprocess.run(["node", "--check", str(STATIC_DIR / "app.js")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


async def test_gateway_serves_the_page_beside_its_api() -> None:
    app = create_gateway(GatewayConfig(workers=("http://127.0.0.1:9",)))
    response = await asgi_get(app, "/")
    assert response.status_code == 200
    assert "Orpheus TTS" in response.text
    schema = (await asgi_get(app, "/openapi.json")).json()
    assert "/" not in schema["paths"]


# --------------------------------------------------------------------------- the page in a browser


def chromium_path() -> str:
    path = os.environ.get("ORPHEUS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 860}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def gateway() -> Iterator[str]:
    """A gateway that wants a key, in front of a tone-engine worker."""
    with run_server(create_worker(ToneEngine(capacity=2), WorkerConfig())) as worker_url:
        app = create_gateway(GatewayConfig(workers=(worker_url,)), Authenticator.from_keys([KEY]))
        with run_server(app) as url:
            yield url


def page_state(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("() => ({...window.__orpheus, voices: window.__orpheus.voices.map(v => v.id)})"))


def test_speaks_while_streaming_and_downloads_the_audio(page: Any, gateway: str) -> None:
    page.goto(gateway + "/")
    page.wait_for_function("() => window.__orpheus.voices.length > 0")
    assert page_state(page)["voices"] == ["tone", "tone-low"]
    assert page.locator("#server-status").get_attribute("data-state") == "ok"
    page.select_option("#voice", "tone-low")
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    page.fill("#text", TEXT)
    page.click("#speak")

    page.wait_for_function("() => window.__orpheus.samples > 0 && window.__orpheus.ttfaMs !== null")
    page.wait_for_function("() => window.__orpheus.done || window.__orpheus.error")
    state = page_state(page)
    assert state["error"] is None, state["error"]
    assert state["chunks"] > 1  # audio came as a stream of chunks, not one body
    assert state["samples"] > SAMPLE_RATE_HZ  # more than a second of audio for this text
    assert 0 < state["ttfaMs"] < PAGE_TIMEOUT_MS
    assert state["rtf"] > 0
    assert state["serverRtf"] is not None  # the worker's final metrics frame was read
    assert page.text_content("#ttfa").endswith("ms")
    assert page.text_content("#rtf").endswith("×")
    assert page.text_content("#samples") == f"{state['samples']:,}"
    assert page.text_content("#status") == "done"
    assert page.is_hidden("#error")
    # The key is kept in this browser's storage, nowhere else.
    assert page.evaluate("() => localStorage.getItem('orpheus.apiKey')") == KEY

    with page.expect_download() as info:
        page.click("#download")
    path = info.value.path()
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, SAMPLE_RATE_HZ)
        assert wav.getnframes() == state["samples"]
        pcm = wav.readframes(wav.getnframes())
    assert any(pcm)  # a tone, not silence

    # The same stream fetched directly carries the same audio, byte for byte.
    frames = [
        json.loads(line)
        for line in httpx.post(
            gateway + "/v1/tts/stream",
            json={"text": TEXT, "voice": "tone-low"},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
        ).text.splitlines()
    ]
    assert pcm == b"".join(base64.b64decode(f["audio"]) for f in frames if f["type"] == "chunk")


def test_speaks_with_the_embedded_voice(page: Any, embedded_worker: str) -> None:
    """Real speech end to end; leaves a screenshot of the page in tests/artifacts/playground.png."""
    with run_server(create_gateway(GatewayConfig(workers=(embedded_worker,)))) as url:
        page.goto(url + "/")
        page.wait_for_function("() => window.__orpheus.voices.length > 0")
        page.fill(
            "#text",
            "Hello! This is Orpheus, speaking while the audio streams in. "
            "The first sound plays long before the last word is ready.",
        )
        page.click("#speak")
        page.wait_for_function("() => window.__orpheus.done || window.__orpheus.error")
        state = page_state(page)
        assert state["error"] is None, state["error"]
        assert state["samples"] > 2 * SAMPLE_RATE_HZ
        assert "engine embedded" in page.text_content("#details")
        page.wait_for_timeout(600)  # let the playhead move for the picture
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)


def test_a_missing_key_is_shown_as_an_error(page: Any, gateway: str) -> None:
    page.goto(gateway + "/")
    page.wait_for_function("() => window.__orpheus.voices.length > 0")
    page.fill("#text", "Hello there.")
    page.click("#speak")
    page.wait_for_function("() => window.__orpheus.error !== null")
    state = page_state(page)
    assert state["error"]["code"] == "unauthorized"
    assert state["samples"] == 0
    assert page.is_visible("#error")
    assert "HTTP 401 unauthorized" in page.text_content("#error-title")
    assert "API key" in page.text_content("#error-message")
    assert page.text_content("#status") == "failed"
    assert page.is_enabled("#speak")
    assert page.is_disabled("#download")


# --------------------------------------------------------------------------- streams that go wrong


def fake_server(frames: list[dict[str, Any]], frame_delay_s: float = 0.0) -> Starlette:
    """Voices, and a stream that sends ``frames`` then ends: for the failures a healthy server never sends."""

    async def voices(request: Request) -> Response:
        return JSONResponse({"engine": "fake", "default": "v", "voices": [{"id": "v"}], "parameters": []})

    async def stream(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for frame in frames:
                yield (json.dumps(frame) + "\n").encode()
                await asyncio.sleep(frame_delay_s)

        return StreamingResponse(body(), media_type="application/x-ndjson")

    app = Starlette(routes=[Route("/v1/voices", voices), Route("/v1/tts/stream", stream, methods=["POST"])])
    add_playground_routes(app)
    return app


def chunk(seq: int, samples: int = 2400) -> dict[str, Any]:
    pcm = (b"\x10\x00" * samples)[: samples * 2]
    return {"type": "chunk", "seq": seq, "audio": base64.b64encode(pcm).decode(), "samples": samples}


@pytest.mark.parametrize(
    ("frames", "title", "message"),
    [
        (
            [chunk(0), {"type": "error", "code": "worker_lost", "message": "the worker died", "retryable": True}],
            "Stream failed: worker_lost",
            "the worker died (after 0.10 s of audio)",
        ),
        ([chunk(0), chunk(1)], "The stream ended without its final frame", "audio is incomplete"),
        (
            [chunk(0), {"type": "eos", "samples_total": 9999, "chunks_total": 2}],
            "Audio is incomplete",
            "9999 samples",
        ),
    ],
    ids=["error-frame", "no-eos", "eos-mismatch"],
)
def test_a_broken_stream_is_reported(page: Any, frames: list[dict[str, Any]], title: str, message: str) -> None:
    with run_server(fake_server(frames)) as url:
        page.goto(url + "/")
        page.wait_for_function("() => window.__orpheus.voices.length > 0")
        page.click("#speak")
        page.wait_for_function("() => window.__orpheus.error !== null")
        state = page_state(page)
        assert state["done"] is False
        assert state["samples"] == sum(f["samples"] for f in frames if f["type"] == "chunk")
        assert page.text_content("#error-title") == title
        assert message in page.text_content("#error-message")
        assert page.text_content("#status") == "failed"


def test_wav_header_matches_the_python_writer(page: Any) -> None:
    """The page's WAV builder against the standard library's, on the same samples."""
    frames = [chunk(0, 1000), chunk(1, 333), {"type": "eos", "samples_total": 1333, "chunks_total": 2}]
    with run_server(fake_server(frames)) as url:
        page.goto(url + "/")
        page.wait_for_function("() => window.__orpheus.voices.length > 0")
        page.click("#speak")
        page.wait_for_function("() => window.__orpheus.done")
        with page.expect_download() as info:
            page.click("#download")
        produced = Path(info.value.path()).read_bytes()
    expected = io.BytesIO()
    with wave.open(expected, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE_HZ)
        wav.writeframes(b"\x10\x00" * 1333)
    assert produced == expected.getvalue()


def test_stop_ends_the_stream_and_keeps_what_arrived(page: Any) -> None:
    frames = [chunk(i) for i in range(200)]  # 20 s of audio, one frame every 50 ms
    with run_server(fake_server(frames, frame_delay_s=0.05)) as url:
        page.goto(url + "/")
        page.wait_for_function("() => window.__orpheus.voices.length > 0")
        page.click("#speak")
        page.wait_for_function("() => window.__orpheus.chunks >= 3")
        assert page.is_enabled("#stop")
        page.click("#stop")
        page.wait_for_function("() => !window.__orpheus.running")
        state = page_state(page)
        assert state["error"] is None
        assert state["done"] is False
        assert 3 <= state["chunks"] < len(frames)
        assert page.text_content("#status") == "stopped"
        assert page.is_enabled("#speak")
        assert page.is_enabled("#download")  # what arrived can still be saved
        page.wait_for_timeout(300)
        assert page_state(page)["chunks"] == state["chunks"]  # nothing more is read
