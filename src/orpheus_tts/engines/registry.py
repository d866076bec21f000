"""Engine registry: build an engine by name from configuration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orpheus_tts.engines.base import Engine, EngineError

__all__ = ["ENGINE_NAMES", "create_engine"]


def _embedded(**options: Any) -> Engine:
    from orpheus_tts.engines.embedded import create_embedded_engine

    return create_embedded_engine(**options)


def _test(**options: Any) -> Engine:
    from orpheus_tts.engines.testing import ToneEngine

    return ToneEngine(**options)


def _orpheus(**options: Any) -> Engine:
    from orpheus_tts.engines.orpheus import create_orpheus_engine

    return create_orpheus_engine(**options)  # type: ignore[no-any-return]


_FACTORIES: dict[str, Callable[..., Engine]] = {
    "embedded": _embedded,
    "orpheus": _orpheus,
    "test": _test,
}
ENGINE_NAMES = tuple(_FACTORIES)


def create_engine(name: str, **options: Any) -> Engine:
    """Build the engine called ``name``; options go to its factory (``None`` values are dropped)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise EngineError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}") from None
    return factory(**{k: v for k, v in options.items() if v is not None})
