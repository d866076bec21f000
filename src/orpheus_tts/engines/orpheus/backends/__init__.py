"""Token backends, chosen by name: where the Orpheus LLM runs."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from orpheus_tts.engines.base import EngineError
from orpheus_tts.engines.orpheus.backends.base import (
    BackendError,
    BackendUnavailableError,
    Encoder,
    GenerationInterruptedError,
    TokenBackend,
)

__all__ = [
    "BACKEND_NAMES",
    "BackendError",
    "BackendUnavailableError",
    "Encoder",
    "GenerationInterruptedError",
    "TokenBackend",
    "backend_options",
    "create_backend",
]

_BACKENDS = {
    "transformers": ("orpheus_tts.engines.orpheus.backends.transformers", "TransformersBackend"),
    "vllm": ("orpheus_tts.engines.orpheus.backends.vllm", "VllmBackend"),
    "openai": ("orpheus_tts.engines.orpheus.backends.openai", "OpenAIBackend"),
    "llamacpp": ("orpheus_tts.engines.orpheus.backends.llamacpp", "LlamaCppBackend"),
}
BACKEND_NAMES = tuple(_BACKENDS)


def _backend_class(name: str) -> Any:
    try:
        module, cls = _BACKENDS[name]
    except KeyError:
        raise EngineError(f"unknown Orpheus backend {name!r}; choose one of: {', '.join(BACKEND_NAMES)}") from None
    return getattr(importlib.import_module(module), cls)


def backend_options(name: str) -> list[str]:
    """The keyword options backend ``name`` accepts besides ``model``."""
    params = inspect.signature(_backend_class(name)).parameters
    return [p for p in params if p != "model" and params[p].kind is inspect.Parameter.KEYWORD_ONLY]


def create_backend(name: str, model: str | None, **options: Any) -> TokenBackend:
    """Build backend ``name``; an option it does not take is an :class:`EngineError` listing those it does."""
    cls = _backend_class(name)
    accepted = backend_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise EngineError(
            f"the {name} backend does not take option(s) {', '.join(unknown)}; it takes: {', '.join(accepted)}"
        )
    try:
        backend: TokenBackend = cls(model, **options)
    except (TypeError, ValueError) as exc:
        raise EngineError(f"{name} backend: {exc}") from exc
    return backend
