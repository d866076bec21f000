"""Embedded engine: time to first audio and real-time factor, direct vs served over HTTP.

For a short sentence and a 5-sentence paragraph, the same engine is timed
(a) called directly and (b) behind a worker (uvicorn on loopback, in a thread
of this process) streamed with httpx and decoded with the protocol's
FrameDecoder. Runs are interleaved so machine noise hits both alike, and each
pair uses the same seed, so the served audio must equal the direct audio.

Prints the served/direct ratios of the medians and paragraph/short TTFA, and
writes ``bench/results/engine.json`` and ``bench/results/engine.png``.

    python -m bench.engine [--reps 10] [--warmup 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import machine, percentile, pyplot, save_figure, summary, write_json
from orpheus_tts.engines.embedded import VOICE_ID, PiperEngine
from orpheus_tts.engines.text import split_segments
from orpheus_tts.protocol import (
    SAMPLE_RATE_HZ,
    SAMPLE_WIDTH_BYTES,
    ChunkFrame,
    EosFrame,
    ErrorFrame,
    FrameDecoder,
)
from orpheus_tts.serving.local import ThreadedServer
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig

TEXTS = {
    "short": "The quick brown fox jumps over the lazy dog.",
    "paragraph": (
        "Our train leaves early in the morning. Bring a warm jacket and some water. "
        "The mountains are cold even in summer. We will walk along the river for a while. "
        "Then we will come back before dinner."
    ),
}
PATHS = ("direct", "served")
TARGET_SERVED_TTFA_RATIO = 1.2
TARGET_SERVED_RTF_RATIO = 1.1
TARGET_PARAGRAPH_TTFA_RATIO = 1.2
REQUEST_TIMEOUT_S = 60.0


@dataclass
class Run:
    """One timed synthesis."""

    ttfa_s: float
    """Seconds from the call (or the POST) to the first audio chunk."""
    total_s: float
    """Seconds until the last chunk (direct) or the eos frame (served)."""
    audio_s: float
    """Seconds of audio received."""
    pcm: bytes

    @property
    def rtf(self) -> float:
        return self.total_s / self.audio_s


async def run_direct(engine: PiperEngine, text: str, seed: int) -> Run:
    chunks: list[bytes] = []
    ttfa = None
    start = time.perf_counter()
    async for chunk in engine.synthesize(text, VOICE_ID, {"seed": seed}):
        if ttfa is None:
            ttfa = time.perf_counter() - start
        chunks.append(chunk)
    total = time.perf_counter() - start
    pcm = b"".join(chunks)
    if ttfa is None:
        raise RuntimeError("the engine yielded no audio")
    return Run(ttfa, total, len(pcm) / (SAMPLE_WIDTH_BYTES * SAMPLE_RATE_HZ), pcm)


async def run_served(client: httpx.AsyncClient, url: str, text: str, seed: int) -> Run:
    decoder = FrameDecoder()
    chunks: list[bytes] = []
    ttfa = None
    ended = False
    start = time.perf_counter()
    body = {"text": text, "voice": VOICE_ID, "seed": seed}
    async with client.stream("POST", f"{url}/v1/tts/stream", json=body) as response:
        response.raise_for_status()
        async for data in response.aiter_raw():
            for frame in decoder.feed(data):
                if isinstance(frame, ChunkFrame):
                    if ttfa is None:
                        ttfa = time.perf_counter() - start
                    chunks.append(frame.pcm)
                elif isinstance(frame, ErrorFrame):
                    raise RuntimeError(f"stream failed: {frame.code}: {frame.message}")
                elif isinstance(frame, EosFrame):
                    ended = True
    total = time.perf_counter() - start
    if not ended or ttfa is None:
        raise RuntimeError("the stream ended without eos or without audio")
    pcm = b"".join(chunks)
    return Run(ttfa, total, len(pcm) / (SAMPLE_WIDTH_BYTES * SAMPLE_RATE_HZ), pcm)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


async def measure(reps: int, warmup: int, capacity: int | None) -> dict[str, Any]:
    engine = PiperEngine(capacity=capacity)
    runs: dict[str, dict[str, list[Run]]] = {name: {path: [] for path in PATHS} for name in TEXTS}
    identical = True
    # The worker's lifespan starts the engine; the direct path shares the same loaded engine.
    with ThreadedServer(create_app(engine, WorkerConfig())) as server:
        await engine.start()
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
            for rep in range(warmup + reps):
                for name, text in TEXTS.items():
                    seed = rep
                    # Alternate which path goes first so neither always runs on a warmer cache.
                    if rep % 2:
                        served = await run_served(client, server.url, text, seed)
                        direct = await run_direct(engine, text, seed)
                    else:
                        direct = await run_direct(engine, text, seed)
                        served = await run_served(client, server.url, text, seed)
                    identical &= direct.pcm == served.pcm
                    if rep >= warmup:
                        runs[name]["direct"].append(direct)
                        runs[name]["served"].append(served)
    return {"runs": runs, "audio_identical": identical, "engine": engine}


def report(result: dict[str, Any], reps: int, warmup: int) -> dict[str, Any]:
    runs: dict[str, dict[str, list[Run]]] = result["runs"]
    engine: PiperEngine = result["engine"]
    stats: dict[str, Any] = {}
    for name, by_path in runs.items():
        stats[name] = {
            path: {
                "ttfa_ms": summary([r.ttfa_s * 1000 for r in rs]),
                "rtf": summary([r.rtf for r in rs]),
                "audio_s": rs[0].audio_s,
                "total_ms": summary([r.total_s * 1000 for r in rs]),
            }
            for path, rs in by_path.items()
        }
        stats[name]["segments"] = len(split_segments(TEXTS[name]))
        stats[name]["first_segment_chars"] = len(split_segments(TEXTS[name])[0])

    def med(name: str, path: str, key: str) -> float:
        return float(stats[name][path][key]["median"])

    ratios = {
        f"{name}_served_over_direct_{key}": _ratio(med(name, "served", key), med(name, "direct", key))
        for name in TEXTS
        for key in ("ttfa_ms", "rtf")
    }
    # Paired: each served run over the direct run next to it, then the median (robust to load drift).
    for name in TEXTS:
        pairs = list(zip(runs[name]["direct"], runs[name]["served"], strict=True))
        ratios[f"{name}_served_over_direct_ttfa_paired"] = percentile([s.ttfa_s / d.ttfa_s for d, s in pairs], 50)
        ratios[f"{name}_served_over_direct_rtf_paired"] = percentile([s.rtf / d.rtf for d, s in pairs], 50)
    for path in PATHS:
        ratios[f"{path}_paragraph_over_short_ttfa"] = _ratio(
            med("paragraph", path, "ttfa_ms"), med("short", path, "ttfa_ms")
        )
    targets = {
        "served_ttfa_ratio_max": TARGET_SERVED_TTFA_RATIO,
        "served_rtf_ratio_max": TARGET_SERVED_RTF_RATIO,
        "paragraph_ttfa_ratio_max": TARGET_PARAGRAPH_TTFA_RATIO,
    }
    met = {
        "served_ttfa": all(ratios[f"{n}_served_over_direct_ttfa_paired"] <= TARGET_SERVED_TTFA_RATIO for n in TEXTS),
        "served_rtf": all(ratios[f"{n}_served_over_direct_rtf_paired"] <= TARGET_SERVED_RTF_RATIO for n in TEXTS),
        "paragraph_ttfa": all(ratios[f"{p}_paragraph_over_short_ttfa"] <= TARGET_PARAGRAPH_TTFA_RATIO for p in PATHS),
    }
    return {
        "benchmark": "engine",
        "engine": {
            "name": engine.name,
            "voice": VOICE_ID,
            "capacity": engine.capacity,
            "intra_op_threads": engine.intra_op_threads,
        },
        "reps": reps,
        "warmup": warmup,
        "texts": TEXTS,
        "served_audio_identical_to_direct": result["audio_identical"],
        "stats": stats,
        "ratios": ratios,
        "targets": targets,
        "targets_met": met,
        "machine": machine(),
        "notes": "served = uvicorn worker in a thread of the benchmark process, loopback HTTP, httpx client",
    }


def plot(data: dict[str, Any]) -> None:
    plt = pyplot()
    fig, (ax_ttfa, ax_rtf) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(TEXTS)
    width = 0.38
    for i, path in enumerate(PATHS):
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        for ax, key in ((ax_ttfa, "ttfa_ms"), (ax_rtf, "rtf")):
            s = [data["stats"][n][path][key] for n in names]
            med = [v["median"] for v in s]
            err = [
                [m - v["p10"] for m, v in zip(med, s, strict=True)],
                [v["p90"] - m for m, v in zip(med, s, strict=True)],
            ]
            ax.bar(xs, med, width, yerr=err, capsize=4, label=path)
    ax_ttfa.set_title("Time to first audio (median, p10-p90)")
    ax_ttfa.set_ylabel("ms")
    ax_rtf.set_title("Real-time factor (compute / audio; lower is faster)")
    for ax in (ax_ttfa, ax_rtf):
        ax.set_xticks(range(len(names)), names)
        ax.legend()
    fig.suptitle(f"Embedded engine ({data['engine']['voice']}), {data['reps']} runs each")
    save_figure(fig, "engine")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=10, help="measured runs per text and path")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured runs first")
    parser.add_argument("--capacity", type=int, default=None, help="engine threads (default: engine's)")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.reps, args.warmup, args.capacity))
    data = report(result, args.reps, args.warmup)
    path = write_json("engine", data)
    plot(data)
    for name in TEXTS:
        for path_name in PATHS:
            s = data["stats"][name][path_name]
            print(
                f"{name:9s} {path_name:6s} TTFA median {s['ttfa_ms']['median']:7.1f} ms "
                f"(p90 {s['ttfa_ms']['p90']:7.1f})  RTF median {s['rtf']['median']:.4f}  "
                f"audio {s['audio_s']:.2f} s"
            )
    for key, value in data["ratios"].items():
        print(f"{key:40s} {value:.3f}")
    print(f"served audio identical to direct: {data['served_audio_identical_to_direct']}")
    print(f"targets met: {data['targets_met']}")
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
