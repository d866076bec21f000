"""vLLM in process: one long-lived ``AsyncLLM`` (v1 engine) batching every request on the GPU.

Prompts go in as token ids rendered by the engine's own renderer
(``renderer.render_cmpl``, the current input path; vLLM releases without a
renderer take a ``TokensPrompt``), tokens come back as deltas
(``RequestOutputKind.DELTA``) without detokenization, each request has a unique
id, and a closed stream aborts its request so the KV cache is freed at once.
``max_model_len`` is always set (the model's 131 072 default would exhaust the
KV cache). The engine is built off the event loop (model load takes minutes),
and before the engine's SNAC decoder touches CUDA (which would force vLLM's
``spawn`` start method). vLLM is imported only when this backend starts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from orpheus_tts.engines.orpheus.backends.base import BackendError, Encoder, import_optional
from orpheus_tts.engines.orpheus.loading import DEFAULT_MODEL_ID, load_tokenizer, resolve_weights
from orpheus_tts.engines.orpheus.prompt import DEFAULT_MAX_MODEL_LEN, Prompt, SamplingParams

__all__ = ["DEFAULT_GPU_MEMORY_UTILIZATION", "DEFAULT_VLLM_CAPACITY", "VllmBackend"]

DEFAULT_GPU_MEMORY_UTILIZATION = 0.85
"""Share of GPU memory vLLM may take (weights + KV cache); the SNAC decoder needs some too."""
DEFAULT_VLLM_CAPACITY = 64
"""Concurrent requests (vLLM ``max_num_seqs``)."""


class VllmBackend:
    """Token generation with vLLM's async engine; see the module docstring."""

    name = "vllm"
    option_help = {
        "tokenizer": "tokenizer directory or id (default: the model's)",
        "max_model_len": "context length per sequence, in tokens",
        "gpu_memory_utilization": "share of GPU memory vLLM may take (weights + KV cache)",
        "dtype": "auto, bfloat16, float16",
        "tensor_parallel_size": "GPUs to shard the model over",
        "max_num_seqs": "sequences batched at once (the backend's capacity)",
        "enforce_eager": "disable CUDA graphs (faster start, slower decode)",
        "quantization": "vLLM quantization method (e.g. fp8), or none",
    }

    def __init__(
        self,
        model: str | None = None,
        *,
        tokenizer: str | None = None,
        allow_download: bool = False,
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        max_num_seqs: int = DEFAULT_VLLM_CAPACITY,
        enforce_eager: bool = False,
        quantization: str | None = None,
    ) -> None:
        self.model_name = model or DEFAULT_MODEL_ID
        self.tokenizer_name = tokenizer
        self.allow_download = allow_download
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.dtype = dtype
        self.tensor_parallel_size = tensor_parallel_size
        self.max_num_seqs = max_num_seqs
        self.enforce_eager = enforce_eager
        self.quantization = quantization
        self.default_capacity = max_num_seqs
        self._engine: Any = None
        self._vllm: Any = None
        self._encoder: Encoder | None = None
        self._active: set[str] = set()
        """Ids of the requests generating now."""

    async def start(self) -> None:
        if self._engine is not None:
            return
        vllm = import_optional("vllm", "vllm", "vllm")
        path, tok_path = await asyncio.to_thread(self._resolve)
        self._encoder = await asyncio.to_thread(load_tokenizer, tok_path)
        args = vllm.AsyncEngineArgs(
            model=str(path),
            tokenizer=str(tok_path),
            max_model_len=self.max_model_len,
            gpu_memory_utilization=self.gpu_memory_utilization,
            dtype=self.dtype,
            tensor_parallel_size=self.tensor_parallel_size,
            max_num_seqs=self.max_num_seqs,
            enforce_eager=self.enforce_eager,
            quantization=self.quantization,
            enable_prefix_caching=True,
        )
        engine_class = _async_engine_class(vllm)
        try:
            # Loading the model blocks for minutes: never on the event loop.
            self._engine = await asyncio.to_thread(engine_class.from_engine_args, args)
        except Exception as exc:
            raise BackendError(f"vLLM could not start the Orpheus model from {path}: {exc}") from exc
        self._vllm = vllm

    def _resolve(self) -> tuple[Path, Path]:
        path = resolve_weights(
            self.model_name,
            what="Orpheus model",
            flag="--model",
            allow_download=self.allow_download,
            required=("config.json",),
        )
        if self.tokenizer_name is None:
            return path, path
        return path, resolve_weights(
            self.tokenizer_name, what="tokenizer", flag="--tokenizer", allow_download=self.allow_download
        )

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        shutdown = getattr(engine, "shutdown", None) or getattr(engine, "shutdown_background_loop", None)
        if shutdown is not None:
            result = shutdown()
            if asyncio.iscoroutine(result):
                await result

    def encoder(self) -> Encoder | None:
        return self._encoder

    async def generate(self, prompt: Prompt, sampling: SamplingParams) -> AsyncGenerator[list[int], None]:
        engine, vllm = self._engine, self._vllm
        if engine is None:
            raise BackendError("the vllm backend is not started")
        if prompt.ids is None:
            raise BackendError("the vllm backend needs a token-id prompt")
        from vllm.sampling_params import RequestOutputKind

        params = vllm.SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,  # 0 disables top-k
            repetition_penalty=sampling.repetition_penalty,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            stop_token_ids=list(sampling.stop_token_ids),
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )
        request_id = f"orpheus-{uuid.uuid4().hex}"
        finished = False
        self._active.add(request_id)
        try:
            engine_input = await _render(engine, list(prompt.ids))
            async for output in engine.generate(engine_input, params, request_id):
                finished = output.finished
                delta = list(output.outputs[0].token_ids) if output.outputs else []
                if delta:
                    yield delta
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise BackendError(f"vLLM generation failed: {exc}") from exc
        finally:
            self._active.discard(request_id)
            if not finished:
                # Newer vLLM aborts a cancelled generate() itself; abort is a no-op then.
                await engine.abort(request_id)


def _async_engine_class(vllm: Any) -> Any:
    """vLLM's v1 ``AsyncLLM`` (``AsyncLLMEngine`` is its alias in current releases)."""
    try:
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError:
        return vllm.AsyncLLMEngine
    return AsyncLLM


async def _render(engine: Any, ids: list[int]) -> Any:
    """The engine input for a token-id prompt: rendered by the engine's renderer where it has one.

    Current vLLM deprecates raw prompts in ``generate`` (a warning, then
    removal) in favour of ``renderer.render_cmpl``; older releases only take
    the raw ``TokensPrompt``.
    """
    renderer = getattr(engine, "renderer", None)
    prompts = [{"prompt_token_ids": ids}]
    tok_params = getattr(renderer, "default_cmpl_tok_params", None)
    args = (prompts,) if tok_params is None else (prompts, tok_params)
    render_async = getattr(renderer, "render_cmpl_async", None)
    if render_async is not None:
        (rendered,) = await render_async(*args)
        return rendered
    render = getattr(renderer, "render_cmpl", None)
    if render is not None:
        (rendered,) = render(*args)
        return rendered
    from vllm.inputs import TokensPrompt

    return TokensPrompt(prompt_token_ids=ids)
