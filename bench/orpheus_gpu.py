"""Orpheus on a GPU: LLM token rate under concurrency, time to first audio, SNAC decode batching.

Random weights of the real Orpheus 3B shape (Llama 3.2 3B: hidden 3072, 28
layers, 24 heads / 8 KV heads, vocabulary 156 940) and of the real SNAC 24 kHz
decoder (19.8 M parameters) are built on the GPU; nothing is downloaded.
Random weights generate the same amount of work per token as trained ones,
which is what is measured here, but never produce speech.

1. Tokens/s at 1, 8, 32, 64, 128 concurrent streams with the fastest installed
   backend (vllm, else transformers): per-stream rate (tokens after the first ÷
   time from first to last token), aggregate rate, and how many streams keep
   up with real time (>= 82.03 tokens/s, 7 tokens per 85.33 ms frame).
2. Time to first audio per stream, estimated as the arrival of the 28th token
   (4 frames: the first frame plus its 3 frames of right context) plus the
   measured latency of decoding one first window.
3. SNAC decode throughput, windows of all streams batched into one call vs one
   call per window, at 1, 16 and 64 streams (audio frames decoded per second
   and the ratio batched / per-window, measured in the same run).
4. Streaming-vs-offline equivalence of the decoder: max abs difference against
   the context (frames left/right) of the windows.

Writes ``bench/results/orpheus_gpu.json`` and ``.png``. Without a CUDA GPU it
prints "skipped: no CUDA GPU" and exits 0, unless ``--smoke`` asks for a
reduced CPU run with tiny models (written as ``orpheus_gpu_smoke.*``).

    python -m bench.orpheus_gpu [--backend auto|vllm|transformers] [--tokens 512]
    python -m bench.orpheus_gpu --smoke [--out DIR] [--full-snac]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS_DIR, machine, pyplot
from orpheus_tts.engines.orpheus.backends import TokenBackend, create_backend
from orpheus_tts.engines.orpheus.codec import SAMPLES_PER_FRAME, SnacCodec
from orpheus_tts.engines.orpheus.decoder import DecodeBatcher, StreamWindows, Window, WindowSettings
from orpheus_tts.engines.orpheus.prompt import TOKENS_PER_AUDIO_S, SamplingParams, build_prompt

REAL_TIME_TOKENS_PER_S = TOKENS_PER_AUDIO_S
FIRST_AUDIO_TOKENS = 28
"""Tokens before the first window can be decoded: frame 0 and 3 frames of right context."""
GPU_CONCURRENCY = (1, 8, 32, 64, 128)
GPU_DECODE_STREAMS = (1, 16, 64)
SMOKE_CONCURRENCY = (1, 2)
SMOKE_DECODE_STREAMS = (1, 4)
DECODE_REPEATS = 5
CONTEXTS = ((1, 2), (2, 2), (3, 2), (2, 3), (3, 3), (4, 4))
PROMPT_TEXT = "Hey there, this is a benchmark sentence about the weather and a cup of tea."


def build_models(out: Path, smoke: bool, full_snac: bool) -> tuple[Path, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.engines.orpheus import make_tiny_models as models

    llm, snac = out / "llm", out / "snac"
    llm.mkdir(parents=True, exist_ok=True)
    if smoke:
        models.build_llama(llm)
    else:
        models.build_llama(llm, models.ORPHEUS_3B_LLAMA, device="cuda")
    models.build_tokenizer(llm)
    models.build_snac(snac, full=full_snac or not smoke)
    return llm, snac


def pick_backend(requested: str, smoke: bool) -> str:
    if requested != "auto":
        return requested
    if smoke:
        return "transformers"
    import importlib.util

    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def make_backend(name: str, llm: Path, smoke: bool) -> TokenBackend:
    if name == "vllm":
        return create_backend("vllm", str(llm), max_model_len=4096, max_num_seqs=max(GPU_CONCURRENCY))
    return create_backend("transformers", str(llm), device="cpu" if smoke else "cuda")


async def one_stream(backend: TokenBackend, prompt: Any, sampling: SamplingParams) -> dict[str, float]:
    started = time.perf_counter()
    arrivals: list[float] = []
    async for ids in backend.generate(prompt, sampling):
        now = time.perf_counter() - started
        arrivals += [now] * len(ids)
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 and arrivals[-1] > arrivals[0] else 0
    return {
        "tokens": float(len(arrivals)),
        "first_token_s": arrivals[0] if arrivals else float("nan"),
        "first_audio_tokens_s": arrivals[FIRST_AUDIO_TOKENS - 1]
        if len(arrivals) >= FIRST_AUDIO_TOKENS
        else float("nan"),
        "tokens_per_s": rate,
        "wall_s": arrivals[-1] if arrivals else 0.0,
    }


async def llm_phase(backend: TokenBackend, levels: tuple[int, ...], tokens: int) -> list[dict[str, Any]]:
    await backend.start()
    try:
        encoder = backend.encoder()
        prompt = build_prompt("tara", PROMPT_TEXT, encoder)
        # No stop token: random weights would stop at random; every stream generates exactly ``tokens``.
        sampling = SamplingParams(max_tokens=tokens, stop_token_ids=(), seed=None)
        await one_stream(backend, prompt, SamplingParams(max_tokens=8, stop_token_ids=()))  # warm-up
        rows = []
        for concurrency in levels:
            started = time.perf_counter()
            streams = await asyncio.gather(*(one_stream(backend, prompt, sampling) for _ in range(concurrency)))
            wall = time.perf_counter() - started
            rates = [s["tokens_per_s"] for s in streams]
            rows.append(
                {
                    "concurrency": concurrency,
                    "tokens_per_stream": tokens,
                    "per_stream_tokens_per_s_median": statistics.median(rates),
                    "per_stream_tokens_per_s_min": min(rates),
                    "aggregate_tokens_per_s": sum(s["tokens"] for s in streams) / wall,
                    "streams_at_real_time": sum(r >= REAL_TIME_TOKENS_PER_S for r in rates),
                    "real_time_factor_median": statistics.median(rates) / REAL_TIME_TOKENS_PER_S,
                    "first_token_s_median": statistics.median(s["first_token_s"] for s in streams),
                    "first_audio_tokens_s_median": statistics.median(s["first_audio_tokens_s"] for s in streams),
                    "first_audio_tokens_s_max": max(s["first_audio_tokens_s"] for s in streams),
                }
            )
            print(
                f"  {concurrency:4d} streams: {rows[-1]['per_stream_tokens_per_s_median']:8.1f} tok/s per stream "
                f"({rows[-1]['real_time_factor_median']:.2f}x real time), "
                f"{rows[-1]['aggregate_tokens_per_s']:9.1f} tok/s total, "
                f"{rows[-1]['streams_at_real_time']}/{concurrency} at >= 82 tok/s",
                flush=True,
            )
        return rows
    finally:
        await backend.close()


def steady_windows(streams: int, frames_per_window: int, seed: int) -> list[Window]:
    """One steady-state window per stream: 3 + k + 3 frames, k emitted."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(streams):
        plan = StreamWindows(WindowSettings(max_frames_per_window=frames_per_window))
        plan.push([tuple(int(c) for c in f) for f in rng.integers(0, 4096, size=(40, 7))])
        out.append([w for w in plan.ready() if w.length == 6 + frames_per_window][-1])
    return out


