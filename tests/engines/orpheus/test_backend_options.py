"""Backend options as settings: declared by each backend, typed, validated, reachable from the CLI."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from orpheus_tts.cli import _engine_options, build_parser
from orpheus_tts.clientcli import CliError
from orpheus_tts.engines.base import EngineError
from orpheus_tts.engines.orpheus import BACKEND_NAMES
from orpheus_tts.engines.orpheus.backends.openai import OpenAIBackend
from orpheus_tts.engines.orpheus.backends.options import declared_options, parse_backend_options
from orpheus_tts.engines.registry import create_engine


def test_every_backend_declares_typed_options_with_help() -> None:
    for name in BACKEND_NAMES:
        options = {o.name: o for o in declared_options(name)}
        assert "max_model_len" in options, name
        own = [o for o in options.values() if o.scope == "backend"]
        assert own, name
        assert all(o.help for o in own), [o.name for o in own if not o.help]
    openai = {o.name: o for o in declared_options("openai")}
    assert (openai["capacity"].kind, openai["capacity"].optional) == ("int", True)
    assert openai["extra_body"].kind == "json"
    assert "transport" not in openai, "code-only parameters are not settings"
    assert {o.name: o.kind for o in declared_options("llamacpp")}["n_threads"] == "int"
    assert {o.name: o.kind for o in declared_options("vllm")}["gpu_memory_utilization"] == "float"


def test_values_are_parsed_to_their_types() -> None:
    values = parse_backend_options(
        "openai",
        ["capacity=2", 'extra_body={"min_p": 0.05}', "request-timeout-s=5", "flavour=llamacpp", "api_key=none"],
    )
    assert values == {
        "capacity": 2,
        "extra_body": {"min_p": 0.05},
        "request_timeout_s": 5.0,
        "flavour": "llamacpp",
        "api_key": None,
    }
    assert parse_backend_options("transformers", ["constrain_audio_tokens=yes"]) == {"constrain_audio_tokens": True}


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("capacty=2", r"no option 'capacty'; its options: .*capacity"),
        ("capacity=two", "capacity: expected an integer"),
        ("extra_body=[1]", "expected a JSON object"),
        ("constrain_audio_tokens=maybe", "expected true or false"),
        ("capacity", "KEY=VALUE"),
    ],
)
def test_a_bad_option_is_a_clear_error(pair: str, message: str) -> None:
    backend = "transformers" if pair.startswith("constrain") else "openai"
    with pytest.raises(EngineError, match=message):
        parse_backend_options(backend, [pair])


def engine_options(*argv: str, env: dict[str, str] | None = None, monkeypatch: Any = None) -> dict[str, Any]:
    args = build_parser().parse_args(["worker", "--engine", "orpheus", *argv])
    return _engine_options(args)


def test_cli_flags_and_environment_reach_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORPHEUS_BACKEND_OPTIONS", "flavour=sglang 'extra_body={\"a\": 1}'")
    options = engine_options(
        "--backend", "openai", "--backend-url", "http://127.0.0.1:9", "--backend-option", "capacity=3"
    )
    assert options["capacity"] == 3
    assert (options["flavour"], options["extra_body"]) == ("sglang", {"a": 1})
    engine = create_engine("orpheus", **options)
    backend = engine.backend  # type: ignore[attr-defined]
    assert isinstance(backend, OpenAIBackend)
    assert (backend.flavour, backend.default_capacity, backend.extra_body) == ("sglang", 3, {"a": 1})
    assert engine.capacity == 3


def test_cli_rejects_an_option_the_backend_does_not_take() -> None:
    with pytest.raises(CliError, match="the llamacpp backend has no option 'gpu_memory_utilization'"):
        engine_options("--backend", "llamacpp", "--model", "x.gguf", "--backend-option", "gpu_memory_utilization=0.5")


def test_backends_command_lists_every_backend_and_its_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orpheus_tts.cli", "backends"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    for name in BACKEND_NAMES:
        assert f"{name} (" in done.stdout
    assert "flavour=str (default 'auto')" in done.stdout
    assert "n_gpu_layers=int (default -1)" in done.stdout
    assert "--backend-option KEY=VALUE" in done.stdout
