"""Readers for the deployment files: Dockerfiles, compose, Kubernetes manifests, the CLI and the apps' routes."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from prometheus_client import CollectorRegistry

from orpheus_tts.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILES = sorted(p for p in (DEPLOY / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore")
COMPOSE = DEPLOY / "compose.yaml"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


def dockerfile(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, argument = line.partition(" ")
        out.append(Instruction(keyword.upper(), argument.strip()))
    assert not pending, f"{path.name}: dangling line continuation"
    return out


def exec_form(argument: str) -> list[str]:
    """A JSON-array (exec form) argument; shell form is refused so signals reach the server."""
    value = json.loads(argument)
    assert isinstance(value, list), argument
    assert all(isinstance(v, str) for v in value), argument
    return value


def healthcheck_command(argument: str) -> list[str]:
    """The command of ``HEALTHCHECK [OPTIONS] CMD [...]``."""
    _, sep, command = argument.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {argument}"
    return exec_form(command)


URL_RE = re.compile(r"https?://[^'\"\s)]+")


def urls_in(command: list[str]) -> list[str]:
    return [m.group(0) for part in command for m in URL_RE.finditer(part)]


def yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    """Every object of the manifests kustomize applies (the Kustomization itself excluded)."""
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml_documents(path)
        if doc.get("kind") != "Kustomization"
    ]


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_objects() if doc["kind"] == kind]


def k8s_named(kind: str, name: str) -> dict[str, Any]:
    matches = [doc for doc in k8s_kind(kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} named {name}, found {len(matches)}"
    return matches[0]


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, container) for every container of every Deployment."""
    for deployment in k8s_kind("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


class ParseError(Exception):
    pass


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """``orpheus-tts ARGV`` through the real parser; raises ParseError with argparse's message."""
    assert argv, "empty command"
    assert argv[0] == "orpheus-tts", f"not an orpheus-tts command: {argv}"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        raise ParseError(f"{' '.join(argv)}: {stderr.getvalue().strip()}") from exc


def option_strings(command: str) -> set[str]:
    """Every flag ``orpheus-tts COMMAND`` accepts, spelled in full."""
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(subparsers.choices[command]._option_string_actions)


def abbreviated_flags(argv: list[str]) -> list[str]:
    """Flags argparse would accept only as abbreviations: files must spell them out."""
    known = option_strings(argv[1])
    return [arg.split("=")[0] for arg in argv[2:] if arg.startswith("--") and arg.split("=")[0] not in known]


def route_paths(app: Any) -> set[str]:
    """GET paths an ASGI app answers (FastAPI routes and mounts)."""
    return {route.path for route in app.routes if "GET" in (getattr(route, "methods", None) or {"GET"})}


SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exported(registry: CollectorRegistry) -> dict[str, str]:
    """Series name -> metric type, for every metric registered (labelled ones included)."""
    out = {}
    for family in registry.collect():
        for suffix in SAMPLE_SUFFIXES[family.type]:
            out[family.name + suffix] = family.type
    return out


def port_and_path(url: str) -> tuple[int, str]:
    parts = urlsplit(url)
    assert parts.port is not None, f"no port in {url}"
    return parts.port, parts.path