def decode_phase(codec: SnacCodec, levels: tuple[int, ...]) -> list[dict[str, Any]]:
    batcher = DecodeBatcher(codec)
    batcher.decode_now(steady_windows(2, 1, 0))  # warm-up
    rows = []
    for frames_per_window in (1, 4):
        for streams in levels:
            windows = steady_windows(streams, frames_per_window, streams)
            emitted = sum(w.emit_frames for w in windows)
            timings = {}
            for mode in ("per_window", "batched"):
                best = float("inf")
                for _ in range(DECODE_REPEATS):
                    started = time.perf_counter()
                    if mode == "batched":
                        batcher.decode_now(windows)
                    else:
                        for window in windows:
                            batcher.decode_now([window])
                    best = min(best, time.perf_counter() - started)
                timings[mode] = best
            row = {
                "streams": streams,
                "frames_per_window": frames_per_window,
                "window_frames": windows[0].length,
                "per_window_s": timings["per_window"],
                "batched_s": timings["batched"],
                "per_window_frames_per_s": emitted / timings["per_window"],
                "batched_frames_per_s": emitted / timings["batched"],
                "batched_speedup": timings["per_window"] / timings["batched"],
                "batched_real_time_streams": emitted / timings["batched"] / (24_000 / SAMPLES_PER_FRAME),
                "first_window_latency_s": timings["batched"] if streams == 1 else None,
            }
            rows.append(row)
            print(
                f"  SNAC {streams:3d} streams x {frames_per_window} frame(s)/window: "
                f"per-window {row['per_window_frames_per_s']:9.1f} frames/s, "
                f"batched {row['batched_frames_per_s']:9.1f} frames/s ({row['batched_speedup']:.2f}x)",
                flush=True,
            )
    return rows


