"""The openai backend against the real ``llama_cpp.server`` (llama-cpp-python's OpenAI-compatible server).

The server is started by the test on a loopback port with the scripted GGUF,
so every answer is known: each stream must be the offline decode of the
scripted frames, or end in the documented retryable ``engine_error``, never a
short success. Its default ``interrupt_requests=True`` makes a second request
cut off the first one, which is how the silent truncation looked. The
sampling fields are read from what the server received, through a
request-capturing reverse proxy (the only piece written here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from orpheus_tts.audio import float_to_int16
from orpheus_tts.engines.base import validate_params
from orpheus_tts.engines.orpheus.backends import BackendError, GenerationInterruptedError
from orpheus_tts.engines.orpheus.backends.openai import OpenAIBackend
from orpheus_tts.engines.orpheus.codec import SAMPLES_PER_FRAME
from orpheus_tts.engines.orpheus.engine import OrpheusConfig, OrpheusEngine
from orpheus_tts.engines.orpheus.loading import load_codec
from orpheus_tts.protocol import ChunkFrame, EosFrame, ErrorFrame
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.engines.orpheus.conftest import ScriptedModel
from tests.eventually import eventually_sync
from tests.servers import free_port, run_server, stop_group
from tests.streams import stream_tts

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")

SERVER_START_S = 120
CONCURRENT = 3


@contextlib.contextmanager
def llama_server(gguf: Path, *extra: str) -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--verbose", "false", *extra]
    url = f"http://127.0.0.1:{port}"
    # Its output goes to a file, not a pipe: a full pipe would stall the server.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {log.read()[-2000:]!r}")
            try:
                return httpx.get(f"{url}/v1/models", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            assert eventually_sync(ready, within_s=SERVER_START_S), "llama_cpp.server did not start"
            yield url
        finally:
            stop_group(proc)


@pytest.fixture(scope="module")
def server(scripted: ScriptedModel) -> Iterator[str]:
    assert scripted.gguf is not None
    with llama_server(scripted.gguf) as url:
        yield url


class CapturingProxy:
    """Forwards every request to the server unchanged, streaming the answer back; keeps the JSON bodies."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.bodies: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def forward(request: Request) -> Response:
            raw = await request.body()
            if raw:
                self.bodies.append(json.loads(raw))
            client = httpx.AsyncClient(base_url=self.target, timeout=60)
            upstream = await client.send(
                client.build_request(
                    request.method, request.url.path, content=raw, headers={"content-type": "application/json"}
                ),
                stream=True,
            )

            async def body() -> AsyncIterator[bytes]:
                try:
                    async for chunk in upstream.aiter_raw():
                        yield chunk
                finally:
                    await upstream.aclose()
                    await client.aclose()

            return StreamingResponse(
                body(), status_code=upstream.status_code, media_type=upstream.headers.get("content-type")
            )

        return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])


def expected_pcm(scripted: ScriptedModel, snac: Path) -> np.ndarray:
    audio = load_codec(snac, "cpu").decode_all(np.array(scripted.frames, dtype=np.int64))
    return np.frombuffer(float_to_int16(audio), dtype="<i2")


def engine_for(url: str, snac: Path, model: str | None = None, **options: Any) -> OrpheusEngine:
    codec = load_codec(snac, "cpu")
    return OrpheusEngine(OpenAIBackend(model, base_url=url, **options), OrpheusConfig(), codec=codec)


async def speak(engine: OrpheusEngine, text: str) -> np.ndarray:
    params = validate_params(engine.param_specs(), {})
    pcm = b"".join([piece async for piece in engine.synthesize(text, "tara", params)])
    return np.frombuffer(pcm, dtype="<i2")


async def concurrent_outcomes(engine: OrpheusEngine, expected: np.ndarray) -> list[str]:
    """Each stream's outcome: ``complete`` (exactly the expected audio) or ``interrupted`` (retryable error)."""

    async def one(i: int) -> str:
        try:
            pcm = await speak(engine, f"Request number {i}.")
        except GenerationInterruptedError as exc:
            assert exc.retryable
            return "interrupted"
        assert pcm.size == expected.size, f"a short success: {pcm.size} of {expected.size} samples"
        assert int(np.abs(pcm.astype(np.int32) - expected).max()) <= 1
        return "complete"

    await engine.start()
    try:
        return list(await asyncio.gather(*(one(i) for i in range(CONCURRENT))))
    finally:
        await engine.close()


