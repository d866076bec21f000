"""OpenAI's ``GET /v1/models`` and ``GET /v1/models/{model}``: the speech models this gateway answers to.

Clients written for OpenAI list models before they speak (the official
``openai`` client's ``models.list()``, framework plugins that check a model
name). The gateway serves any ``model`` on ``POST /v1/audio/speech`` with the
engine its workers run; this listing names the ones worth showing: ``orpheus``
and OpenAI's speech models as aliases (``tts-1``, ``tts-1-hd``,
``gpt-4o-mini-tts``). Each entry has OpenAI's shape, ``{"id", "object":
"model", "created", "owned_by"}``; an unknown id is OpenAI's 404 error body.
Like ``/v1/voices``, the listing needs no key.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from orpheus_tts.gateway.openai_speech import SpeechRequestError, openai_error_response
from orpheus_tts.protocol import ErrorCode

__all__ = ["MODELS_CREATED_AT", "OWNER", "SPEECH_MODELS", "add_model_routes", "model_entry", "models_listing"]

SPEECH_MODELS: tuple[str, ...] = ("orpheus", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
"""The model ids listed: ours first, then OpenAI's speech models, which are aliases of it here."""
OWNER = "orpheus-tts"
MODELS_CREATED_AT = 1_735_689_600
"""``created`` of every entry, in Unix seconds (2025-01-01): fixed, so the listing is stable."""


def model_entry(model_id: str) -> dict[str, Any]:
    """One model in OpenAI's shape."""
    return {"id": model_id, "object": "model", "created": MODELS_CREATED_AT, "owned_by": OWNER}


def models_listing() -> dict[str, Any]:
    """``GET /v1/models``'s body: ``{"object": "list", "data": [...]}``."""
    return {"object": "list", "data": [model_entry(m) for m in SPEECH_MODELS]}


async def list_models(request: Request) -> JSONResponse:
    """The speech models this gateway answers to (OpenAI's shape)."""
    return JSONResponse(models_listing())


async def retrieve_model(request: Request) -> JSONResponse:
    """One speech model, or OpenAI's 404 error body."""
    model_id = request.path_params["model"]
    if model_id not in SPEECH_MODELS:
        message = f"the model {model_id!r} does not exist; see GET /v1/models"
        error = SpeechRequestError(message, "model", ErrorCode.NOT_FOUND)
        return openai_error_response(error)
    return JSONResponse(model_entry(model_id))


def add_model_routes(app: Starlette) -> None:
    """Register ``GET /v1/models`` and ``GET /v1/models/{model}`` on ``app``."""
    app.add_route("/v1/models", list_models, methods=["GET"], name="models")
    app.add_route("/v1/models/{model:path}", retrieve_model, methods=["GET"], name="model")
