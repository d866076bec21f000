"""Configuration and loading: the factory, backend selection, and clear errors for missing weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from orpheus_tts.engines.base import EngineError
from orpheus_tts.engines.orpheus import create_orpheus_engine
from orpheus_tts.engines.orpheus.backends import BackendUnavailableError
from orpheus_tts.engines.orpheus.loading import ModelNotFoundError, resolve_weights


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_missing_model_says_what_to_get_and_where(empty_hf_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_weights("canopylabs/orpheus-3b-0.1-ft", what="Orpheus model", flag="--model")
    message = str(info.value)
    assert "canopylabs/orpheus-3b-0.1-ft" in message
    assert "huggingface-cli download canopylabs/orpheus-3b-0.1-ft" in message
    assert "--model" in message
    assert "--allow-download" in message
    assert str(empty_hf_cache) in message


def test_local_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no file or directory"):
        resolve_weights(str(tmp_path / "nope"), what="SNAC decoder", flag="--snac")
    with pytest.raises(ModelNotFoundError, match=r"incomplete: missing config\.json"):
        resolve_weights(str(tmp_path), what="SNAC decoder", flag="--snac", required=("config.json",))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_text("")
    assert (
        resolve_weights(
            str(tmp_path), what="x", flag="--x", required=("config.json", "pytorch_model.bin|model.safetensors")
        )
        == tmp_path
    )


async def test_engine_start_fails_clearly_without_weights(empty_hf_cache: Path, tiny_models: tuple[Path, Path]) -> None:
    engine = create_orpheus_engine(backend="transformers", snac=str(tiny_models[1]), device="cpu")
    with pytest.raises(ModelNotFoundError, match=r"Orpheus model 'canopylabs/orpheus-3b-0\.1-ft'"):
        await engine.start()
    await engine.close()
    engine = create_orpheus_engine(backend="transformers", model=str(tiny_models[0]), device="cpu")
    with pytest.raises(ModelNotFoundError, match=r"SNAC decoder 'hubertsiuzdak/snac_24khz'.*--snac"):
        await engine.start()
    await engine.close()


def test_factory_rejects_unknown_backends_and_options() -> None:
    with pytest.raises(EngineError, match="choose one of: transformers, vllm, openai, llamacpp"):
        create_orpheus_engine(backend="tgi")
    with pytest.raises(EngineError, match=r"does not take option\(s\) temprature; accepted: .*crossfade_s"):
        create_orpheus_engine(backend="transformers", temprature=0.5)
    with pytest.raises(EngineError, match="needs --backend-url"):
        create_orpheus_engine(backend="openai")
    with pytest.raises(EngineError, match="needs --model"):
        create_orpheus_engine(backend="llamacpp")
    with pytest.raises(EngineError, match="unknown language"):
        create_orpheus_engine(backend="transformers", device="cpu", language="xx")


def test_factory_routes_options() -> None:
    engine = create_orpheus_engine(
        backend="openai",
        model="canopylabs/3b-de-ft-research_release",
        base_url="http://127.0.0.1:1/v1",
        capacity=7,
        crossfade_s=0.0,
        device="cpu",
    )
    assert engine.capacity == 7
    assert engine.catalog.default == "jana", "the voice set follows the model's language"
    assert engine.config.decoder_device == "cpu"
    assert engine.config.crossfade_s == 0.0
    assert engine.backend.name == "openai"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
async def test_vllm_backend_without_vllm_is_a_clear_error(tiny_models: tuple[Path, Path]) -> None:
    engine = create_orpheus_engine(
        backend="vllm",
        model=str(tiny_models[0]),
        snac=str(tiny_models[1]),
        decoder_device="cpu",
        max_model_len=4096,
        gpu_memory_utilization=0.5,
    )
    assert engine.capacity == 64
    with pytest.raises(BackendUnavailableError, match=r"pip install 'orpheus-tts\[vllm\]'"):
        await engine.start()
    await engine.close()


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is not None, reason="llama-cpp-python is installed")
async def test_llamacpp_backend_without_package_is_a_clear_error(tiny_models: tuple[Path, Path]) -> None:
    engine = create_orpheus_engine(
        backend="llamacpp", model=str(tiny_models[0]), snac=str(tiny_models[1]), decoder_device="cpu"
    )
    with pytest.raises(BackendUnavailableError, match=r"llama-cpp-python.*orpheus-tts\[llamacpp\]"):
        await engine.start()
    await engine.close()
