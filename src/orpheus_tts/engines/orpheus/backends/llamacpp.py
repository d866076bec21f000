"""llama.cpp in process (``llama-cpp-python``) with a GGUF quantization of Orpheus.

One ``Llama`` context generates one request at a time, so requests take turns
(capacity 1); the loop runs on a thread, evaluates one token at a time and
checks a cancel flag between tokens, so a closed stream frees the context
within one step. Sampling is :class:`~.sampling.TokenSampler` on the logits
llama.cpp computes: the same order and semantics as the transformers backend
(the repetition penalty covers prompt and generated tokens, as in
transformers and vLLM, not llama.cpp's last 64), and each request draws from
its own generator, so a seed never leaks into later requests. Generation ends
at a stop token, at any of the GGUF's end-of-generation tokens (such as
``<|eot_id|>``), or at ``max_tokens``. The GGUF's own tokenizer builds the
prompt ids, with special tokens in user text read as plain text. The package
is imported only when this backend starts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from orpheus_tts.engines.orpheus.backends.base import BackendError, Encoder, import_optional
from orpheus_tts.engines.orpheus.backends.sampling import TokenSampler
from orpheus_tts.engines.orpheus.backends.threaded import ThreadedGenerations
from orpheus_tts.engines.orpheus.loading import ModelNotFoundError, resolve_weights
from orpheus_tts.engines.orpheus.prompt import DEFAULT_MAX_MODEL_LEN, Prompt, SamplingParams

__all__ = ["LlamaCppBackend", "find_gguf"]


def find_gguf(path: Path, pattern: str | None = None) -> Path:
    """The GGUF file at ``path``: the file itself, or the one file in the directory matching ``pattern``."""
    if path.is_file():
        return path
    candidates = sorted(path.rglob(pattern or "*.gguf"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelNotFoundError(f"no GGUF file in {path}; pass --model /path/to/orpheus.gguf")
    names = ", ".join(c.name for c in candidates)
    raise ModelNotFoundError(f"several GGUF files in {path} ({names}); choose one with gguf_file=PATTERN")


class LlamaCppBackend:
    """Token generation with llama.cpp; see the module docstring."""

    name = "llamacpp"
    default_capacity = 1
    option_help = {
        "gguf_file": "file name pattern, when the --model directory holds several GGUF files",
        "max_model_len": "context length, in tokens (prompt + audio tokens)",
        "n_gpu_layers": "layers offloaded to the GPU (-1: all; needs a CUDA build of llama-cpp-python)",
        "n_threads": "CPU threads (default: llama.cpp's choice)",
    }

    def __init__(
        self,
        model: str | None = None,
        *,
        allow_download: bool = False,
        gguf_file: str | None = None,
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        n_gpu_layers: int = -1,
        n_threads: int | None = None,
    ) -> None:
        if model is None:
            raise ValueError(
                "the llamacpp backend needs --model: a GGUF file, or a directory or repository holding one"
            )
        self.model_name = model
        self.allow_download = allow_download
        self.gguf_file = gguf_file
        self.max_model_len = max_model_len
        self.n_gpu_layers = n_gpu_layers
        self.n_threads = n_threads
        self.generations = ThreadedGenerations()
        self._llm: Any = None
        self._llama_cpp: Any = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        if self._llm is not None:
            return
        llama_cpp = import_optional("llama_cpp", "llama-cpp-python", "llamacpp")
        self._llm = await asyncio.to_thread(self._load, llama_cpp)
        self._llama_cpp = llama_cpp
        self._executor = ThreadPoolExecutor(4, thread_name_prefix="llamacpp")

    def _load(self, llama_cpp: Any) -> Any:
        patterns = [self.gguf_file] if self.gguf_file else None
        path = resolve_weights(
            self.model_name,
            what="Orpheus GGUF",
            flag="--model",
            allow_download=self.allow_download,
            allow_patterns=patterns,
        )
        gguf = find_gguf(path, self.gguf_file)
        try:
            return llama_cpp.Llama(
                model_path=str(gguf),
                n_ctx=self.max_model_len,
                n_gpu_layers=self.n_gpu_layers,
                n_threads=self.n_threads,
                verbose=False,
            )
        except Exception as exc:
            raise BackendError(f"llama.cpp could not load {gguf}: {exc}") from exc

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        llm, self._llm = self._llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()

    def encoder(self) -> Encoder | None:
        llm = self._llm
        if llm is None:
            return None

        def encode(text: str) -> list[int]:
            return list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

        return encode

    def generate(self, prompt: Prompt, sampling: SamplingParams) -> AsyncGenerator[list[int], None]:
        if self._llm is None or self._executor is None:
            raise BackendError("the llamacpp backend is not started")
        if prompt.ids is None:
            raise BackendError("the llamacpp backend needs a token-id prompt")
        ids = list(prompt.ids)
        return self.generations.stream(
            self._executor, lambda emit, cancelled: self._run(ids, sampling, emit, cancelled)
        )

    def _run(
        self, prompt_ids: list[int], sampling: SamplingParams, emit: Callable[[int], None], cancelled: threading.Event
    ) -> None:
        llama_cpp = self._llama_cpp
        stops = set(sampling.stop_token_ids)
        with self._lock:  # one context: requests take turns
            llm = self._llm
            if llm is None or cancelled.is_set():
                return
            vocab = llama_cpp.llama_model_get_vocab(llm.model)
            n_vocab = llm.n_vocab()
            sample = TokenSampler(sampling, prompt_ids, n_vocab)
            llm.reset()
            llm.eval(prompt_ids)
            for count in range(1, sampling.max_tokens + 1):
                if cancelled.is_set():
                    return
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
                token = sample(logits)
                emit(token)
                if token in stops or llama_cpp.llama_vocab_is_eog(vocab, token) or count == sampling.max_tokens:
                    return
                llm.eval([token])
