"""The base distribution is the SDK: a wheel installed with no extras streams from a stack, and nothing of the servers
comes with it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orpheus_tts.engines.testing import ToneEngine, render
from orpheus_tts.gateway.app import create_app as create_gateway
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.worker.app import create_app as create_worker
from tests.servers import run_server

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Only the client is installed here."
SERVER_MODULES = ("fastapi", "starlette", "uvicorn", "av", "soxr", "prometheus_client", "rich", "numpy", "pydantic")
INSTALL_TIMEOUT_S = 240

CHECK = """
import asyncio, importlib, importlib.util, json, sys
import orpheus_tts
from orpheus_tts.sdk import OrpheusTTS

async def main():
    async with OrpheusTTS([sys.argv[1]]) as tts:
        return b"".join([c async for c in tts.stream(sys.argv[2], voice="alloy")])

pcm = asyncio.run(main())
plugin_errors = {}
for extra in ("livekit", "pipecat"):
    try:
        importlib.import_module(f"orpheus_tts.integrations.{extra}")
        plugin_errors[extra] = ""
    except ImportError as exc:
        plugin_errors[extra] = str(exc)
print(json.dumps({
    "package": orpheus_tts.__file__,
    "version": orpheus_tts.__version__,
    "pcm_bytes": len(pcm),
    "pcm_ok": pcm == open(sys.argv[3], "rb").read(),
    "present": [m for m in sys.argv[4:] if importlib.util.find_spec(m) is not None],
    "plugin_errors": plugin_errors,
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # The build backend of this environment, when it is new enough; else an isolated one from the registry.
    isolation = ["--no-isolation"] if _has_setuptools(71) else []
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", *isolation, "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (path,) = out.glob("orpheus_tts-*.whl")
    return path


@pytest.fixture(scope="module")
def fresh_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the wheel and nothing else but its own dependencies."""
    env = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=60)
    python = env / "bin" / "python"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot install the wheel's dependencies (no package registry?): {result.stderr[-500:]}")
    return env


@pytest.fixture(scope="module")
def stack() -> Iterator[str]:
    with run_server(create_worker(ToneEngine())) as worker:
        with run_server(create_gateway(GatewayConfig(workers=(worker,), probe_interval_s=0.5))) as gateway:
            yield gateway


def _has_setuptools(major: int) -> bool:
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    return int(setuptools.__version__.split(".")[0]) >= major


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def test_the_wheel_requires_only_the_sdk_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().splitlines()
        names = archive.namelist()
    required = sorted(line.split(":", 1)[1].split(">")[0].strip() for line in lines if line.startswith("Requires-Dist:")
                      and "extra ==" not in line)  # fmt: skip
    assert required == ["httpx", "websockets"]
    extras = {line.split(":", 1)[1].strip() for line in lines if line.startswith("Provides-Extra:")}
    assert {"server", "embedded", "orpheus", "vllm", "llamacpp", "livekit", "pipecat"} <= extras
    assert "orpheus_tts/gateway/static/index.html" in names, "package data travels with the wheel"


def test_the_bare_wheel_streams_from_a_running_stack(fresh_env: Path, stack: str, tmp_path: Path) -> None:
    expected = tmp_path / "expected.pcm"
    expected.write_bytes(render(TEXT))
    result = subprocess.run(
        [str(fresh_env / "bin" / "python"), "-c", CHECK, stack, TEXT, str(expected), *SERVER_MODULES],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=_clean_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["package"].startswith(str(fresh_env)), "imported from the fresh environment, not the source tree"
    assert report["pcm_bytes"] > 0, report
    assert report["pcm_ok"], "the audio is the stack's, byte for byte"
    assert report["present"] == [], f"server dependencies came with the SDK: {report['present']}"
    for extra, error in report["plugin_errors"].items():
        assert f"pip install 'orpheus-tts[{extra}]'" in error, "a plugin without its framework names the extra"


def test_a_server_command_without_the_extra_names_it(fresh_env: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(fresh_env / "bin" / "orpheus-tts"), "worker", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_clean_env(),
    )
    assert result.returncode == 1
    assert "orpheus-tts[server]" in result.stderr, result.stderr
