"""docs/configuration.md is generated from the code, and what it claims about flags is true."""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path

import pytest

from orpheus_tts import cli, configdoc
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.realtime.limits import RealtimeLimits
from orpheus_tts.routing.settings import RoutingSettings
from orpheus_tts.serving.settings import HttpSettings
from orpheus_tts.worker.config import WorkerConfig

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def no_orpheus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ORPHEUS_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def page() -> str:
    return configdoc.render()


def test_committed_page_is_the_generated_one(page: str) -> None:
    assert PAGE.read_text(encoding="utf-8") == page, (
        "docs/configuration.md is stale: run python -m orpheus_tts.configdoc --write docs/configuration.md"
    )


def test_check_mode_fails_on_a_stale_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "configuration.md"
    assert configdoc.main(["--write", str(page)]) == 0
    assert configdoc.main(["--check", str(page)]) == 0
    page.write_text(page.read_text().replace("Upper bound", "Lower bound"))
    assert configdoc.main(["--check", str(page)]) == 1
    assert "stale" in capsys.readouterr().err


@pytest.mark.parametrize("cls", [WorkerConfig, GatewayConfig, HttpSettings, RealtimeLimits, RoutingSettings])
def test_every_field_is_documented(cls: type, page: str) -> None:
    docs = configdoc.field_docs(cls)
    assert [d.name for d in docs] == list(inspect.signature(cls).parameters)
    for doc in docs:
        assert doc.doc, f"{cls.__name__}.{doc.name} has no docstring"
        assert f"| `{doc.name}` |" in page


def test_defaults_and_constants_are_the_real_ones() -> None:
    by_name = {d.name: d for d in configdoc.field_docs(WorkerConfig)}
    assert by_name["max_queue"].default == repr(WorkerConfig().max_queue)
    assert by_name["max_queue"].constant == "DEFAULT_MAX_QUEUE"
    assert by_name["capacity"].constant is None
    routing = {d.name: d for d in configdoc.field_docs(RoutingSettings)}
    assert routing["hedge_ttfb_ms"].default == repr(RoutingSettings().hedge_ttfb_ms)


def _choices(flag: str) -> list[str]:
    for parser in configdoc._subparsers().values():
        for action in parser._actions:
            if flag in action.option_strings and action.choices:
                return [str(c) for c in action.choices]
    return []


def value_for(field: configdoc.FieldDoc) -> tuple[str | None, object]:
    """A command-line value for the field (``None``: a switch), and what the field should then hold."""
    if field.type == "bool":
        return None, True
    choices = [c for flag in field.flags for c in _choices(flag) if repr(c) != field.default]
    if choices:  # a flag with a fixed set of values: one that is not the default
        return choices[0], choices[0]
    if field.type.startswith("Literal["):
        choice = ast.literal_eval(field.type.removeprefix("Literal"))[-1]
        return choice, choice
    if field.type.startswith("tuple"):
        return "http://w:8001", ("http://w:8001",)
    if field.type.startswith("int"):
        return "7", 7
    if field.type.startswith("float") and field.name.endswith("_utilization"):
        return "0.75", 0.75  # a share: (0, 1]
    if field.type.startswith("float"):
        return ("999.5", 999.5) if field.name.startswith("max_") else ("7.5", 7.5)
    return "w-7", "w-7"


def build(command: str, argv: list[str], cls: type = WorkerConfig) -> object:
    args = cli.build_parser().parse_args([command, *argv])
    config = cli._worker_config(args) if command == "worker" else cli._gateway_config(args, list(args.worker))
    return config.http if cls is HttpSettings else config


CONFIGS = [(WorkerConfig, "worker"), (GatewayConfig, "gateway"), (HttpSettings, "worker"), (HttpSettings, "gateway")]


@pytest.mark.parametrize(("cls", "command"), CONFIGS)
def test_each_documented_flag_reaches_its_field(cls: type, command: str) -> None:
    flagged = [d for d in configdoc.field_docs(cls, (command,)) if d.flags]
    assert len(flagged) >= 5
    for field in flagged:
        text, expected = value_for(field)
        for flag in field.flags:
            config = build(command, [flag] if text is None else [flag, text], cls)
            wanted = (
                (not expected) if text is None and flag.startswith("--no-") else expected
            )  # a switch that turns off
            assert getattr(config, field.name) == wanted, f"{flag} does not set {cls.__name__}.{field.name}"


@pytest.mark.parametrize(("cls", "command"), CONFIGS)
def test_each_documented_variable_reaches_its_field(cls: type, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with_env = [d for d in configdoc.field_docs(cls, (command,)) if d.env]
    assert with_env
    for field in with_env:
        text, expected = value_for(field)
        for name in field.env:
            assert text is not None
            monkeypatch.setenv(name, text)
            assert getattr(build(command, [], cls), field.name) == expected, f"{name} does not set {field.name}"
            monkeypatch.delenv(name)


def test_variables_read_outside_flags_are_in_the_cli() -> None:
    source = inspect.getsource(cli)
    for name in configdoc._EXTRA_ENV:
        assert f'"{name}"' in source, name


def test_environment_table_is_exact(page: str) -> None:
    table = page.split("## Environment variables", 1)[1]
    assert "| `ORPHEUS_API_KEY` | `--api-key` | `say`, `voices`, `system` |" in table
    assert "| `ORPHEUS_PORT` | `--port` | `worker`, `gateway`, `serve` |" in table
    # Probing restores the environment.
    assert not [name for name in os.environ if name.startswith("ORPHEUS_")]