def equivalence_phase(codec: SnacCodec, frames: int = 16) -> list[dict[str, Any]]:
    rng = np.random.default_rng(42)
    codes = rng.integers(0, 4096, size=(frames, 7), dtype=np.int64)
    offline = codec.decode_all(codes)
    rows = []
    for left, right in CONTEXTS:
        plan = StreamWindows(WindowSettings(left, right, max_frames_per_window=1))
        windows = []
        for frame in codes.tolist():
            plan.push([tuple(frame)])
            windows += plan.ready()
        windows += plan.ready(final=True)
        streamed = np.concatenate(DecodeBatcher(codec).decode_now(windows))
        rows.append({"left": left, "right": right, "max_abs_error": float(np.abs(streamed - offline).max())})
        print(f"  context {left} left / {right} right: max |streamed - offline| = {rows[-1]['max_abs_error']:.2e}")
    return rows


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    llm = results["llm"]
    if llm:
        c = [r["concurrency"] for r in llm]
        axes[0].plot(c, [r["per_stream_tokens_per_s_median"] for r in llm], "o-", label="per stream (median)")
        axes[0].axhline(REAL_TIME_TOKENS_PER_S, color="red", linestyle="--", label="real time (82 tok/s)")
        ax2 = axes[0].twinx()
        ax2.plot(c, [r["aggregate_tokens_per_s"] for r in llm], "s--", color="gray", label="aggregate")
        ax2.set_ylabel("aggregate tokens/s")
        axes[0].set_xscale("log", base=2)
        axes[0].set_xlabel("concurrent streams")
        axes[0].set_ylabel("tokens/s per stream")
        axes[0].set_title(f"LLM ({results['backend']})")
        axes[0].legend(loc="lower left")
        ttfa = results["time_to_first_audio"]
        axes[1].plot(c, [t["median_s"] * 1000 for t in ttfa], "o-", label="median")
        axes[1].plot(c, [t["max_s"] * 1000 for t in ttfa], "s--", label="max")
        axes[1].set_xscale("log", base=2)
        axes[1].set_xlabel("concurrent streams")
        axes[1].set_ylabel("ms")
        axes[1].set_title("time to first audio (28th token + first window decode)")
        axes[1].legend()
    dec = [r for r in results["snac_decode"] if r["frames_per_window"] == 1]
    s = [r["streams"] for r in dec]
    axes[2].plot(s, [r["per_window_frames_per_s"] for r in dec], "o-", label="one call per window")
    axes[2].plot(s, [r["batched_frames_per_s"] for r in dec], "s-", label="batched")
    axes[2].set_xscale("log", base=2)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("streams (one 7-frame window each)")
    axes[2].set_ylabel("audio frames decoded per second")
    axes[2].set_title("SNAC decode")
    axes[2].legend()
    fig.suptitle(results["title"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="reduced CPU run with tiny models")
    parser.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per stream (default 512, smoke 35)")
    parser.add_argument("--full-snac", action="store_true", help="smoke: SNAC at its real width")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON and PNG")
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("skipped: no CUDA GPU (run with --smoke for a reduced CPU version)")
        return 0
    smoke = args.smoke
    backend_name = pick_backend(args.backend, smoke)
    tokens = args.tokens or (35 if smoke else 512)
    levels = SMOKE_CONCURRENCY if smoke else GPU_CONCURRENCY
    decode_levels = SMOKE_DECODE_STREAMS if smoke else GPU_DECODE_STREAMS
    device = "cuda" if cuda and not smoke else "cpu"
    name = "orpheus_gpu_smoke" if smoke else "orpheus_gpu"
    with tempfile.TemporaryDirectory(prefix="orpheus-bench-") as tmp:
        print(f"building random-weight models ({'tiny' if smoke else 'Orpheus 3B shape'}) ...", flush=True)
        llm, snac_dir = build_models(Path(tmp), smoke, args.full_snac)
        from orpheus_tts.engines.orpheus.loading import load_codec

        codec = load_codec(snac_dir, device)
        print("decoder equivalence (streamed vs offline):", flush=True)
        equivalence = equivalence_phase(codec)
        print("SNAC decode throughput:", flush=True)
        decode = decode_phase(codec, decode_levels)
        print(f"LLM tokens/s with the {backend_name} backend:", flush=True)
        backend_error = None
        try:
            llm_rows = asyncio.run(llm_phase(make_backend(backend_name, llm, smoke), levels, tokens))
        except Exception as exc:
            if backend_name == "transformers":
                raise
            backend_error = f"{backend_name}: {exc!r}"
            print(f"  {backend_error}; falling back to transformers", flush=True)
            backend_name = "transformers"
            llm_rows = asyncio.run(llm_phase(make_backend(backend_name, llm, smoke), levels, tokens))
    first_window_s = next(r["batched_s"] for r in decode if r["streams"] == 1 and r["frames_per_window"] == 1)
    ttfa = [
        {
            "concurrency": r["concurrency"],
            "median_s": r["first_audio_tokens_s_median"] + first_window_s,
            "max_s": r["first_audio_tokens_s_max"] + first_window_s,
        }
        for r in llm_rows
    ]
    results = {
        "title": f"Orpheus {'smoke (CPU, tiny models)' if smoke else 'GPU'}: "
        f"{torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU'}",
        "machine": machine(),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "smoke": smoke,
        "backend": backend_name,
        "backend_fallback_reason": backend_error,
        "tokens_per_stream": tokens,
        "real_time_tokens_per_s": REAL_TIME_TOKENS_PER_S,
        "llm": llm_rows,
        "time_to_first_audio": ttfa,
        "snac_decode": decode,
        "decoder_equivalence": equivalence,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{name}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    png_path = args.out / f"{name}.png"
    plot(results, png_path)
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
