"""The vllm backend where vLLM cannot be installed: what does not need vLLM itself.

The engine path on a real vLLM runs in the contract tests (``make_engine``)
on a machine with vLLM and a GPU; here: the clear error without the package,
the input rendering through the engine's renderer (vLLM's current path) with
a stand-in renderer of that interface, and the start order that keeps CUDA
untouched until vLLM has started.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from orpheus_tts.engines.orpheus.backends import BackendUnavailableError
from orpheus_tts.engines.orpheus.backends.vllm import VllmBackend, _render
from orpheus_tts.engines.orpheus.engine import OrpheusConfig, OrpheusEngine
from orpheus_tts.engines.orpheus.prompt import Prompt, SamplingParams


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
async def test_without_vllm_start_says_what_to_install() -> None:
    with pytest.raises(BackendUnavailableError, match=r"pip install 'orpheus-tts\[vllm\]'"):
        await VllmBackend("some/model").start()


class Renderer:
    """The two members of vLLM's renderer the backend uses (``render_cmpl_async``, ``default_cmpl_tok_params``)."""

    default_cmpl_tok_params = "tok-params"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def render_cmpl_async(self, prompts: list[dict[str, Any]], tok_params: Any = None) -> list[dict[str, Any]]:
        self.calls.append((prompts, tok_params))
        return [{"type": "token", "prompt_token_ids": p["prompt_token_ids"]} for p in prompts]


async def test_token_prompts_are_rendered_by_the_engines_renderer() -> None:
    class Engine:
        renderer = Renderer()

    rendered = await _render(Engine(), [128259, 128000, 5])
    assert rendered == {"type": "token", "prompt_token_ids": [128259, 128000, 5]}
    assert Engine.renderer.calls == [([{"prompt_token_ids": [128259, 128000, 5]}], "tok-params")]


async def test_the_backend_starts_before_the_decoder_loads() -> None:
    """vLLM's engine processes must start before this process initialises CUDA (SNAC on the GPU)."""
    order: list[str] = []

    class Backend:
        name = "probe"
        default_capacity = 1

        async def start(self) -> None:
            order.append("backend")

        async def close(self) -> None:
            order.append("closed")

        def encoder(self) -> None:
            return None

        def generate(self, prompt: Prompt, sampling: SamplingParams) -> AsyncGenerator[list[int], None]:
            raise NotImplementedError

    engine = OrpheusEngine(Backend(), OrpheusConfig(snac="/nonexistent/snac"))  # type: ignore[arg-type]
    with pytest.raises(Exception, match="SNAC decoder"):
        await engine.start()
    assert order == ["backend", "closed"], "the backend started first, and is closed when the decoder fails"
