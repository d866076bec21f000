"""The Orpheus engine: Orpheus 3B (Llama) writes SNAC audio tokens; a streaming SNAC decoder makes PCM.

Build one with :func:`create_orpheus_engine`. Modules:

- :mod:`.prompt`   prompt ids, voices, emotive tags, sampling defaults, ``max_tokens`` sizing
- :mod:`.tokens`   token ids → SNAC frames (slot check, resynchronisation, counters)
- :mod:`.codec`    the SNAC decoder with position-keyed noise (window-independent output)
- :mod:`.decoder`  streaming windows (head emitted, tail flushed) and cross-stream batching
- :mod:`.seams`    crossfades between text segments
- :mod:`.engine`   :class:`OrpheusEngine`, the Engine protocol
- :mod:`.loading`  weights from a local path or the Hugging Face cache
- :mod:`.backends` where the LLM runs: transformers, vllm, openai (remote), llamacpp

Importing this package loads no model and imports neither torch nor any backend.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from orpheus_tts.engines.base import EngineError

if TYPE_CHECKING:
    from orpheus_tts.engines.orpheus.engine import OrpheusEngine

__all__ = ["BACKEND_NAMES", "create_orpheus_engine"]

BACKEND_NAMES = ("transformers", "vllm", "openai", "llamacpp")


def create_orpheus_engine(
    backend: str = "transformers",
    model: str | None = None,
    snac: str | None = None,
    allow_download: bool = False,
    **options: Any,
) -> OrpheusEngine:
    """Build an Orpheus engine; nothing is loaded until ``await engine.start()``.

    ``backend`` is one of :data:`BACKEND_NAMES`; ``model`` is a model directory,
    GGUF file or Hugging Face id (the served model name for ``openai``);
    ``snac`` is the SNAC 24 kHz decoder (directory or id). Weights come from a
    local path or the local Hugging Face cache, and are downloaded only with
    ``allow_download=True``.

    ``options`` holds engine settings (the fields of
    :class:`~orpheus_tts.engines.orpheus.engine.OrpheusConfig`: ``capacity``,
    ``language``, ``decoder_device``, ``max_model_len``, ``crossfade_s``, …) and
    backend settings (``base_url``, ``api_key``, ``tokenizer``, ``device``,
    ``dtype``, ``gpu_memory_utilization``, ``gguf_file``, …). An option neither
    takes is an :class:`~orpheus_tts.engines.base.EngineError` that lists the
    accepted ones. ``device`` also places the SNAC decoder unless
    ``decoder_device`` is given; ``max_model_len`` goes to both.
    """
    from orpheus_tts.engines.orpheus.backends import backend_options, create_backend
    from orpheus_tts.engines.orpheus.engine import OrpheusConfig, OrpheusEngine
    from orpheus_tts.engines.orpheus.prompt import language_of_model

    if backend not in BACKEND_NAMES:
        raise EngineError(f"unknown Orpheus backend {backend!r}; choose one of: {', '.join(BACKEND_NAMES)}")
    engine_keys = {f.name for f in dataclasses.fields(OrpheusConfig)}
    backend_keys = set(backend_options(backend))
    unknown = sorted(set(options) - engine_keys - backend_keys - {"device"})
    if unknown:
        accepted = sorted(engine_keys | backend_keys | {"device", "model", "snac", "allow_download"})
        raise EngineError(
            f"the orpheus engine ({backend} backend) does not take option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted)}"
        )
    engine_options = {k: v for k, v in options.items() if k in engine_keys}
    backend_kwargs = {k: v for k, v in options.items() if k in backend_keys}
    if "allow_download" in backend_keys:
        backend_kwargs["allow_download"] = allow_download
    if "device" in options and "device" in backend_keys:
        backend_kwargs["device"] = options["device"]
    if "device" in options:
        engine_options.setdefault("decoder_device", options["device"])
    if "max_model_len" in options and "max_model_len" in backend_keys:
        backend_kwargs["max_model_len"] = options["max_model_len"]
    engine_options.setdefault("language", language_of_model(model))
    if snac:
        engine_options["snac"] = snac
    try:
        config = OrpheusConfig(allow_download=allow_download, **engine_options)
    except (TypeError, ValueError) as exc:
        raise EngineError(f"orpheus engine: {exc}") from exc
    return OrpheusEngine(create_backend(backend, model, **backend_kwargs), config)
