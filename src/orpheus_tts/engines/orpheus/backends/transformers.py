"""Plain PyTorch generation with Hugging Face transformers: CPU or one GPU.

By default each request runs its own incremental decoding loop (KV cache, one
token per step) on a thread and checks a cancel flag between tokens, so a
closed stream stops within one model step. With ``max_batch`` > 1 every
active stream is stepped in one forward call instead
(:class:`~.batched.BatchedStepper`), which is what makes a GPU worth having.
Sampling follows the usual order: repetition penalty, then temperature, top-k
and top-p. Good for development, tests and small deployments; the vllm
backend batches with paged attention and CUDA graphs.

``constrain_audio_tokens`` masks the logits so that only the audio tokens of
the expected slot (and the stop token at a frame boundary) can be sampled: a
grammar for the 7-slot frame layout. It guarantees well-formed frames even
from an untrained model, which the tests rely on.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from orpheus_tts.engines.orpheus.backends.base import BackendError, Encoder
from orpheus_tts.engines.orpheus.backends.batched import BatchedStepper
from orpheus_tts.engines.orpheus.backends.threaded import ThreadedGenerations
from orpheus_tts.engines.orpheus.loading import DEFAULT_MODEL_ID, load_tokenizer, resolve_weights
from orpheus_tts.engines.orpheus.prompt import (
    AUDIO_TOKEN_BASE,
    AUDIO_TOKEN_END,
    CODES_PER_SLOT,
    END_OF_SPEECH,
    SLOTS_PER_FRAME,
    Prompt,
    SamplingParams,
)

__all__ = ["MAX_GENERATION_THREADS", "TransformersBackend"]

MAX_GENERATION_THREADS = 64
"""Upper bound on concurrent generation threads (the engine's capacity bounds it further)."""
_DTYPES = ("float32", "bfloat16", "float16")


class TransformersBackend:
    """Token generation with ``transformers``; see the module docstring."""

    name = "transformers"
    option_help = {
        "tokenizer": "tokenizer directory or id (default: the model's)",
        "device": "cpu, cuda, cuda:N (default: cuda when available); also places SNAC",
        "dtype": "float32, bfloat16 or float16 (default: float32 on CPU, bfloat16 on GPU)",
        "constrain_audio_tokens": "allow only the expected slot's audio tokens (for untrained weights)",
        "max_batch": "streams stepped together in one forward call (1: one loop per request)",
    }

    def __init__(
        self,
        model: str | None = None,
        *,
        tokenizer: str | None = None,
        allow_download: bool = False,
        device: str | None = None,
        dtype: str | None = None,
        constrain_audio_tokens: bool = False,
        max_batch: int = 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.model_name = model or DEFAULT_MODEL_ID
        self.tokenizer_name = tokenizer
        self.allow_download = allow_download
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.dtype = dtype
        self.constrain_audio_tokens = constrain_audio_tokens
        self.generations = ThreadedGenerations()
        self.max_batch = max_batch
        self.default_capacity = max_batch if max_batch > 1 else (4 if device.startswith("cuda") else 1)
        self.stepper: BatchedStepper | None = None
        self._model: Any = None
        self._encoder: Encoder | None = None
        self._masks: Any = None
        self._cache_arg = "past_key_values"
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        if self._model is not None:
            return
        self._model, self._encoder, self._masks = await asyncio.to_thread(self._load)
        self._executor = ThreadPoolExecutor(
            max(MAX_GENERATION_THREADS, self.max_batch), thread_name_prefix="orpheus-gen"
        )
        if self.max_batch > 1:
            constrain = self._constrain_rows if self._masks is not None else None
            self.stepper = BatchedStepper(self._model, self.device, self._cache_arg, self.max_batch, constrain)

    def _load(self) -> tuple[Any, Encoder, Any]:
        import torch
        from transformers import AutoModelForCausalLM

        path = resolve_weights(
            self.model_name,
            what="Orpheus model",
            flag="--model",
            allow_download=self.allow_download,
            required=("config.json",),
        )
        tok_path = (
            path
            if self.tokenizer_name is None
            else resolve_weights(
                self.tokenizer_name, what="tokenizer", flag="--tokenizer", allow_download=self.allow_download
            )
        )
        encoder = load_tokenizer(Path(tok_path))
        dtype_name = self.dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        loader: Any = AutoModelForCausalLM
        try:
            model = loader.from_pretrained(str(path), dtype=getattr(torch, dtype_name), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the Orpheus model from {path}: {exc}") from exc
        model = model.to(self.device).eval()
        # transformers 5.x renamed ``past_key_values`` to ``cache`` (input and output).
        if "cache" in inspect.signature(model.forward).parameters:
            self._cache_arg = "cache"
        vocab = int(model.get_output_embeddings().weight.shape[0])
        if vocab < AUDIO_TOKEN_END:
            raise BackendError(f"model at {path} has {vocab} output tokens; an Orpheus model has {AUDIO_TOKEN_END}+")
        masks = None
        if self.constrain_audio_tokens:
            masks = torch.zeros((SLOTS_PER_FRAME, vocab), dtype=torch.bool)
            for slot in range(SLOTS_PER_FRAME):
                first = AUDIO_TOKEN_BASE + slot * CODES_PER_SLOT
                masks[slot, first : first + CODES_PER_SLOT] = True
            masks = masks.to(self.device)
        return model, encoder, masks

    async def close(self) -> None:
        stepper, self.stepper = self.stepper, None
        if stepper is not None:
            await asyncio.to_thread(stepper.close)
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        self._model = None

    def encoder(self) -> Encoder | None:
        return self._encoder

    def generate(self, prompt: Prompt, sampling: SamplingParams) -> AsyncGenerator[list[int], None]:
        if self._model is None or self._executor is None:
            raise BackendError("the transformers backend is not started")
        if prompt.ids is None:
            raise BackendError("the transformers backend needs a token-id prompt")
        ids = list(prompt.ids)
        stepper = self.stepper
        if stepper is not None:
            return self.generations.stream(
                self._executor, lambda emit, cancelled: stepper.run(ids, sampling, emit, cancelled)
            )
        return self.generations.stream(
            self._executor, lambda emit, cancelled: self._run(ids, sampling, emit, cancelled)
        )

    def _run(
        self, prompt_ids: list[int], sampling: SamplingParams, emit: Callable[[int], None], cancelled: threading.Event
    ) -> None:
        import torch

        model, device = self._model, self.device
        stops = set(sampling.stop_token_ids)
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(device=device).manual_seed(sampling.seed)
        warpers = _warpers(sampling)
        penalty = _repetition_penalty(sampling)
        n_prompt = len(prompt_ids)
        history = torch.zeros((1, n_prompt + sampling.max_tokens), dtype=torch.long, device=device)
        history[0, :n_prompt] = torch.tensor(prompt_ids, device=device)
        cache_arg = self._cache_arg
        with torch.inference_mode():
            out = model(input_ids=history[:, :n_prompt], use_cache=True)
            for step in range(sampling.max_tokens):
                if cancelled.is_set():
                    return
                scores = out.logits[:, -1, :].float()
                seen = history[:, : n_prompt + step]
                if penalty is not None:
                    scores = penalty(seen, scores)
                if self._masks is not None:
                    scores = self._constrain(scores, step)
                if sampling.temperature == 0:
                    token = scores.argmax(dim=-1, keepdim=True)
                else:
                    for warp in warpers:
                        scores = warp(seen, scores)
                    probs = torch.softmax(scores, dim=-1)
                    token = torch.multinomial(probs, 1, generator=generator)
                token_id = int(token.item())
                emit(token_id)
                if token_id in stops:
                    return
                history[0, n_prompt + step] = token_id
                out = model(input_ids=token, use_cache=True, **{cache_arg: getattr(out, cache_arg)})

    def _constrain_rows(self, scores: Any, steps: list[int]) -> Any:
        """:meth:`_constrain` for a batch: row ``i`` is at step ``steps[i]``."""
        import torch

        slots = torch.tensor([step % SLOTS_PER_FRAME for step in steps], device=scores.device)
        allowed = self._masks[slots].clone()
        allowed[:, END_OF_SPEECH] = torch.tensor(
            [s % SLOTS_PER_FRAME == 0 and s > 0 for s in steps], device=scores.device
        )
        return scores.masked_fill(~allowed, float("-inf"))

    def _constrain(self, scores: Any, step: int) -> Any:
        slot = step % SLOTS_PER_FRAME
        allowed = self._masks[slot]
        if slot == 0 and step > 0:
            allowed = allowed.clone()
            allowed[END_OF_SPEECH] = True
        return scores.masked_fill(~allowed, float("-inf"))


def _repetition_penalty(sampling: SamplingParams) -> Any:
    if sampling.repetition_penalty == 1.0:
        return None
    from transformers import RepetitionPenaltyLogitsProcessor

    return RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty)


def _warpers(sampling: SamplingParams) -> list[Any]:
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers: list[Any] = []
    if sampling.temperature > 0 and sampling.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k > 0:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    return warpers
