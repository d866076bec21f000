"""A remote OpenAI-compatible completions server: vLLM, SGLang or llama.cpp's servers.

**Flavours.** Servers disagree on the names of the sampling fields beyond
OpenAI's own, and silently ignore names they do not know, so each request uses
the chosen server's own names (:data:`FLAVOURS`): ``vllm`` and ``sglang`` get
``repetition_penalty``, ``stop_token_ids``, ``min_p`` and
``skip_special_tokens``; ``llamacpp`` (llama.cpp's ``llama-server`` and
llama-cpp-python's ``llama_cpp.server``) gets ``repeat_penalty``, ``min_p``,
``top_k`` and the stop token as a ``stop`` string. ``auto`` reads the
``owned_by`` of ``/v1/models``.

**Prompts.** With a local tokenizer the prompt goes as token ids, where the
server takes them; otherwise (or with ``prompt_format=text``) as text with the
special tokens spelled out. ``auto`` sends one one-token probe with an id
prompt at start and falls back to text when the server refuses it
(llama-cpp-python's server takes only strings).

**Answers** stream as server-sent events of *text*: each event's
``<custom_token_N>`` strings map back to ids ``128256 + N`` (several tokens
may come in one event, and a token may be split across events); where a server
sends ids directly (vLLM's ``token_ids`` with ``return_token_ids``, or
``logprobs.tokens`` as ``token_id:N``) those are used instead.

**Completeness.** A stream is complete when the stop token came, when the
server says ``finish_reason: "stop"`` (a stop token or string, or the model's
end-of-generation token), or at ``max_tokens`` (``finish_reason: "length"``,
counted by the engine as ``length_capped``). Anything else, such as a
``[DONE]`` without a finish reason (llama-cpp-python's server does that when a
second request interrupts the first) or a connection that ends early, is a
retryable :class:`GenerationInterruptedError`, never a short success.

**Capacity.** At most ``capacity`` requests are sent at once; more wait their
turn in the backend. The default is :data:`DEFAULT_OPENAI_CAPACITY` for
batching servers and 1 for the ``llamacpp`` flavour (one slot). Closing the
stream closes the HTTP response, which makes the server abort the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import httpx

from orpheus_tts.engines.orpheus.backends.base import BackendError, Encoder, GenerationInterruptedError
from orpheus_tts.engines.orpheus.loading import ModelNotFoundError, load_tokenizer, resolve_weights
from orpheus_tts.engines.orpheus.prompt import BOS, CUSTOM_TOKEN_BASE, Prompt, SamplingParams

__all__ = [
    "DEFAULT_OPENAI_CAPACITY",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "FLAVOURS",
    "PROMPT_FORMATS",
    "OpenAIBackend",
    "TokenTextParser",
]

logger = logging.getLogger(__name__)

DEFAULT_OPENAI_CAPACITY = 32
"""Concurrent requests sent to a batching server (vLLM, SGLang)."""
LLAMACPP_CAPACITY = 1
"""Concurrent requests sent to a llama.cpp server by default (one slot; start it with more and raise this)."""
FLAVOURS = ("auto", "vllm", "sglang", "llamacpp")
"""Server families whose request fields the backend speaks; ``auto`` asks ``/v1/models``."""
PROMPT_FORMATS = ("auto", "ids", "text")
"""How prompts are sent: token ids, text, or ids when the server takes them."""
_OWNERS = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llamacpp", "me": "llamacpp"}
"""``owned_by`` of ``/v1/models`` → flavour (``me`` is llama-cpp-python's server)."""
DEFAULT_REQUEST_TIMEOUT_S = 60.0
"""Connect and read timeout per request, in seconds (between events, not in total)."""
DEFAULT_CONNECT_TIMEOUT_S = 10.0
MAX_TOKEN_FRAGMENT_CHARS = 32
"""Longest trailing ``<custom_token_…`` fragment kept for the next event."""
MAX_ERROR_BODY_CHARS = 500

_CUSTOM_TOKEN = re.compile(r"<custom_token_(\d+)>")
_TOKEN_ID = re.compile(r"token_id:(\d+)")


class TokenTextParser:
    """Maps streamed completion text back to token ids, across event boundaries."""

    def __init__(self) -> None:
        self._pending = ""
        self.unmapped_chars = 0
        """Characters that were not ``<custom_token_N>`` (text tokens the model wrote)."""

    def feed(self, text: str) -> list[int]:
        buffer = self._pending + text
        ids: list[int] = []
        end = 0
        for match in _CUSTOM_TOKEN.finditer(buffer):
            self.unmapped_chars += len(buffer[end : match.start()].strip())
            ids.append(CUSTOM_TOKEN_BASE + int(match.group(1)))
            end = match.end()
        rest = buffer[end:]
        cut = rest.rfind("<")
        # Keep a trailing fragment that may become "<custom_token_N>" with the next event.
        fragment = rest[cut:] if cut >= 0 else ""
        if (
            fragment
            and len(fragment) <= MAX_TOKEN_FRAGMENT_CHARS
            and "<custom_token_".startswith(fragment[:14])
            and ">" not in fragment
        ):
            self.unmapped_chars += len(rest[:cut].strip())
            self._pending = rest[cut:]
        else:
            self.unmapped_chars += len(rest.strip())
            self._pending = ""
        return ids


def _event_ids(choice: Mapping[str, Any], parser: TokenTextParser) -> list[int]:
    token_ids = choice.get("token_ids")
    if isinstance(token_ids, list) and all(isinstance(t, int) for t in token_ids):
        return list(token_ids)
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, Mapping):
        tokens = logprobs.get("tokens")
        if isinstance(tokens, list) and tokens and all(isinstance(t, str) and _TOKEN_ID.fullmatch(t) for t in tokens):
            return [int(t.split(":", 1)[1]) for t in tokens]
    text = choice.get("text")
    return parser.feed(text) if isinstance(text, str) else []


