"""The user-facing docs name only commands, flags, routes, metrics and files that exist."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest
from starlette.routing import Mount, Route, WebSocketRoute

from orpheus_tts import cli
from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.worker.app import create_app as create_worker
from orpheus_tts.worker.config import WorkerConfig
from tests.deploy.manifests import ParseError, exported, parse_cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "quickstart.md",
    "operations.md",
    "architecture.md",
    "troubleshooting.md",
    "configuration.md",
    "integrations.md",
    "scheduling.md",
]
FENCE_RE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
FLAG_RE = re.compile(r"`(--[a-z][a-z0-9-]*)")
METRIC_RE = re.compile(r"(?<![.\w])orpheus_(?!tts\b)[a-z0-9_]+\b")  # not orpheus_tts, not bench.orpheus_gpu
PATH_RE = re.compile(r"`((?:docs|deploy|examples|bench|src|tests)/[A-Za-z0-9_./-]+?)`")
ROUTE_RE = re.compile(r"`(?:GET |POST )?(/(?:v1/[a-z/]+|healthz|readyz|metrics))`")


def all_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of the parser and of its subcommands, nested ones (``keys new``) included."""
    flags = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= all_flags(sub)
    return flags


def page(name: str) -> str:
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def command_lines(text: str) -> list[list[str]]:
    """Every ``orpheus-tts ...`` line of the page's code blocks, continuation lines joined."""
    found = []
    for block in FENCE_RE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["orpheus-tts"]:
                found.append(words)
    return found


@pytest.mark.parametrize("name", PAGES)
def test_every_command_in_the_docs_parses(name: str) -> None:
    for argv in command_lines(page(name)):
        if argv[1] == "keys":
            continue  # nested subcommand: checked below
        try:
            parse_cli(argv)
        except ParseError as exc:
            pytest.fail(f"docs/{name}: {exc}")


def test_keys_new_in_the_docs_parses() -> None:
    lines = [argv for name in PAGES for argv in command_lines(page(name)) if argv[1:3] == ["keys", "new"]]
    assert lines
    for argv in lines:
        parse_cli(argv)


@pytest.mark.parametrize("name", PAGES)
def test_every_flag_in_the_docs_exists(name: str) -> None:
    known = all_flags(cli.build_parser())
    text = page(name)
    named = set(FLAG_RE.findall(text))
    for argv in command_lines(text):
        named |= {a.split("=")[0] for a in argv if a.startswith("--")}
    assert named <= known, f"docs/{name} names flags the CLI lacks: {sorted(named - known)}"


@pytest.mark.parametrize("name", PAGES)
def test_every_metric_in_the_docs_exists(name: str) -> None:
    from orpheus_tts.gateway.metrics import GatewayMetrics
    from orpheus_tts.serving.metrics import ServiceMetrics

    known = set(exported(ServiceMetrics("worker").registry)) | set(exported(GatewayMetrics().registry))
    known |= {"orpheus_engine_events_total"}  # exported only by engines that count events
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in known}
    named = set(METRIC_RE.findall(page(name)))
    assert named <= known | families, f"docs/{name}: unknown metrics {sorted(named - known - families)}"


@pytest.mark.parametrize("name", PAGES)
def test_every_file_the_docs_name_exists(name: str) -> None:
    for path in PATH_RE.findall(page(name)):
        assert (ROOT / path).exists(), f"docs/{name} names {path}, which does not exist"


@pytest.mark.parametrize("name", PAGES)
def test_every_route_the_docs_name_exists(name: str) -> None:
    apps = [create_worker(ToneEngine(), WorkerConfig()), create_gateway(GatewayConfig(workers=("http://127.0.0.1:9",)))]
    routes = {route.path for app in apps for route in app.routes if isinstance(route, (Route, WebSocketRoute, Mount))}
    for route in ROUTE_RE.findall(page(name)):
        assert route in routes, f"docs/{name} names {route}, which no server answers"
