"""The llamacpp backend in process (llama-cpp-python) on GGUF files written by the ``gguf`` package.

Two models: the random tiny Llama (checks the conversion, seeds, cancellation)
and the scripted one, whose greedy or top-p decoding emits known frames and
then the stop token (checks stop and end-of-generation tokens exactly).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from orpheus_tts.engines.orpheus.backends.llamacpp import LlamaCppBackend
from orpheus_tts.engines.orpheus.prompt import END_OF_SPEECH, END_OF_TEXT, SamplingParams, build_prompt
from tests.engines.orpheus.conftest import ScriptedModel
from tests.eventually import eventually

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'orpheus-tts[llamacpp]')")


async def started(path: Path) -> LlamaCppBackend:
    backend = LlamaCppBackend(str(path), max_model_len=4096, n_threads=1)
    await backend.start()
    return backend


@pytest.fixture
async def tiny(tiny_gguf: Path) -> AsyncIterator[LlamaCppBackend]:
    backend = await started(tiny_gguf)
    try:
        yield backend
    finally:
        await backend.close()


async def tokens(backend: LlamaCppBackend, sampling: SamplingParams, text: str = "Hi.") -> list[int]:
    prompt = build_prompt("tara", text, backend.encoder())
    return [t async for batch in backend.generate(prompt, sampling) for t in batch]


def test_the_gguf_computes_what_the_transformers_model_computes(
    tiny_models: tuple[Path, Path], tiny_gguf: Path
) -> None:
    """Same tokenization and same logits: the converter's tensor names, Q/K permutation and rope factors hold."""
    import llama_cpp
    import torch
    from transformers import AutoModelForCausalLM

    from orpheus_tts.engines.orpheus.loading import load_tokenizer

    llm = llama_cpp.Llama(str(tiny_gguf), n_ctx=256, n_threads=1, verbose=False)
    text = "tara: It's 12 o'clock, café? <|eot_id|> done"
    ids = load_tokenizer(tiny_models[0])(text)
    assert llm.tokenize(text.encode(), add_bos=True, special=False) == ids
    assert 128009 not in ids, "special-token text in user text stays text"
    assert llm.detokenize([128261]) == b"<custom_token_5>", "custom tokens are ordinary (user-defined) tokens"
    assert llm.detokenize([128009]) == b"", "Llama 3's tokens are control tokens"
    prompt = [128259, *ids, 128009, 128260, 128261, 128257]
    llm.eval(prompt)
    ours = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_models[0]), dtype=torch.float32)
    with torch.no_grad():
        reference = model(torch.tensor([prompt])).logits[0, -1].numpy()
    assert np.abs(ours - reference).max() < 1e-3 * np.abs(reference).max()
    llm.close()


async def test_seeded_requests_repeat_and_unseeded_ones_do_not_reuse_the_seed(tiny: LlamaCppBackend) -> None:
    seeded = SamplingParams(max_tokens=24, seed=5, stop_token_ids=())
    unseeded = SamplingParams(max_tokens=24, stop_token_ids=())
    first = await tokens(tiny, seeded)
    assert await tokens(tiny, seeded) == first
    after = [await tokens(tiny, unseeded) for _ in range(2)]
    assert first not in after, "an earlier seed does not stick to later requests"
    assert after[0] != after[1]
    assert await tokens(tiny, SamplingParams(max_tokens=24, seed=6, stop_token_ids=())) != first


async def test_closing_the_stream_frees_the_model_at_once(tiny: LlamaCppBackend) -> None:
    prompt = build_prompt("tara", "A long story.", tiny.encoder())
    long = tiny.generate(prompt, SamplingParams(max_tokens=3000, stop_token_ids=()))
    assert await asyncio.wait_for(long.__anext__(), 30)
    assert tiny.generations.active == 1
    await long.aclose()  # type: ignore[attr-defined]
    assert await eventually(lambda: tiny.generations.active == 0, within_s=5)
    # The context is free: the next request runs now, not after 3000 tokens.
    assert len(await asyncio.wait_for(tokens(tiny, SamplingParams(max_tokens=7, stop_token_ids=())), 10)) == 7


async def test_stop_and_end_of_generation_tokens_end_the_generation(scripted: ScriptedModel) -> None:
    assert scripted.gguf is not None
    backend = await started(scripted.gguf)
    try:
        stopped = await tokens(backend, SamplingParams(max_tokens=500))
        assert stopped == scripted.chain[1:-1], "the known frames, then the stop token"
        assert stopped[-1] == END_OF_SPEECH
        # Without a stop token the GGUF's end-of-generation token (<|eot_id|>) ends it, not max_tokens.
        eog = await tokens(backend, SamplingParams(max_tokens=500, stop_token_ids=()))
        assert eog == scripted.chain[1:]
        assert eog[-1] == END_OF_TEXT
        capped = await tokens(backend, SamplingParams(max_tokens=10))
        assert capped == scripted.chain[1:11]
    finally:
        await backend.close()
