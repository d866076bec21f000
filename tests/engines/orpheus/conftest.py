"""Fixtures for the Orpheus engine tests: tiny random-weight models, built once per session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.engines.orpheus.make_tiny_models import SNAC_24KHZ, TINY_SNAC_WIDTHS, build_all


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(LM directory with tokenizer, SNAC directory), random weights, real vocabulary and layout."""
    return build_all(tmp_path_factory.mktemp("orpheus-tiny"))


def tiny_snac(noise: bool = True, seed: int = 0, full: bool = False):  # type: ignore[no-untyped-def]
    """An in-memory SNAC of the 24 kHz layout with random weights."""
    import torch
    from snac import SNAC

    torch.manual_seed(seed)
    config = dict(SNAC_24KHZ) if full else {**SNAC_24KHZ, **TINY_SNAC_WIDTHS}
    config["noise"] = noise
    return SNAC(**config).eval()


@pytest.fixture(scope="session")
def tiny_gguf(tiny_models: tuple[Path, Path]) -> Path:
    """The random tiny LM converted to GGUF with the ``gguf`` package's writer."""
    pytest.importorskip("gguf", reason="the gguf package is not installed (pip install 'orpheus-tts[llamacpp]')")
    from tests.engines.orpheus.make_tiny_models import write_gguf

    return write_gguf(tiny_models[0], tiny_models[0].parent / "tiny-f32.gguf")


SCRIPTED_FRAMES = 8


@pytest.fixture(scope="session")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> ScriptedModel:
    """The scripted LM (transformers directory and, where ``gguf`` is installed, GGUF) and its known frames."""
    from tests.engines.orpheus.make_tiny_models import build_scripted_llama, scripted_frames, write_gguf

    out = tmp_path_factory.mktemp("orpheus-scripted")
    frames = scripted_frames(SCRIPTED_FRAMES)
    chain = build_scripted_llama(out / "llm", frames)
    gguf_path = None
    try:
        import gguf  # noqa: F401
    except ImportError:
        pass
    else:
        gguf_path = write_gguf(out / "llm", out / "scripted-f32.gguf")
    return ScriptedModel(out / "llm", gguf_path, frames, chain)


@pytest.fixture(scope="session")
def looping(tmp_path_factory: pytest.TempPathFactory) -> ScriptedModel:
    """A scripted LM that repeats its frames until ``max_tokens``: valid audio for as long as a test wants."""
    from tests.engines.orpheus.make_tiny_models import build_scripted_llama, scripted_frames, write_gguf

    out = tmp_path_factory.mktemp("orpheus-looping")
    frames = scripted_frames(SCRIPTED_FRAMES, seed=1)
    chain = build_scripted_llama(out / "llm", frames, loop=True)
    gguf_path = None
    try:
        import gguf  # noqa: F401
    except ImportError:
        pass
    else:
        gguf_path = write_gguf(out / "llm", out / "looping-f32.gguf")
    return ScriptedModel(out / "llm", gguf_path, frames, chain)


@dataclass(frozen=True)
class ScriptedModel:
    hf_dir: Path
    gguf: Path | None
    frames: list[tuple[int, ...]]
    chain: list[int]
    """START_OF_SPEECH, the audio tokens, END_OF_SPEECH, ``<|eot_id|>``."""


CONTRACT_BACKENDS = ("transformers", "llamacpp", "vllm")
"""Backends the engine contract tests run on, each where it is installed."""


@pytest.fixture(params=CONTRACT_BACKENDS)
def make_engine(
    request: pytest.FixtureRequest, tiny_models: tuple[Path, Path], looping: ScriptedModel
) -> Callable[..., Any]:
    """Builds an engine on one installed backend whose model speaks valid frames for as long as asked."""
    from orpheus_tts.engines.orpheus import create_orpheus_engine

    name = request.param
    llm, snac = tiny_models
    if name == "transformers":
        return lambda **o: create_orpheus_engine(
            "transformers", str(llm), snac=str(snac), device="cpu", constrain_audio_tokens=True, **o
        )
    if name == "llamacpp":
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
        assert looping.gguf is not None
        return lambda **o: create_orpheus_engine(
            "llamacpp", str(looping.gguf), snac=str(snac), device="cpu", n_threads=1, **o
        )
    pytest.importorskip("vllm", reason="vLLM is not installed (it needs a CUDA GPU: pip install 'orpheus-tts[vllm]')")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    return lambda **o: create_orpheus_engine(
        "vllm", str(looping.hf_dir), snac=str(snac), gpu_memory_utilization=0.3, enforce_eager=True, **o
    )
