"""Fixtures for the Orpheus engine tests: tiny random-weight models, built once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class ScriptedModel:
    hf_dir: Path
    gguf: Path | None
    frames: list[tuple[int, ...]]
    chain: list[int]
    """START_OF_SPEECH, the audio tokens, END_OF_SPEECH, ``<|eot_id|>``."""
