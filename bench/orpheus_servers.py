"""The Orpheus engine on real inference code, exactly: a scripted model through every CPU backend.

The scripted tiny Llama (tests/engines/orpheus/make_tiny_models.py) speaks
known frames and then the stop token, so the engine's PCM can be compared
sample by sample with one offline SNAC decode of those frames. Measured:

1. Streamed vs offline, max error in int16 LSB and sample counts, for the
   transformers backend (unbatched and ``max_batch``), the llamacpp backend
   (llama-cpp-python in process, GGUF written with the ``gguf`` package) and
   the openai backend against llama-cpp-python's own ``llama_cpp.server``.
2. Concurrent requests against that one-slot server: per trial, each stream's
   outcome, ``complete`` (the exact audio), ``interrupted`` (the retryable
   engine error) or ``short`` (a success with missing audio: must never
   happen), with the backend's capacity at 1 (its default for llama.cpp) and
   at the number of requests.

Writes ``bench/results/orpheus_servers.json``. CPU only; nothing downloaded.

    python -m bench.orpheus_servers [--trials 5] [--concurrency 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS_DIR, machine
from orpheus_tts.audio import float_to_int16
from orpheus_tts.engines.base import validate_params
from orpheus_tts.engines.orpheus import create_orpheus_engine
from orpheus_tts.engines.orpheus.backends import GenerationInterruptedError
from orpheus_tts.engines.orpheus.backends.openai import OpenAIBackend
from orpheus_tts.engines.orpheus.codec import SAMPLES_PER_FRAME
from orpheus_tts.engines.orpheus.engine import OrpheusConfig, OrpheusEngine
from orpheus_tts.engines.orpheus.loading import load_codec

SCRIPTED_FRAMES = 8


async def speak(engine: OrpheusEngine, text: str) -> np.ndarray:
    params = validate_params(engine.param_specs(), {})
    pcm = b"".join([piece async for piece in engine.synthesize(text, "tara", params)])
    return np.frombuffer(pcm, dtype="<i2")


async def exactness(engine: OrpheusEngine, expected: np.ndarray) -> dict[str, Any]:
    await engine.start()
    try:
        pcm = await speak(engine, "Hello there.")
    finally:
        await engine.close()
    error = int(np.abs(pcm.astype(np.int32) - expected).max()) if pcm.size == expected.size else None
    return {"samples": int(pcm.size), "expected_samples": int(expected.size), "max_abs_error_lsb": error}


async def outcomes(url: str, snac: Path, expected: np.ndarray, concurrency: int, capacity: int | None) -> list[str]:
    backend = OpenAIBackend(None, base_url=url, capacity=capacity)
    engine = OrpheusEngine(backend, OrpheusConfig(), codec=load_codec(snac, "cpu"))

    async def one(i: int) -> str:
        try:
            pcm = await speak(engine, f"Request number {i}.")
        except GenerationInterruptedError:
            return "interrupted"
        exact = pcm.size == expected.size and int(np.abs(pcm.astype(np.int32) - expected).max()) <= 1
        return "complete" if exact else "short"

    await engine.start()
    try:
        return list(await asyncio.gather(*(one(i) for i in range(concurrency))))
    finally:
        await engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import llama_cpp
    from tests.engines.orpheus import make_tiny_models as models
    from tests.engines.orpheus.test_llamacpp_server import llama_server

    with tempfile.TemporaryDirectory(prefix="orpheus-servers-") as tmp:
        out = Path(tmp)
        frames = models.scripted_frames(SCRIPTED_FRAMES)
        models.build_scripted_llama(out / "llm", frames)
        gguf = models.write_gguf(out / "llm", out / "scripted-f32.gguf")
        models.build_snac(out / "snac")
        snac = out / "snac"
        audio = load_codec(snac, "cpu").decode_all(np.array(frames, dtype=np.int64))
        expected = np.frombuffer(float_to_int16(audio), dtype="<i2")
        exact: dict[str, Any] = {}
        for name, engine in (
            ("transformers", create_orpheus_engine("transformers", str(out / "llm"), snac=str(snac), device="cpu")),
            (
                "transformers max_batch=4",
                create_orpheus_engine("transformers", str(out / "llm"), snac=str(snac), device="cpu", max_batch=4),
            ),
            ("llamacpp", create_orpheus_engine("llamacpp", str(gguf), snac=str(snac), n_threads=1)),
        ):
            exact[name] = asyncio.run(exactness(engine, expected))
            print(f"{name}: {exact[name]}", flush=True)
        trials: dict[str, list[list[str]]] = {"capacity 1": [], f"capacity {args.concurrency}": []}
        with llama_server(gguf) as url:
            backend = OpenAIBackend(None, base_url=url)
            engine = OrpheusEngine(backend, OrpheusConfig(), codec=load_codec(snac, "cpu"))
            exact["openai (llama_cpp.server)"] = asyncio.run(exactness(engine, expected))
            print(f"openai: {exact['openai (llama_cpp.server)']}", flush=True)
            for _ in range(args.trials):
                for capacity in (1, args.concurrency):
                    got = asyncio.run(outcomes(url, snac, expected, args.concurrency, capacity))
                    trials[f"capacity {capacity}"].append(got)
                    print(f"capacity {capacity}: {got}", flush=True)
    results = {
        "title": "Orpheus engine on real inference code: scripted model, CPU",
        "machine": machine(),
        "llama_cpp_python": llama_cpp.__version__,
        "scripted_frames": SCRIPTED_FRAMES,
        "samples_per_frame": SAMPLES_PER_FRAME,
        "streamed_vs_offline": exact,
        "concurrency": args.concurrency,
        "llama_cpp_server_trials": trials,
        "llama_cpp_server_totals": {k: dict(Counter(o for t in v for o in t)) for k, v in trials.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "orpheus_servers.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
