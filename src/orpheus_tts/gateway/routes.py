"""The gateway's own routes, thin: each maps a request onto :class:`GatewayState` and back.

v1 ``POST /v1/tts/stream`` (frames relayed as they arrive), OpenAI's
``POST /v1/audio/speech``, ``GET /v1/voices`` and ``GET /v1/system``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from orpheus_tts.gateway.openai_speech import (
    SpeechRequest,
    openai_error_body,
    openai_error_response,
    parse_speech_request,
    pcm_from_frames,
    speech_stream,
    to_tts_request,
)
from orpheus_tts.gateway.relay import ndjson_lines, same_frames
from orpheus_tts.gateway.state import GatewayState
from orpheus_tts.gateway.system import system_report, voices_listing
from orpheus_tts.protocol import (
    AUDIO_FORMAT,
    HEADER_AUDIO_FORMAT,
    HEADER_REQUEST_ID,
    NDJSON_MEDIA_TYPE,
    ErrorCode,
    ServiceError,
    parse_request,
)
from orpheus_tts.serving.prestream import read_parsed, refuse
from orpheus_tts.serving.routes import TTS_STREAM_PATH, TTS_STREAM_ROUTE, inline_refs, json_body_route, request_id_of
from orpheus_tts.serving.streaming import PreparedStream, PreparedStreamResponse

__all__ = ["OPENAI_SPEECH_PATH", "SPEECH_SCHEMA", "TTS_STREAM_PATH", "add_gateway_routes", "tts_stream"]

OPENAI_SPEECH_PATH = "/v1/audio/speech"

SPEECH_SCHEMA: dict[str, Any] = inline_refs(SpeechRequest.model_json_schema())
"""The OpenAI speech request's JSON schema, for the API docs."""


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


async def tts_stream(request: Request) -> Response:
    """Synthesize speech through the workers; NDJSON frames (protocol v1)."""
    state = _state(request)
    request_id = request_id_of(request)
    id_header = {HEADER_REQUEST_ID: request_id}
    max_chars, max_depth = state.config.max_text_chars, state.config.max_json_depth
    try:
        identity = state.admit(request.headers)
        tts_request = await read_parsed(
            request,
            state.config.max_body_bytes,
            lambda body: parse_request(body, max_text_chars=max_chars, max_json_depth=max_depth),
        )
    except ServiceError as exc:
        extra = {"WWW-Authenticate": "Bearer"} if exc.code is ErrorCode.UNAUTHORIZED else {}
        return refuse(state.metrics, exc, {**id_header, **extra})

    async def prepare() -> PreparedStream:
        upstream, lease = await state.open(identity, tts_request, request_id)
        return PreparedStream(
            body=state.relay(upstream, lease, ndjson_lines),
            media_type=NDJSON_MEDIA_TYPE,
            headers={HEADER_AUDIO_FORMAT: AUDIO_FORMAT, **upstream.hints},
        )

    return PreparedStreamResponse(prepare, headers=id_header)


async def audio_speech(request: Request) -> Response:
    """OpenAI-compatible speech: encoded audio (or SSE events) streamed as it is synthesized."""
    state = _state(request)
    request_id = request_id_of(request)
    max_chars, max_depth = state.config.max_text_chars, state.config.max_json_depth
    try:
        identity = state.admit(request.headers)
        speech = await read_parsed(
            request,
            state.config.max_body_bytes,
            lambda body: parse_speech_request(body, max_text_chars=max_chars, max_json_depth=max_depth),
        )
        tts_request = to_tts_request(speech)
    except ServiceError as exc:
        return refuse(state.metrics, exc, {HEADER_REQUEST_ID: request_id}, openai_error_response)

    async def prepare() -> PreparedStream:
        upstream, lease = await state.open(identity, tts_request, request_id)
        pcm = pcm_from_frames(state.relay(upstream, lease, same_frames))
        return speech_stream(speech, pcm, executor=state.encoders)

    return PreparedStreamResponse(prepare, headers={HEADER_REQUEST_ID: request_id}, error_body=openai_error_body)


async def voices(request: Request) -> JSONResponse:
    """The union of the voices the healthy workers offer."""
    return JSONResponse(await voices_listing(_state(request)))


async def system(request: Request) -> JSONResponse:
    """The gateway and every worker: health, circuit, latency, load, capacity; with keys
    configured, only for a key holder (it names the workers' internal addresses)."""
    state = _state(request)
    state.auth.authenticate(request.headers)
    return JSONResponse(system_report(state))


SPEECH_ROUTE = json_body_route(
    SPEECH_SCHEMA, {"audio/mpeg": {}, "text/event-stream": {}}, "Encoded audio, or SSE events, as it streams"
)


def add_gateway_routes(app: FastAPI) -> None:
    """Register the gateway's own routes on ``app`` (its state on ``app.state.gateway``)."""
    app.add_api_route(TTS_STREAM_PATH, tts_stream, methods=["POST"], **TTS_STREAM_ROUTE)
    app.add_api_route(OPENAI_SPEECH_PATH, audio_speech, methods=["POST"], **SPEECH_ROUTE)
    app.add_api_route("/v1/voices", voices, methods=["GET"])
    app.add_api_route("/v1/system", system, methods=["GET"])
