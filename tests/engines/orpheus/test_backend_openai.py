"""The remote completions backend against a real local server streaming server-sent events."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from orpheus_tts.engines.base import EngineError, validate_params
from orpheus_tts.engines.orpheus.backends import BackendError
from orpheus_tts.engines.orpheus.backends.openai import OpenAIBackend, TokenTextParser
from orpheus_tts.engines.orpheus.codec import SAMPLES_PER_FRAME, SnacCodec
from orpheus_tts.engines.orpheus.engine import OrpheusConfig, OrpheusEngine
from orpheus_tts.engines.orpheus.prompt import SamplingParams, build_prompt
from tests.engines.orpheus.conftest import tiny_snac
from tests.servers import run_server


def audio_ids(n_frames: int, seed: int = 0) -> list[int]:
    codes = np.random.default_rng(seed).integers(0, 4096, size=(n_frames, 7))
    return [128266 + 4096 * slot + int(code) for frame in codes for slot, code in enumerate(frame)]


def as_text(ids: list[int]) -> str:
    return "".join(f"<custom_token_{i - 128256}>" for i in ids)


def uneven_events(ids: list[int]) -> list[dict[str, Any]]:
    """Text events of 1, 2, 3… tokens, a token split across two events, and the two id-carrying styles."""
    events: list[dict[str, Any]] = []
    at, size = 0, 1
    while at < len(ids):
        chunk = ids[at : at + size]
        text = as_text(chunk)
        if size == 3:  # split inside a token: "<custom_tok" | "en_N>…"
            events += [{"text": text[:11]}, {"text": text[11:]}]
        elif size == 4:  # vLLM's return_token_ids style: ids, text ignored
            events.append({"text": "ignored", "token_ids": chunk})
        elif size == 5:  # return_tokens_as_token_ids: logprobs name each token "token_id:N"
            events.append({"text": "ignored", "logprobs": {"tokens": [f"token_id:{t}" for t in chunk]}})
        else:
            events.append({"text": text})
        at += size
        size = size % 5 + 1
    return events


@dataclass
class FakeServer:
    """A completions server that streams a scripted token sequence."""

    ids: list[int]
    delay_s: float = 0.0
    forever: bool = False
    status: int = 200
    bodies: list[dict[str, Any]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        async def completions(request: Request) -> Any:
            body = await request.json()
            self.bodies.append(body)
            if self.status != 200:
                return JSONResponse({"error": {"message": "max_tokens is too large"}}, status_code=self.status)

            async def events() -> AsyncIterator[bytes]:
                try:
                    while True:
                        for event in uneven_events(self.ids):
                            payload = {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, **event}]}
                            yield f"data: {json.dumps(payload)}\n\n".encode()
                            await asyncio.sleep(self.delay_s)
                        if not self.forever:
                            break
                    yield b"data: [DONE]\n\n"
                finally:
                    self.disconnected.set()

            return StreamingResponse(events(), media_type="text/event-stream")

        async def models(request: Request) -> JSONResponse:
            return JSONResponse({"object": "list", "data": [{"id": "orpheus-served", "object": "model"}]})

        return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/v1/models", models)])


@pytest.fixture
def server() -> Iterator[tuple[FakeServer, str]]:
    fake = FakeServer([*audio_ids(6), 128258])
    with run_server(fake.app()) as url:
        yield fake, url


SAMPLING = SamplingParams(max_tokens=500, seed=3, top_k=20)


async def collect(backend: OpenAIBackend, ids: tuple[int, ...] | None = (1, 2, 3)) -> list[list[int]]:
    prompt = build_prompt("tara", "Hi.", (lambda t: [128000, 5, 6]) if ids else None)
    return [batch async for batch in backend.generate(prompt, SAMPLING)]


async def test_every_token_of_every_event_is_parsed(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    backend = OpenAIBackend("orpheus-served", base_url=f"{url}/v1")
    await backend.start()
    try:
        batches = await collect(backend)
    finally:
        await backend.close()
    assert [t for b in batches for t in b] == fake.ids
    assert any(len(b) > 1 for b in batches), "several tokens in one event are all kept"
    body = fake.bodies[0]
    assert body["prompt"] == [128259, 128000, 5, 6, 128009, 128260, 128261, 128257]
    assert body["model"] == "orpheus-served"
    assert body["stream"] is True
    assert body["stop_token_ids"][0] == 128258
    assert (body["temperature"], body["top_p"], body["repetition_penalty"]) == (0.6, 0.9, 1.1)
    assert (body["seed"], body["top_k"], body["max_tokens"], body["skip_special_tokens"]) == (3, 20, 500, False)


async def test_text_prompt_fallback_and_model_discovery(server: tuple[FakeServer, str]) -> None:
    fake, url = server
    backend = OpenAIBackend(None, base_url=url, extra_body={"min_p": 0.05})
    await backend.start()
    try:
        assert backend.encoder() is None
        await collect(backend, ids=None)
    finally:
        await backend.close()
    body = fake.bodies[0]
    assert body["model"] == "orpheus-served", "the served model is discovered from /v1/models"
    assert body["prompt"].startswith("<custom_token_3><|begin_of_text|>tara: Hi.<|eot_id|>")
    assert body["add_special_tokens"] is False
    assert body["min_p"] == 0.05


async def test_server_error_is_a_backend_error_with_its_message() -> None:
    fake = FakeServer([], status=400)
    with run_server(fake.app()) as url:
        backend = OpenAIBackend("m", base_url=url)
        await backend.start()
        try:
            with pytest.raises(BackendError, match=r"400.*max_tokens is too large"):
                await collect(backend)
        finally:
            await backend.close()


async def test_unreachable_server_is_a_backend_error() -> None:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9", request_timeout_s=2)
    await backend.start()
    try:
        with pytest.raises(BackendError, match="failed"):
            await collect(backend)
    finally:
        await backend.close()


async def test_closing_the_stream_aborts_the_server_request() -> None:
    fake = FakeServer(audio_ids(3), delay_s=0.05, forever=True)
    with run_server(fake.app()) as url:
        backend = OpenAIBackend("m", base_url=url)
        await backend.start()
        try:
            stream = backend.generate(build_prompt("tara", "x", lambda t: [128000]), SAMPLING)
            assert await stream.__anext__()
            await stream.aclose()  # type: ignore[attr-defined]
            started = time.monotonic()
            while not fake.disconnected.is_set() and time.monotonic() - started < 2.0:
                await asyncio.sleep(0.02)
            assert fake.disconnected.is_set(), "the server saw the client go away"
        finally:
            await backend.close()


def test_token_text_parser_edge_cases() -> None:
    parser = TokenTextParser()
    assert parser.feed("<custom_token_1") == []
    assert parser.feed("0><custom_token_2>") == [128266, 128258]
    assert parser.feed("hello <b> <custom_token_5>") == [128261]
    assert parser.unmapped_chars == len("hello <b>")
    assert parser.feed("<" + "x" * 40) == [], "junk is not held forever"
    assert parser.feed("<custom_token_7>") == [128263]


async def test_engine_over_the_openai_backend_streams_exact_audio(server: tuple[FakeServer, str]) -> None:
    _fake, url = server
    backend = OpenAIBackend("orpheus-served", base_url=url)
    engine = OrpheusEngine(backend, OrpheusConfig(), codec=SnacCodec(tiny_snac()))
    await engine.start()
    try:
        params = validate_params(engine.param_specs(), {})
        pcm = b"".join([piece async for piece in engine.synthesize("Hello.", "tara", params)])
    finally:
        await engine.close()
    assert len(pcm) // 2 == 6 * SAMPLES_PER_FRAME
    assert engine.counters()["frames"] == 6


async def speak_via(fake: FakeServer) -> tuple[bytes, dict[str, int]]:
    with run_server(fake.app()) as url:
        engine = OrpheusEngine(OpenAIBackend("m", base_url=url), OrpheusConfig(), codec=SnacCodec(tiny_snac()))
        await engine.start()
        try:
            params = validate_params(engine.param_specs(), {})
            pcm = b"".join([piece async for piece in engine.synthesize("Hello.", "tara", params)])
        finally:
            await engine.close()
    return pcm, engine.counters()


async def test_a_phase_slip_costs_one_frame_not_the_rest_of_the_stream() -> None:
    ids = audio_ids(8, seed=5)
    del ids[3 * 7 + 2]  # frame 3 loses its slot-2 token
    pcm, counters = await speak_via(FakeServer([*ids, 128258]))
    assert counters["resynced"] == 1
    assert counters["frames"] == 7
    assert len(pcm) // 2 == 7 * SAMPLES_PER_FRAME


async def test_no_audio_at_all_is_an_engine_error_not_an_empty_success() -> None:
    with pytest.raises(EngineError, match="no audio"):
        await speak_via(FakeServer([128258]))
