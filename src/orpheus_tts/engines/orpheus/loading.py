"""Finding and loading weights: a local path or the Hugging Face cache, nothing else by default.

A model named by repository id is looked up in the local Hugging Face cache
only; it is downloaded only when the caller passes ``allow_download=True``.
A missing model is a :class:`ModelNotFoundError` that says what to get and
where to put it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from orpheus_tts.engines.base import EngineError

__all__ = [
    "DEFAULT_MODEL_ID",
    "DEFAULT_SNAC_ID",
    "ModelNotFoundError",
    "load_codec",
    "load_tokenizer",
    "resolve_weights",
]

DEFAULT_MODEL_ID = "canopylabs/orpheus-3b-0.1-ft"
DEFAULT_SNAC_ID = "hubertsiuzdak/snac_24khz"
SNAC_WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")


class ModelNotFoundError(EngineError):
    """Weights the engine needs are neither at the given path nor in the local cache."""


def _looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def _cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return "the Hugging Face cache (HF_HOME)"


def resolve_weights(
    name_or_path: str,
    *,
    what: str,
    flag: str,
    allow_download: bool = False,
    required: Sequence[str] = (),
    allow_patterns: Sequence[str] | None = None,
) -> Path:
    """A local path for ``name_or_path`` (a file, a directory, or a cached repository id).

    ``what`` names the weights in errors ("Orpheus model"); ``flag`` is the
    option that sets them ("--model"). ``required`` lists files a directory
    must hold. Downloads happen only when ``allow_download`` is true.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        _check_required(path, required, what)
        return path
    if not _looks_like_repo_id(name_or_path):
        raise ModelNotFoundError(f"{what}: no file or directory at {name_or_path!r} (set {flag})")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with transformers
        raise ModelNotFoundError(
            f"{what}: {name_or_path!r} is not a local path and huggingface_hub is missing"
        ) from exc
    patterns = list(allow_patterns) if allow_patterns else None
    try:
        return _check_required(
            Path(snapshot_download(name_or_path, local_files_only=True, allow_patterns=patterns)), required, what
        )
    except (LocalEntryNotFoundError, FileNotFoundError, ModelNotFoundError) as exc:
        if not allow_download:
            raise ModelNotFoundError(
                f"{what} {name_or_path!r} is not on this machine: it is neither a local path nor in the "
                f"Hugging Face cache ({_cache_dir()}). Get it with `huggingface-cli download {name_or_path}` "
                f"(accept the model's license on huggingface.co first if it asks), or put the files in a "
                f"directory and pass {flag} /that/directory, or rerun with --allow-download."
            ) from exc
    try:
        return _check_required(Path(snapshot_download(name_or_path, allow_patterns=patterns)), required, what)
    except Exception as exc:
        raise ModelNotFoundError(f"{what} {name_or_path!r}: download failed: {exc}") from exc


def _check_required(path: Path, required: Sequence[str], what: str) -> Path:
    if path.is_dir() and required:
        missing = [name for name in required if not any((path / alt).exists() for alt in name.split("|"))]
        if missing:
            raise ModelNotFoundError(f"{what} at {path} is incomplete: missing {', '.join(missing)}")
    return path


def load_codec(path: Path, device: str) -> Any:
    """A :class:`~orpheus_tts.engines.orpheus.codec.SnacCodec` from a directory with
    ``config.json`` and ``pytorch_model.bin`` (or ``model.safetensors``), as published."""
    import torch
    from snac import SNAC

    from orpheus_tts.engines.orpheus.codec import SnacCodec

    config = json.loads((path / "config.json").read_text())
    model = SNAC(**config)
    weights = next((path / name for name in SNAC_WEIGHT_FILES if (path / name).exists()), None)
    if weights is None:
        raise ModelNotFoundError(f"SNAC decoder at {path} has no {' or '.join(SNAC_WEIGHT_FILES)}")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return SnacCodec(model, device)


def load_tokenizer(path: Path) -> Callable[[str], list[int]]:
    """An encoder (text → token ids, with BOS) from a local tokenizer directory.

    Text is encoded as text: a special token's string in it becomes the
    ordinary tokens of its characters, so user text cannot end the prompt.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"no usable tokenizer at {path}: {exc}") from exc

    def encode(text: str) -> list[int]:
        # Special-token strings in the text (``<|eot_id|>``) are read as plain text, never as control tokens.
        return list(tokenizer(text, add_special_tokens=True, split_special_tokens=True)["input_ids"])

    return encode
