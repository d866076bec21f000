"""The playground's live mode in headless Chromium: speaks while typing, highlights words, Stop cancels."""

# The browser and page fixtures are the playground tests' own, imported: their names are test parameters here.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.auth import Authenticator
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.gateway.playground import STATIC_DIR
from orpheus_tts.worker.app import create_app as create_worker
from orpheus_tts.worker.config import WorkerConfig
from tests.eventually import eventually_sync
from tests.gateway.test_playground import KEY, browser, page  # noqa: F401 - fixtures
from tests.servers import run_server

TYPED = "The page speaks while you type. Every word lights up as it is heard. "
LONG = "This sentence is long enough to still be playing when Stop is pressed. " * 8


@pytest.fixture
def stack() -> Iterator[tuple[str, str]]:
    """A gateway that wants a key, in front of a tone worker that reports word timings; (gateway, worker)."""
    engine = ToneEngine(capacity=2, word_timings=True, compute_s_per_audio_s=0.3)
    with run_server(create_worker(engine, WorkerConfig())) as worker:
        app = create_gateway(GatewayConfig(workers=(worker,)), Authenticator.from_keys([KEY]))
        with run_server(app) as url:
            yield url, worker


def live(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("() => ({...window.__orpheusLive})"))


def test_script_uses_only_its_own_origin() -> None:
    script = (STATIC_DIR / "live.js").read_text(encoding="utf-8")
    assert "http://" not in script
    assert "https://" not in script
    assert '"v1/tts/realtime"' in script


def test_typing_speaks_before_the_end_and_highlights_every_word(page: Any, stack: tuple[str, str]) -> None:
    url, _ = stack
    page.goto(url + "/")
    page.fill("#api-key", KEY)
    page.type("#live-text", TYPED, delay=15)
    page.wait_for_function("() => window.__orpheusLive.audioMessages > 0")
    page.click("#live-end")
    page.wait_for_function("() => window.__orpheusLive.state === 'done' || window.__orpheusLive.error")
    state = live(page)
    assert state["error"] is None
    assert state["firstAudioBeforeEnd"] is True, "audio came while typing, before End"
    assert state["words"] == TYPED.split()
    page.wait_for_function(f"() => window.__orpheusLive.highlighted === {len(TYPED.split())}")
    assert page.locator(".live-word.spoken").count() == len(TYPED.split())


def test_feed_word_by_word_then_stop_cancels(page: Any, stack: tuple[str, str]) -> None:
    url, worker = stack
    page.goto(url + "/")
    page.fill("#api-key", KEY)
    page.fill("#text", LONG)
    page.click("#live-feed")
    page.wait_for_function("() => window.__orpheusLive.audioMessages >= 2")
    page.click("#live-stop")
    page.wait_for_function("() => window.__orpheusLive.state === 'cancelled'")

    def idle() -> bool:
        return bool(httpx.get(worker + "/v1/system").json()["inflight"] == 0)

    assert eventually_sync(idle), "the worker's engine work stopped"
    assert live(page)["audioAfterCancel"] == 0


def test_a_missing_key_is_shown(page: Any, stack: tuple[str, str]) -> None:
    url, _ = stack
    page.goto(url + "/")
    page.fill("#api-key", "")
    page.type("#live-text", "Hello. ", delay=5)
    page.wait_for_function("() => window.__orpheusLive.error !== null")
    assert "unauthorized" in page.inner_text("#live-status") or "connect" in page.inner_text("#live-status").lower()
