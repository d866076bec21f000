"""Every example of the user guide runs against a real worker (embedded voice) and says the words."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.asr import assert_says
from tests.servers import run_server

pytestmark = pytest.mark.asr

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
STUBS = Path(__file__).resolve().parent / "stubs"
EXAMPLE_TIMEOUT_S = 240
MIN_WORD_AUDIO_BYTES = 24_000 * 2 // 5
"""A spoken word lasts at least 200 ms."""
WORD_GAP_BYTES = 24_000 * 2 * 3 // 10
"""300 ms of silence between words."""
SHORT_TEXT_MAX_WER = 0.34
"""The guide's own texts are 3 or 4 words: one misheard word (e.g. "Orpheus") is tolerated."""


def read_wav(path_or_bytes: Path | bytes) -> bytes:
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    with wave.open(source, "rb") as wf:
        assert (wf.getnchannels(), wf.getsampwidth(), wf.getframerate()) == (1, 2, 24_000)
        return wf.readframes(wf.getnframes())


def run_example(name: str, url: str, workdir: Path, *, stubs: bool = False) -> dict[str, bytes]:
    """Run ``examples/NAME`` as a script; returns {text: pcm} for every stream() it made."""
    tee = workdir / "tee"
    tee.mkdir()
    path = [str(REPO)] + ([str(STUBS)] if stubs else []) + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = {
        **os.environ,
        "ORPHEUS_URLS": url,
        "ORPHEUS_TEST_TEE_DIR": str(tee),
        "ORPHEUS_TEST_PLAYED": str(workdir / "played.pcm"),
        "PYTHONPATH": os.pathsep.join(path),
    }
    env.pop("ORPHEUS_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.sdk.run_example", str(EXAMPLES / name)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return {
        (tee / f"{pcm.stem}.txt").read_text(encoding="utf-8"): pcm.read_bytes() for pcm in sorted(tee.glob("*.pcm"))
    }


def test_quickstart_writes_a_wav_that_says_hello(embedded_worker: str, tmp_path: Path) -> None:
    streams = run_example("quickstart_wav.py", embedded_worker, tmp_path)
    pcm = read_wav(tmp_path / "hello.wav")
    assert streams == {"Hello world from Orpheus.": pcm}
    assert_says(pcm, "Hello world from Orpheus.", max_wer=SHORT_TEXT_MAX_WER)


def test_realtime_playback_plays_every_chunk(embedded_worker: str, tmp_path: Path) -> None:
    streams = run_example("realtime_playback.py", embedded_worker, tmp_path, stubs=True)
    played = (tmp_path / "played.pcm").read_bytes()
    assert streams == {"Streaming playback demo.": played}
    assert_says(played, "Streaming playback demo.", max_wer=SHORT_TEXT_MAX_WER)


def test_concurrency_synthesizes_every_text(embedded_worker: str, tmp_path: Path) -> None:
    streams = run_example("concurrency.py", embedded_worker, tmp_path)
    words = ["One", "Two", "Three", "Four"]
    assert sorted(streams) == sorted(words)
    assert all(len(pcm) >= MIN_WORD_AUDIO_BYTES for pcm in streams.values())
    # A lone short word is too little for the recognizer; listen to the four in a row.
    gap = bytes(WORD_GAP_BYTES)
    assert_says(gap.join(streams[w] for w in words), " ".join(words), max_wer=SHORT_TEXT_MAX_WER)


def test_error_handling_example(embedded_worker: str, tmp_path: Path) -> None:
    streams = run_example("error_handling.py", embedded_worker, tmp_path)
    pcm = read_wav(tmp_path / "error_handling.wav")
    ((text, streamed),) = streams.items()
    assert streamed == pcm
    assert_says(pcm, text)


def test_error_handling_example_reports_an_unreachable_service(tmp_path: Path) -> None:
    from tests.servers import free_port

    env = {**os.environ, "ORPHEUS_URLS": f"http://127.0.0.1:{free_port()}", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "error_handling.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode != 0
    assert "ConnectError" in proc.stderr
    assert not (tmp_path / "error_handling.wav").exists()


def test_batch_semaphore_writes_one_wav_per_prompt(embedded_worker: str, tmp_path: Path) -> None:
    streams = run_example("batch_semaphore.py", embedded_worker, tmp_path)
    assert len(streams) == 6
    written = {read_wav(p) for p in tmp_path.glob("batch_*.wav")}
    assert written == set(streams.values())
    gap = bytes(WORD_GAP_BYTES)
    texts = sorted(streams)
    assert_says(gap.join(streams[t] for t in texts), " ".join(texts))


def load_example_module(name: str, monkeypatch: pytest.MonkeyPatch, url: str) -> ModuleType:
    monkeypatch.setenv("ORPHEUS_URLS", url)
    monkeypatch.delenv("ORPHEUS_KEY", raising=False)
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fastapi_proxy(embedded_worker: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    module = load_example_module("fastapi_proxy", monkeypatch, embedded_worker)
    with run_server(module.app) as url:
        yield url


@pytest.fixture
def app_skeleton(embedded_worker: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    module = load_example_module("app_skeleton", monkeypatch, embedded_worker)
    with run_server(module.app) as url:
        yield url


async def test_fastapi_proxy_streams_speech(fastapi_proxy: str) -> None:
    text = "The proxy sends the audio straight to the browser while the voice is still speaking."
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.get(f"{fastapi_proxy}/speak", params={"q": text})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert_says(response.content, text)


async def test_app_skeleton_answers_a_wav(app_skeleton: str) -> None:
    text = "The answer comes back as one complete file that any music player can open."
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.get(f"{app_skeleton}/v1/tts.wav", params={"q": text})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert_says(read_wav(response.content), text)


def test_llm_realtime_speaks_the_answer_as_it_is_written(embedded_worker: str, tmp_path: Path) -> None:
    run_example("llm_realtime.py", embedded_worker, tmp_path)
    pcm = read_wav(tmp_path / "llm_answer.wav")
    module_text = (EXAMPLES / "llm_realtime.py").read_text(encoding="utf-8")
    answer = " ".join(line.strip().strip('"') for line in module_text.split("ANSWER = (")[1].split(")")[0].splitlines())
    assert_says(pcm, answer.strip())