class OpenAIBackend:
    """Token generation on a remote completions server; see the module docstring."""

    name = "openai"
    option_help = {
        "base_url": "base URL of the completions server (also --backend-url)",
        "api_key": "bearer token sent to the server",
        "tokenizer": "local tokenizer directory or id, for token-id prompts (default: --model when local)",
        "remote_model": "model name the server serves (default: --model, else the first of /v1/models)",
        "flavour": "server family whose field names are sent: auto, vllm, sglang, llamacpp",
        "prompt_format": "auto (ids where the server takes them), ids or text",
        "request_timeout_s": "connect and read timeout between events, in seconds",
        "capacity": "requests sent at once (default: 32, or 1 for llamacpp)",
        "extra_body": "JSON object merged into every request body",
    }

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        tokenizer: str | None = None,
        allow_download: bool = False,
        remote_model: str | None = None,
        flavour: str = "auto",
        prompt_format: str = "auto",
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        capacity: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("the openai backend needs --backend-url (base URL of the completions server)")
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}")
        if capacity is not None and capacity < 1:
            raise ValueError("capacity must be at least 1")
        if request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be positive")
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.api_key = api_key
        self.model_name = model
        self.tokenizer_name = tokenizer
        self.allow_download = allow_download
        self.remote_model = remote_model or model
        self.flavour = flavour
        self.prompt_format = prompt_format
        self.request_timeout_s = request_timeout_s
        self.capacity = capacity
        self.default_capacity = capacity or (LLAMACPP_CAPACITY if flavour == "llamacpp" else DEFAULT_OPENAI_CAPACITY)
        self.extra_body = dict(extra_body or {})
        self.served_by: str | None = None
        """``owned_by`` of the served model, as ``/v1/models`` reported it."""
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._encoder: Encoder | None = None
        self._slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        if self._client is not None:
            return
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        timeout = httpx.Timeout(self.request_timeout_s, connect=DEFAULT_CONNECT_TIMEOUT_S)
        client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout, transport=self._transport)
        try:
            if self.remote_model is None or self.flavour == "auto":
                await self._discover(client)
            encoder = None if self.prompt_format == "text" else self._local_encoder()
            if encoder is not None and self.prompt_format == "auto" and not await self._takes_ids(client):
                logger.info("the completions server at %s takes no token-id prompts: sending text", self.base_url)
                encoder = None
            if encoder is None and self.prompt_format == "ids":
                raise BackendError("prompt_format=ids needs a local tokenizer (--model DIR or tokenizer=DIR)")
            self._encoder = encoder
        except BaseException:
            await client.aclose()
            raise
        if self.capacity is None and self.flavour == "llamacpp":
            self.default_capacity = LLAMACPP_CAPACITY
        self._slots = asyncio.Semaphore(self.capacity or self.default_capacity)
        self._client = client

    async def _discover(self, client: httpx.AsyncClient) -> None:
        """The served model's name and owner from ``/v1/models``; the flavour from its owner."""
        try:
            response = await client.get("/v1/models")
            response.raise_for_status()
            models = [m for m in response.json()["data"] if isinstance(m, Mapping)]
            entry = next((m for m in models if m.get("id") == self.remote_model), None) or models[0]
        except (httpx.HTTPError, KeyError, IndexError, ValueError, TypeError) as exc:
            raise BackendError(
                f"cannot list models at {self.base_url}/v1/models ({exc}); "
                "pass --model with the served model name and flavour=vllm|sglang|llamacpp"
            ) from exc
        if self.remote_model is None:
            self.remote_model = str(entry["id"])
        self.served_by = str(entry.get("owned_by", ""))
        if self.flavour == "auto":
            flavour = _OWNERS.get(self.served_by.lower())
            if flavour is None:
                raise BackendError(
                    f"cannot tell which server runs at {self.base_url} (its models are owned_by "
                    f"{self.served_by!r}); set the backend option flavour=vllm, sglang or llamacpp"
                )
            self.flavour = flavour

    async def _takes_ids(self, client: httpx.AsyncClient) -> bool:
        """Whether the server answers a one-token completion of a token-id prompt."""
        body = {"model": self.remote_model, "prompt": [BOS], "max_tokens": 1, "stream": False}
        try:
            response = await client.post("/v1/completions", json=body)
        except httpx.HTTPError as exc:
            raise BackendError(f"completions server at {self.base_url} failed: {exc!r}") from exc
        return response.status_code == 200

    def _local_encoder(self) -> Encoder | None:
        """A tokenizer from ``tokenizer`` (required to exist) or from ``model`` (if it is local)."""
        if self.tokenizer_name is not None:
            path = resolve_weights(
                self.tokenizer_name, what="tokenizer", flag="--tokenizer", allow_download=self.allow_download
            )
            return load_tokenizer(path)
        if self.model_name is None:
            return None
        try:
            path = resolve_weights(self.model_name, what="tokenizer", flag="--tokenizer")
            return load_tokenizer(Path(path))
        except ModelNotFoundError:
            return None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def encoder(self) -> Encoder | None:
        return self._encoder

    def request_body(self, prompt: Prompt, sampling: SamplingParams) -> dict[str, Any]:
        """The ``/v1/completions`` request for one segment, in the flavour's field names."""
        body: dict[str, Any] = {
            "model": self.remote_model,
            "stream": True,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "min_p": 0.0,
        }
        text_prompt = prompt.ids is None
        body["prompt"] = prompt.rendered() if text_prompt else list(prompt.ids or ())
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if self.flavour == "llamacpp":
            # llama.cpp's own defaults (top_k 40, min_p 0.05, repeat_penalty 1.1) apply to fields left out.
            body["top_k"] = sampling.top_k
            body["repeat_penalty"] = sampling.repetition_penalty
            body["stop"] = [f"<custom_token_{t - CUSTOM_TOKEN_BASE}>" for t in sampling.stop_token_ids]
        else:  # vllm, sglang
            if sampling.top_k > 0:
                body["top_k"] = sampling.top_k
            body["repetition_penalty"] = sampling.repetition_penalty
            body["stop_token_ids"] = list(sampling.stop_token_ids)
            body["skip_special_tokens"] = False
            if text_prompt and self.flavour == "vllm":
                body["add_special_tokens"] = False
        body.update(self.extra_body)
        return body

    async def generate(self, prompt: Prompt, sampling: SamplingParams) -> AsyncGenerator[list[int], None]:
        client, slots = self._client, self._slots
        if client is None or slots is None:
            raise BackendError("the openai backend is not started")
        parser = TokenTextParser()
        body = self.request_body(prompt, sampling)
        stops = set(sampling.stop_token_ids)
        outcome = _Outcome()
        async with slots:
            try:
                async with client.stream("POST", "/v1/completions", json=body) as response:
                    if response.status_code != 200:
                        detail = (await response.aread()).decode("utf-8", "replace")[:MAX_ERROR_BODY_CHARS]
                        raise BackendError(f"completions server answered {response.status_code}: {detail}")
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[len("data:") :].strip()
                        if data == "[DONE]":
                            outcome.done = True
                            break
                        ids = _parse_event(data, parser, outcome)
                        if ids:
                            outcome.tokens += len(ids)
                            outcome.stopped |= not stops.isdisjoint(ids)
                            yield ids
                        if outcome.stopped:
                            return
            except httpx.HTTPError as exc:
                raise GenerationInterruptedError(
                    f"completions server at {self.base_url} failed after {outcome.tokens} tokens: {exc!r}"
                ) from exc
        outcome.check(sampling.max_tokens)


