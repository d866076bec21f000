"""Backend options as settings: declared by each backend's constructor, typed, parsed from ``KEY=VALUE``.

A backend declares its options as keyword-only constructor parameters with a
type and a default, and a one-line help per option in ``option_help``. The
Orpheus engine's own tuning fields (:class:`~orpheus_tts.engines.orpheus.engine.OrpheusConfig`)
are options of every backend. ``orpheus-tts backends`` lists them; the CLI's
``--backend-option KEY=VALUE`` (and ``ORPHEUS_BACKEND_OPTIONS``) are parsed
here, so a typo or a wrong type is an error naming the accepted options.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import itertools
import json
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orpheus_tts.engines.base import EngineError

__all__ = ["BackendOption", "backend_installed", "declared_options", "parse_backend_options"]

_KINDS = {bool: "bool", int: "int", float: "float", str: "str"}
_NOT_OPTIONS = frozenset({"model", "allow_download", "transport"})
"""Constructor parameters set otherwise (``--model``, ``--allow-download``) or only from code."""
_ENGINE_FIELDS = (
    "max_model_len",
    "decoder_device",
    "left_context_frames",
    "right_context_frames",
    "max_frames_per_window",
    "decode_batch_size",
    "decode_batch_wait_s",
    "crossfade_s",
    "max_segment_chars",
    "language",
)
""":class:`OrpheusConfig` fields settable per worker, for every backend."""
_PACKAGES = {"vllm": "vllm", "llamacpp": "llama_cpp", "transformers": "transformers", "openai": "httpx"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class BackendOption:
    """One option a backend takes."""

    name: str
    kind: str
    """``int``, ``float``, ``bool``, ``str`` or ``json`` (an object)."""
    default: Any
    optional: bool
    """``none`` is a value (the default decides)."""
    help: str
    scope: str
    """``backend`` (the backend's own) or ``engine`` (the Orpheus engine's, for every backend)."""

    def parse(self, text: str) -> Any:
        """The typed value of ``text``; :class:`ValueError` saying what was expected."""
        raw = text.strip()
        if self.optional and raw.lower() in ("none", "null"):
            return None
        if self.kind == "bool":
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError(f"expected true or false, got {text!r}")
        if self.kind == "int":
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"expected an integer, got {text!r}") from None
        if self.kind == "float":
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"expected a number, got {text!r}") from None
        if self.kind == "json":
            try:
                value = json.loads(raw)
            except ValueError:
                raise ValueError(f"expected a JSON object, got {text!r}") from None
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {text!r}")
            return value
        return text


def _kind(annotation: Any) -> tuple[str | None, bool]:
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else None
    if annotation in _KINDS:
        return _KINDS[annotation], optional
    if typing.get_origin(annotation) in (Mapping, dict) or annotation in (Mapping, dict):
        return "json", optional
    return None, optional


def _backend_options(backend: str) -> list[BackendOption]:
    from orpheus_tts.engines.orpheus.backends import _backend_class

    cls = _backend_class(backend)
    hints = typing.get_type_hints(cls.__init__)
    helps: Mapping[str, str] = getattr(cls, "option_help", {})
    options = []
    for name, param in inspect.signature(cls).parameters.items():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY or name in _NOT_OPTIONS:
            continue
        kind, optional = _kind(hints.get(name))
        if kind is None:
            continue
        options.append(BackendOption(name, kind, param.default, optional, helps.get(name, ""), "backend"))
    return options


def _engine_options() -> list[BackendOption]:
    from orpheus_tts.engines.orpheus.engine import OrpheusConfig

    hints = typing.get_type_hints(OrpheusConfig)
    fields = {f.name: f for f in dataclasses.fields(OrpheusConfig)}
    docs = _field_docs(OrpheusConfig)
    options = []
    for name in _ENGINE_FIELDS:
        kind, optional = _kind(hints[name])
        assert kind is not None, name
        options.append(BackendOption(name, kind, fields[name].default, optional, docs.get(name, ""), "engine"))
    return options


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (its first line)."""
    import ast

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = after.value.value.strip().splitlines()[0]
    return docs


def declared_options(backend: str) -> list[BackendOption]:
    """Every option ``--backend-option`` takes with ``backend``: its own first, then the engine's."""
    own = _backend_options(backend)
    names = {o.name for o in own}
    return own + [o for o in _engine_options() if o.name not in names]


def backend_installed(backend: str) -> bool:
    """Whether the package ``backend`` needs is importable here."""
    return importlib.util.find_spec(_PACKAGES[backend]) is not None


def parse_backend_options(backend: str, pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as typed options of ``backend``; an :class:`EngineError` for a bad one."""
    declared = {o.name: o for o in declared_options(backend)}
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise EngineError(f"a backend option is KEY=VALUE, got {pair!r}")
        option = declared.get(key)
        if option is None:
            raise EngineError(
                f"the {backend} backend has no option {key!r}; its options: {', '.join(sorted(declared))} "
                "(see `orpheus-tts backends`)"
            )
        try:
            values[key] = option.parse(text)
        except ValueError as exc:
            raise EngineError(f"backend option {key}: {exc}") from None
    return values