async def test_discovery_text_prompts_and_the_llamacpp_field_names(
    server: str, scripted: ScriptedModel, tiny_models: tuple[Path, Path]
) -> None:
    proxy = CapturingProxy(server)
    with run_server(proxy.app()) as url:
        # A local tokenizer is at hand, but this server takes only text prompts: detected at start.
        engine = engine_for(url, tiny_models[1], model=str(scripted.hf_dir))
        await engine.start()
        try:
            backend = engine.backend
            assert isinstance(backend, OpenAIBackend)
            assert (backend.flavour, backend.served_by, backend.default_capacity) == ("llamacpp", "me", 1)
            assert backend.encoder() is None
            pcm = await speak(engine, "Hello there.")
        finally:
            await engine.close()
    assert int(np.abs(pcm.astype(np.int32) - expected_pcm(scripted, tiny_models[1])).max()) <= 1
    probe, body = proxy.bodies[0], proxy.bodies[-1]
    assert probe["prompt"] == [128000], "the id-prompt probe"
    assert body["prompt"].startswith("<custom_token_3><|begin_of_text|>tara: Hello there.<|eot_id|>")
    assert (body["repeat_penalty"], body["top_k"], body["min_p"]) == (1.1, 0, 0.0)
    assert (body["temperature"], body["top_p"]) == (0.6, 0.9)
    assert body["stop"] == ["<custom_token_2>"]
    assert not {"repetition_penalty", "stop_token_ids", "skip_special_tokens", "add_special_tokens"} & set(body)


async def test_token_id_prompts_are_refused_by_this_server_with_a_clear_error(
    server: str, scripted: ScriptedModel, tiny_models: tuple[Path, Path]
) -> None:
    engine = engine_for(server, tiny_models[1], model=str(scripted.hf_dir), prompt_format="ids")
    await engine.start()
    try:
        with pytest.raises(BackendError, match=r"completions server answered (422|500)"):
            await speak(engine, "Hello.")
    finally:
        await engine.close()


async def test_one_request_at_a_time_every_concurrent_stream_is_complete(
    server: str, scripted: ScriptedModel, tiny_models: tuple[Path, Path]
) -> None:
    """The llamacpp flavour's default capacity (1) queues requests in the backend: none is interrupted."""
    outcomes = await concurrent_outcomes(engine_for(server, tiny_models[1]), expected_pcm(scripted, tiny_models[1]))
    assert outcomes == ["complete"] * CONCURRENT


async def test_more_requests_than_slots_give_complete_streams_or_retryable_errors_never_short_ones(
    server: str, scripted: ScriptedModel, tiny_models: tuple[Path, Path]
) -> None:
    """Capacity set above the server's one slot: the server interrupts streams; each one says so."""
    engine = engine_for(server, tiny_models[1], capacity=CONCURRENT)
    outcomes = await concurrent_outcomes(engine, expected_pcm(scripted, tiny_models[1]))
    assert set(outcomes) <= {"complete", "interrupted"}
    assert "complete" in outcomes, "the last request to arrive is never interrupted"
    print(f"outcomes with capacity {CONCURRENT} on a one-slot llama_cpp.server: {outcomes}")


async def test_worker_conformance_and_disconnect_over_llamacpp_server(
    server: str, scripted: ScriptedModel, tiny_models: tuple[Path, Path]
) -> None:
    engine = engine_for(server, tiny_models[1])
    with run_server(create_app(engine, WorkerConfig())) as url:
        result = await stream_tts(url, {"text": "Hello there."})
        async with httpx.AsyncClient(timeout=60) as client:
            async with client.stream("POST", f"{url}/v1/tts/stream", json={"text": "Again."}) as response:
                assert response.status_code == 200
                async for _ in response.aiter_raw():
                    break
            # The server's only slot is free again: the next stream is complete.
            after = await stream_tts(url, {"text": "And once more."})
    for done in (result, after):
        assert done.status == 200, done.error_json
        chunks = [f for f in done.frames if isinstance(f, ChunkFrame)]
        eos = done.frames[-1]
        assert isinstance(eos, EosFrame), eos
        assert not any(isinstance(f, ErrorFrame) for f in done.frames)
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        assert eos.samples_total == len(done.pcm) // 2 == len(scripted.frames) * SAMPLES_PER_FRAME