class _Outcome:
    """How one completion stream ended."""

    def __init__(self) -> None:
        self.tokens = 0
        self.stopped = False
        """The stop token came."""
        self.finish_reason: str | None = None
        self.done = False
        """``[DONE]`` came."""

    def check(self, max_tokens: int) -> None:
        """Return if the generation is complete; raise :class:`GenerationInterruptedError` if it was cut off."""
        if self.stopped or self.finish_reason in ("stop", "length") or self.tokens >= max_tokens:
            return
        how = f"finish_reason {self.finish_reason!r}" if self.finish_reason else "no finish_reason"
        raise GenerationInterruptedError(
            f"the completions server ended the generation after {self.tokens} of at most {max_tokens} tokens "
            f"without the stop token ({how}{'' if self.done else ', no [DONE]'}); the server may have "
            "interrupted it for another request (set capacity to its number of slots)"
        )


def _parse_event(data: str, parser: TokenTextParser, outcome: _Outcome) -> list[int]:
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise BackendError(f"completions server sent a malformed event: {data[:100]!r}") from exc
    if not isinstance(event, Mapping):
        raise BackendError(f"completions server sent a malformed event: {data[:100]!r}")
    error = event.get("error")
    if error:
        message = error.get("message", error) if isinstance(error, Mapping) else error
        raise BackendError(f"completions server error: {message}")
    ids: list[int] = []
    for choice in event.get("choices") or []:
        if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
            ids.extend(_event_ids(choice, parser))
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                outcome.finish_reason = reason
    return ids
