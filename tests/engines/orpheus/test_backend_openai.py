"""The remote completions backend against a local server written here, streaming server-sent events.

The server is scripted so that it can produce what real servers do only now
and then or not at all: tokens split across events, ids in two different
side channels, a ``[DONE]`` with no finish reason, a connection that ends
mid-stream, a refusal of token-id prompts. The same backend against the real
``llama_cpp.server`` is in ``test_llamacpp_server.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from orpheus_tts.engines.base import EngineError, validate_params
from orpheus_tts.engines.orpheus.backends import BackendError, GenerationInterruptedError
from orpheus_tts.engines.orpheus.backends.openai import OpenAIBackend, TokenTextParser
from orpheus_tts.engines.orpheus.codec import SAMPLES_PER_FRAME, SnacCodec
from orpheus_tts.engines.orpheus.engine import OrpheusConfig, OrpheusEngine
from orpheus_tts.engines.orpheus.prompt import SamplingParams, build_prompt
from orpheus_tts.protocol import EosFrame, ErrorFrame
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
    finish_reason: str | None = None
    """Sent in a last event after the tokens (``None``: no finish reason at all)."""
    send_done: bool = True
    refuse_ids: bool = False
    """Answer 422 to token-id prompts, as llama-cpp-python's server does."""
    owned_by: str = "vllm"
    bodies: list[dict[str, Any]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        async def completions(request: Request) -> Any:
            body = await request.json()
            self.bodies.append(body)
            if self.refuse_ids and isinstance(body.get("prompt"), list):
                return JSONResponse({"detail": [{"msg": "Input should be a valid string"}]}, status_code=422)
            if not body.get("stream"):
                return JSONResponse({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
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
                    if self.finish_reason:
                        last = {"index": 0, "text": "", "finish_reason": self.finish_reason}
                        yield f"data: {json.dumps({'choices': [last]})}\n\n".encode()
                    if self.send_done:
                        yield b"data: [DONE]\n\n"
                finally:
                    self.disconnected.set()

            return StreamingResponse(events(), media_type="text/event-stream")

        async def models(request: Request) -> JSONResponse:
            return JSONResponse(
                {"object": "list", "data": [{"id": "orpheus-served", "object": "model", "owned_by": self.owned_by}]}
            )

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
    with pytest.raises(BackendError, match=r"cannot list models.*flavour="):
        await OpenAIBackend("m", base_url="http://127.0.0.1:9", request_timeout_s=2).start()
    # With the flavour and prompt form given, start() needs no server; the request fails instead.
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9", flavour="vllm", prompt_format="text")
    await backend.start()
    try:
        with pytest.raises(BackendError, match="failed"):
            await collect(backend, ids=None)
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


async def speak_via(fake: FakeServer, **raw: Any) -> tuple[bytes, dict[str, int]]:
    with run_server(fake.app()) as url:
        engine = OrpheusEngine(OpenAIBackend("m", base_url=url), OrpheusConfig(), codec=SnacCodec(tiny_snac()))
        await engine.start()
        try:
            params = validate_params(engine.param_specs(), raw)
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


# --- how a stream ends -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finish_reason", "send_done"),
    [(None, True), (None, False), ("abort", True)],
    ids=["done-without-finish-reason", "connection-ends", "aborted"],
)
async def test_a_stream_cut_short_is_a_retryable_error_never_a_short_success(
    finish_reason: str | None, send_done: bool
) -> None:
    fake = FakeServer(audio_ids(4), finish_reason=finish_reason, send_done=send_done)
    with pytest.raises(GenerationInterruptedError, match=r"after 28 of at most \d+ tokens without the stop token") as e:
        await speak_via(fake)
    assert e.value.retryable


async def test_finish_reason_stop_without_the_stop_token_text_is_complete() -> None:
    """vLLM does not stream the stop token's text; its finish_reason says the model stopped."""
    pcm, counters = await speak_via(FakeServer(audio_ids(5), finish_reason="stop"))
    assert len(pcm) // 2 == 5 * SAMPLES_PER_FRAME
    assert counters["length_capped"] == 0


async def test_finish_reason_length_is_a_length_capped_segment() -> None:
    pcm, counters = await speak_via(FakeServer(audio_ids(5), finish_reason="length"), max_tokens=35)
    assert len(pcm) // 2 == 5 * SAMPLES_PER_FRAME
    assert counters["length_capped"] == 1


async def test_the_worker_reports_a_cut_stream_as_a_retryable_engine_error() -> None:
    from orpheus_tts.worker.app import create_app
    from orpheus_tts.worker.config import WorkerConfig
    from tests.streams import stream_tts

    fake = FakeServer(audio_ids(4), finish_reason=None)
    with run_server(fake.app()) as llm_url:
        engine = OrpheusEngine(OpenAIBackend("m", base_url=llm_url), OrpheusConfig(), codec=SnacCodec(tiny_snac()))
        with run_server(create_app(engine, WorkerConfig())) as url:
            result = await stream_tts(url, {"text": "Hello."})
    # Four frames decode before the cut, so the error comes mid-stream, after audio.
    assert result.status == 200
    error = result.frames[-1]
    assert isinstance(error, ErrorFrame), result.frames[-1]
    assert (error.code, error.retryable) == ("engine_error", True)
    assert not any(isinstance(f, EosFrame) for f in result.frames)


# --- flavours, prompt forms, capacity --------------------------------------------------------


def body_for(flavour: str, ids: bool = True, sampling: SamplingParams = SAMPLING) -> dict[str, Any]:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9", flavour=flavour)
    prompt = build_prompt("tara", "Hi.", (lambda t: [128000, 5, 6]) if ids else None)
    return backend.request_body(prompt, sampling)


def test_each_flavour_gets_its_own_sampling_field_names() -> None:
    llama = body_for("llamacpp")
    assert (llama["repeat_penalty"], llama["top_k"], llama["min_p"], llama["seed"]) == (1.1, 20, 0.0, 3)
    assert llama["stop"] == ["<custom_token_2>"]
    assert not {"repetition_penalty", "stop_token_ids", "skip_special_tokens"} & set(llama)
    assert body_for("llamacpp", sampling=SamplingParams(max_tokens=7))["top_k"] == 0, "0 disables, not 40"
    for flavour in ("vllm", "sglang"):
        body = body_for(flavour)
        assert (body["repetition_penalty"], body["stop_token_ids"], body["min_p"]) == (1.1, [128258], 0.0)
        assert body["skip_special_tokens"] is False
        assert "repeat_penalty" not in body
        assert "stop" not in body
        assert "top_k" not in body_for(flavour, sampling=SamplingParams(max_tokens=7)), "server default: off"
    assert body_for("vllm", ids=False)["add_special_tokens"] is False
    assert "add_special_tokens" not in body_for("sglang", ids=False)


@pytest.mark.parametrize(("owned_by", "flavour"), [("vllm", "vllm"), ("sglang", "sglang"), ("me", "llamacpp")])
async def test_auto_flavour_follows_the_served_models_owner(owned_by: str, flavour: str) -> None:
    fake = FakeServer([128258], owned_by=owned_by)
    with run_server(fake.app()) as url:
        backend = OpenAIBackend(None, base_url=url)
        await backend.start()
        await backend.close()
    assert backend.flavour == flavour
    assert backend.default_capacity == (1 if flavour == "llamacpp" else 32)


async def test_an_unknown_server_asks_for_the_flavour() -> None:
    with run_server(FakeServer([], owned_by="someone").app()) as url:
        with pytest.raises(BackendError, match=r"owned_by 'someone'.*flavour=vllm, sglang or llamacpp"):
            await OpenAIBackend("m", base_url=url).start()


@pytest.mark.parametrize("refuse_ids", [False, True])
async def test_prompts_go_as_ids_where_the_server_takes_them_else_as_text(
    tiny_models: tuple[Path, Path], refuse_ids: bool
) -> None:
    fake = FakeServer([*audio_ids(2), 128258], refuse_ids=refuse_ids)
    with run_server(fake.app()) as url:
        engine = OrpheusEngine(OpenAIBackend(str(tiny_models[0]), base_url=url), codec=SnacCodec(tiny_snac()))
        await engine.start()
        try:
            params = validate_params(engine.param_specs(), {})
            pcm = b"".join([piece async for piece in engine.synthesize("Hi.", "tara", params)])
        finally:
            await engine.close()
    assert len(pcm) // 2 == 2 * SAMPLES_PER_FRAME
    probe, request = fake.bodies[0], fake.bodies[-1]
    assert probe["prompt"] == [128000]
    assert probe["max_tokens"] == 1
    if refuse_ids:
        assert request["prompt"] == "<custom_token_3><|begin_of_text|>tara: Hi.<|eot_id|>" + "".join(
            f"<custom_token_{n}>" for n in (4, 5, 1)
        )
    else:
        assert request["prompt"][:2] == [128259, 128000]
        assert request["prompt"][-4:] == [128009, 128260, 128261, 128257]


class CountingTransport(httpx.AsyncHTTPTransport):
    """Counts completion requests whose responses are still open (the client's view of "at once")."""

    def __init__(self) -> None:
        super().__init__()
        self.open = self.peak = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path != "/v1/completions":
            return response
        self.open += 1
        self.peak = max(self.peak, self.open)
        inner = response.stream
        transport = self

        class Stream(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for chunk in inner:  # type: ignore[union-attr]
                    yield chunk

            async def aclose(self) -> None:
                transport.open -= 1
                await inner.aclose()  # type: ignore[union-attr]

        return httpx.Response(response.status_code, headers=response.headers, stream=Stream(), request=request)


async def test_at_most_capacity_requests_are_sent_at_once() -> None:
    fake = FakeServer([*audio_ids(3), 128258], delay_s=0.01)
    transport = CountingTransport()
    with run_server(fake.app()) as url:
        backend = OpenAIBackend("m", base_url=url, capacity=2, transport=transport)
        await backend.start()
        try:
            results = await asyncio.gather(*(collect(backend) for _ in range(5)))
        finally:
            await backend.close()
    assert all(sum(len(b) for b in r) == 22 for r in results)
    assert len(fake.bodies) == 5
    assert transport.peak == 2
