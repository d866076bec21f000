"""A remote OpenAI-compatible completions server (vLLM, SGLang, llama.cpp server).

The prompt is sent as token ids when a local tokenizer is available (every
one of those servers accepts a list of ids as ``prompt``); otherwise as text
with the special tokens spelled out and ``add_special_tokens: false``. The
answer streams as server-sent events. Servers return *text*, so each event's
``<custom_token_N>`` strings map back to ids ``128256 + N`` (several tokens
may come in one event, and a token may be split across events); where a server
sends ids directly (vLLM's ``token_ids`` with ``return_token_ids``, or
``logprobs.tokens`` as ``token_id:N``) those are used instead. Closing the
stream closes the HTTP response, which makes the server abort the request.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import httpx

from orpheus_tts.engines.orpheus.backends.base import BackendError, Encoder
from orpheus_tts.engines.orpheus.loading import ModelNotFoundError, load_tokenizer, resolve_weights
from orpheus_tts.engines.orpheus.prompt import CUSTOM_TOKEN_BASE, Prompt, SamplingParams

__all__ = ["DEFAULT_OPENAI_CAPACITY", "DEFAULT_REQUEST_TIMEOUT_S", "OpenAIBackend", "TokenTextParser"]

DEFAULT_OPENAI_CAPACITY = 32
"""Concurrent requests sent to the server (it batches them)."""
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

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        tokenizer: str | None = None,
        allow_download: bool = False,
        remote_model: str | None = None,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        capacity: int = DEFAULT_OPENAI_CAPACITY,
        extra_body: Mapping[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("the openai backend needs --backend-url (base URL of the completions server)")
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.api_key = api_key
        self.model_name = model
        self.tokenizer_name = tokenizer
        self.allow_download = allow_download
        self.remote_model = remote_model or model
        self.request_timeout_s = request_timeout_s
        self.default_capacity = capacity
        self.extra_body = dict(extra_body or {})
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._encoder: Encoder | None = None

    async def start(self) -> None:
        if self._client is not None:
            return
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        timeout = httpx.Timeout(self.request_timeout_s, connect=DEFAULT_CONNECT_TIMEOUT_S)
        client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout, transport=self._transport)
        try:
            if self.remote_model is None:
                self.remote_model = await self._first_model(client)
            self._encoder = self._local_encoder()
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def _first_model(self, client: httpx.AsyncClient) -> str:
        try:
            response = await client.get("/v1/models")
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
        except (httpx.HTTPError, KeyError, IndexError, ValueError, TypeError) as exc:
            raise BackendError(
                f"cannot list models at {self.base_url}/v1/models ({exc}); pass --model with the served model name"
            ) from exc

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
        """The ``/v1/completions`` request for one segment."""
        body: dict[str, Any] = {
            "model": self.remote_model,
            "stream": True,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "repetition_penalty": sampling.repetition_penalty,
            "stop_token_ids": list(sampling.stop_token_ids),
            "skip_special_tokens": False,
        }
        if prompt.ids is not None:
            body["prompt"] = list(prompt.ids)
        else:
            body["prompt"] = prompt.rendered()
            body["add_special_tokens"] = False
        if sampling.top_k > 0:
            body["top_k"] = sampling.top_k
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        body.update(self.extra_body)
        return body

    async def generate(self, prompt: Prompt, sampling: SamplingParams) -> AsyncGenerator[list[int], None]:
        client = self._client
        if client is None:
            raise BackendError("the openai backend is not started")
        parser = TokenTextParser()
        body = self.request_body(prompt, sampling)
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
                        return
                    ids = _parse_event(data, parser)
                    if ids:
                        yield ids
        except httpx.HTTPError as exc:
            raise BackendError(f"completions server at {self.base_url} failed: {exc!r}") from exc


def _parse_event(data: str, parser: TokenTextParser) -> list[int]:
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
    return ids
