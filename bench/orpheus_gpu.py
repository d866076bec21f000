"""Orpheus on a GPU: LLM token rate under concurrency, time to first audio, SNAC decode batching.

Random weights of the real Orpheus 3B shape (Llama 3.2 3B: hidden 3072, 28
layers, 24 heads / 8 KV heads, vocabulary 156 940) and of the real SNAC 24 kHz
decoder (19.8 M parameters) are built on the GPU; nothing is downloaded.
Random weights generate the same amount of work per token as trained ones,
which is what is measured here, but never produce speech. Sized to finish
within 8 minutes from a cold start on one H100/H200-class GPU (``--budget-s``
stops starting new levels when time runs short, saying which were skipped).

1. Decoder equivalence, with TF32 off: streamed windows vs one offline decode
   at several contexts, and batched vs per-window decoding of the same windows.
2. SNAC decode throughput: all streams' windows in one call vs one call per
   window, at 1, 16 and 64 streams (frames/s and the ratio, same run).
3. LLM tokens/s at each ``--levels`` concurrency with the chosen backend
   (``transformers`` batches every active stream into one forward step,
   ``max_batch`` = the largest level; ``vllm`` where installed): every
   stream has its own prompt and ignores the stop token, so each generates
   exactly ``--tokens`` tokens; per-stream rate (tokens after the first ÷ time
   from first to last), aggregate rate, streams at >= 82.03 tokens/s (real
   time: 7 tokens per 85.33 ms frame). ``--max-total-tokens`` bounds the sum
   over levels (tokens per stream are reduced to fit).
4. Time to first audio through the engine (prompt, backend, frame parser,
   streaming SNAC decoder, crossfader): concurrent ``synthesize`` calls with
   distinct texts, time until each yields its first PCM bytes. The
   transformers backend's audio-token grammar makes random weights emit valid
   frames; a vLLM run has no grammar, so there it is not measured.

Writes ``orpheus_gpu.json`` and ``.png`` to ``--out`` (default
``bench/results``). Without a CUDA GPU it prints "skipped: no CUDA GPU" and
exits 0, unless ``--smoke`` asks for a reduced CPU run with tiny models
(written as ``orpheus_gpu_smoke.*``). ``bench/gpu_check.sh`` runs it on a GPU
machine in one go.

    python -m bench.orpheus_gpu [--backend auto|vllm|transformers] [--levels 1,8,32,64,128] [--tokens 256]
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS_DIR, machine, pyplot
from orpheus_tts.engines.base import validate_params
from orpheus_tts.engines.orpheus.backends import TokenBackend, create_backend
from orpheus_tts.engines.orpheus.codec import SAMPLES_PER_FRAME, SnacCodec
from orpheus_tts.engines.orpheus.decoder import DecodeBatcher, StreamWindows, Window, WindowSettings
from orpheus_tts.engines.orpheus.engine import OrpheusConfig, OrpheusEngine
from orpheus_tts.engines.orpheus.prompt import TOKENS_PER_AUDIO_S, SamplingParams, build_prompt

REAL_TIME_TOKENS_PER_S = TOKENS_PER_AUDIO_S
GPU_LEVELS = (1, 8, 32, 64, 128)
GPU_TOKENS = 256
GPU_MAX_TOTAL_TOKENS = 80_000
"""Bound on tokens generated over all levels (sum of level x tokens per stream)."""
GPU_DECODE_STREAMS = (1, 16, 64)
GPU_TTFA_TOKENS = 70
"""Tokens per stream in the time-to-first-audio phase (10 frames: first audio comes after 4)."""
GPU_BUDGET_S = 420.0
SMOKE_LEVELS = (1, 2)
SMOKE_TOKENS = 35
SMOKE_DECODE_STREAMS = (1, 4)
SMOKE_TTFA_TOKENS = 35
DECODE_REPEATS = 5
SMOKE_DECODE_REPEATS = 2
CONTEXTS = ((1, 2), (2, 2), (3, 2), (2, 3), (3, 3), (4, 4))
TOPICS = (
    "the weather over the harbour",
    "a cup of tea at four",
    "the train that left early",
    "numbers like 42 and 1999",
    "a quiet walk in the park",
    "the recipe for bread",
    "why the sky looks blue",
    "a meeting moved to Friday",
)


def stream_text(i: int) -> str:
    """A distinct text per stream (different words and lengths), so no prompt cache is shared."""
    topic = TOPICS[i % len(TOPICS)]
    return f"Stream {i}: let me tell you about {topic}, part {i // len(TOPICS) + 1}." + " Really." * (i % 3)


def fit_tokens(levels: Sequence[int], tokens: int, max_total: int) -> int:
    """Tokens per stream, reduced (to whole frames, at least 4) so that all levels generate <= ``max_total``."""
    total = sum(levels) * tokens
    if total <= max_total:
        return tokens
    return max(28, max_total // sum(levels) // 7 * 7)


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


def make_backend(name: str, llm: Path, smoke: bool, max_batch: int) -> TokenBackend:
    if name == "vllm":
        return create_backend("vllm", str(llm), max_model_len=4096, max_num_seqs=max_batch)
    return create_backend(
        "transformers",
        str(llm),
        device="cpu" if smoke else "cuda",
        constrain_audio_tokens=True,  # valid frames from random weights, for the engine phase
        max_batch=max_batch,
    )


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
        "tokens_per_s": rate,
        "wall_s": arrivals[-1] if arrivals else 0.0,
    }


async def llm_phase(
    backend: TokenBackend, levels: Sequence[int], tokens: int, deadline: float
) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows per level, and the levels skipped for lack of time."""
    encoder = backend.encoder()
    # No stop token: random weights would stop at random; every stream generates exactly ``tokens``.
    sampling = SamplingParams(max_tokens=tokens, stop_token_ids=(), seed=None)
    await one_stream(
        backend, build_prompt("tara", "Warm-up.", encoder), SamplingParams(max_tokens=8, stop_token_ids=())
    )
    rows: list[dict[str, Any]] = []
    skipped: list[int] = []
    for concurrency in levels:
        if time.monotonic() > deadline:
            skipped.append(concurrency)
            continue
        prompts = [build_prompt("tara", stream_text(i), encoder) for i in range(concurrency)]
        stepper = getattr(backend, "stepper", None)
        steps_before = stepper.steps if stepper is not None else 0
        if stepper is not None:
            stepper.max_rows = 0
        started = time.perf_counter()
        streams = await asyncio.gather(*(one_stream(backend, p, sampling) for p in prompts))
        wall = time.perf_counter() - started
        rates = [s["tokens_per_s"] for s in streams]
        rows.append(
            {
                "concurrency": concurrency,
                "tokens_per_stream": tokens,
                "tokens_generated": sum(s["tokens"] for s in streams),
                "distinct_prompts": len({p.ids for p in prompts}),
                "per_stream_tokens_per_s_median": statistics.median(rates),
                "per_stream_tokens_per_s_min": min(rates),
                "aggregate_tokens_per_s": sum(s["tokens"] for s in streams) / wall,
                "streams_at_real_time": sum(r >= REAL_TIME_TOKENS_PER_S for r in rates),
                "real_time_factor_median": statistics.median(rates) / REAL_TIME_TOKENS_PER_S,
                "first_token_s_median": statistics.median(s["first_token_s"] for s in streams),
                "batch_steps": (stepper.steps - steps_before) if stepper is not None else None,
                "batch_rows_max": stepper.max_rows if stepper is not None else None,
                "wall_s": wall,
            }
        )
        print(
            f"  {concurrency:4d} streams: {rows[-1]['per_stream_tokens_per_s_median']:8.1f} tok/s per stream "
            f"({rows[-1]['real_time_factor_median']:.2f}x real time), "
            f"{rows[-1]['aggregate_tokens_per_s']:9.1f} tok/s total, "
            f"{rows[-1]['streams_at_real_time']}/{concurrency} at >= 82 tok/s",
            flush=True,
        )
    return rows, skipped


async def ttfa_phase(
    backend: TokenBackend, codec: SnacCodec, levels: Sequence[int], tokens: int, deadline: float
) -> tuple[list[dict[str, Any]], list[int]]:
    """Time to first audio through the whole engine, per level of concurrent requests."""
    engine = OrpheusEngine(backend, OrpheusConfig(capacity=max(levels)), codec=codec)
    await engine.start()
    rows: list[dict[str, Any]] = []
    skipped: list[int] = []
    try:
        params = validate_params(engine.param_specs(), {"max_tokens": tokens})

        async def first_audio(i: int) -> dict[str, float]:
            started = time.perf_counter()
            first = float("nan")
            samples = 0
            async for piece in engine.synthesize(stream_text(i), "tara", params):
                if not samples:
                    first = time.perf_counter() - started
                samples += len(piece) // 2
            return {"first_audio_s": first, "samples": float(samples)}

        await first_audio(0)  # warm-up
        for concurrency in levels:
            if time.monotonic() > deadline:
                skipped.append(concurrency)
                continue
            results = await asyncio.gather(*(first_audio(i) for i in range(concurrency)))
            firsts = [r["first_audio_s"] for r in results if r["samples"]]
            rows.append(
                {
                    "concurrency": concurrency,
                    "streams_with_audio": len(firsts),
                    "median_s": statistics.median(firsts) if firsts else float("nan"),
                    "max_s": max(firsts) if firsts else float("nan"),
                    "tokens_per_stream": tokens,
                }
            )
            print(
                f"  {concurrency:4d} streams: first audio median {rows[-1]['median_s'] * 1000:7.1f} ms, "
                f"max {rows[-1]['max_s'] * 1000:7.1f} ms",
                flush=True,
            )
    finally:
        await engine.close()
    return rows, skipped


def steady_windows(streams: int, frames_per_window: int, seed: int) -> list[Window]:
    """One steady-state window per stream: 3 + k + 3 frames, k emitted."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(streams):
        plan = StreamWindows(WindowSettings(max_frames_per_window=frames_per_window))
        plan.push([tuple(int(c) for c in f) for f in rng.integers(0, 4096, size=(40, 7))])
        out.append([w for w in plan.ready() if w.length == 6 + frames_per_window][-1])
    return out


def decode_phase(codec: SnacCodec, levels: tuple[int, ...], repeats: int = DECODE_REPEATS) -> list[dict[str, Any]]:
    batcher = DecodeBatcher(codec)
    batcher.decode_now(steady_windows(2, 1, 0))  # warm-up
    rows = []
    for frames_per_window in (1, 4):
        for streams in levels:
            windows = steady_windows(streams, frames_per_window, streams)
            emitted = sum(w.emit_frames for w in windows)
            timings = {}
            with tf32(False):
                batched_out = batcher.decode_now(windows)
                single_out = [batcher.decode_now([w])[0] for w in windows]
            mismatch = max(float(np.abs(b - o).max()) for b, o in zip(batched_out, single_out, strict=True))
            for mode in ("per_window", "batched"):
                best = float("inf")
                for _ in range(repeats):
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
                "batched_vs_per_window_max_abs_error": mismatch,
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


class tf32:
    """TF32 matmuls and convolutions on (``True``) or off (``False``) inside the block."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.saved: tuple[bool, bool] = (False, False)

    def __enter__(self) -> None:
        import torch

        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.enabled
        torch.backends.cudnn.allow_tf32 = self.enabled

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def equivalence_phase(codec: SnacCodec, frames: int = 16) -> list[dict[str, Any]]:
    with tf32(False):
        return _equivalence(codec, frames)


def _equivalence(codec: SnacCodec, frames: int) -> list[dict[str, Any]]:
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
        tc = [t["concurrency"] for t in ttfa]
        axes[1].plot(tc, [t["median_s"] * 1000 for t in ttfa], "o-", label="median")
        axes[1].plot(tc, [t["max_s"] * 1000 for t in ttfa], "s--", label="max")
        axes[1].set_xscale("log", base=2)
        axes[1].set_xlabel("concurrent streams")
        axes[1].set_ylabel("ms")
        axes[1].set_title("time to first audio through the engine")
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


def parse_levels(text: str) -> tuple[int, ...]:
    levels = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError(f"levels are positive integers, got {text!r}")
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="reduced CPU run with tiny models")
    parser.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto")
    parser.add_argument(
        "--levels", type=parse_levels, default=None, help="concurrent streams per level (1,8,32,64,128)"
    )
    parser.add_argument("--tokens", type=int, default=None, help=f"tokens per stream (default {GPU_TOKENS}, smoke 35)")
    parser.add_argument(
        "--max-total-tokens", type=int, default=GPU_MAX_TOTAL_TOKENS, help="bound on tokens over all levels"
    )
    parser.add_argument("--ttfa-tokens", type=int, default=None, help="tokens per stream in the first-audio phase")
    parser.add_argument("--budget-s", type=float, default=GPU_BUDGET_S, help="start no new level after this long")
    parser.add_argument("--full-snac", action="store_true", help="smoke: SNAC at its real width")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON and PNG")
    args = parser.parse_args(argv)

    import torch

    began = time.monotonic()
    deadline = began + args.budget_s
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("skipped: no CUDA GPU (run with --smoke for a reduced CPU version)")
        return 0
    smoke = args.smoke
    backend_name = pick_backend(args.backend, smoke)
    levels = args.levels or (SMOKE_LEVELS if smoke else GPU_LEVELS)
    requested_tokens = args.tokens or (SMOKE_TOKENS if smoke else GPU_TOKENS)
    tokens = fit_tokens(levels, requested_tokens, args.max_total_tokens)
    ttfa_tokens = args.ttfa_tokens or (SMOKE_TTFA_TOKENS if smoke else GPU_TTFA_TOKENS)
    decode_levels = SMOKE_DECODE_STREAMS if smoke else GPU_DECODE_STREAMS
    device = "cuda" if cuda and not smoke else "cpu"
    name = "orpheus_gpu_smoke" if smoke else "orpheus_gpu"
    phases_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="orpheus-bench-") as tmp:
        mark = time.monotonic()
        print(f"building random-weight models ({'tiny' if smoke else 'Orpheus 3B shape'}) ...", flush=True)
        llm, snac_dir = build_models(Path(tmp), smoke, args.full_snac)
        from orpheus_tts.engines.orpheus.loading import load_codec

        codec = load_codec(snac_dir, device)
        phases_s["build"] = time.monotonic() - mark
        mark = time.monotonic()
        print("decoder equivalence (streamed vs offline, TF32 off):", flush=True)
        equivalence = equivalence_phase(codec)
        print("SNAC decode throughput:", flush=True)
        decode = decode_phase(codec, decode_levels, SMOKE_DECODE_REPEATS if smoke else DECODE_REPEATS)
        phases_s["snac"] = time.monotonic() - mark
        print(f"LLM tokens/s with the {backend_name} backend ({tokens} tokens per stream):", flush=True)
        backend_error = None

        async def llm_and_ttfa(name: str) -> tuple[Any, ...]:
            backend = make_backend(name, llm, smoke, max(levels))
            started = time.monotonic()
            await backend.start()
            phases_s["llm_load"] = time.monotonic() - started
            started = time.monotonic()
            try:
                rows, skipped = await llm_phase(backend, levels, tokens, deadline)
            except BaseException:
                await backend.close()
                raise
            phases_s["llm"] = time.monotonic() - started
            if name != "transformers":
                await backend.close()
                return rows, skipped, [], [], "no audio-token grammar: random weights emit no valid frames"
            started = time.monotonic()
            print(f"time to first audio through the engine ({ttfa_tokens} tokens per stream):", flush=True)
            ttfa, ttfa_skipped = await ttfa_phase(backend, codec, levels, ttfa_tokens, deadline)  # closes it
            phases_s["ttfa"] = time.monotonic() - started
            return rows, skipped, ttfa, ttfa_skipped, None

        try:
            llm_rows, skipped, ttfa, ttfa_skipped, ttfa_note = asyncio.run(llm_and_ttfa(backend_name))
        except Exception as exc:
            if backend_name == "transformers":
                raise
            backend_error = f"{backend_name}: {exc!r}"
            print(f"  {backend_error}; falling back to transformers", flush=True)
            backend_name = "transformers"
            llm_rows, skipped, ttfa, ttfa_skipped, ttfa_note = asyncio.run(llm_and_ttfa(backend_name))
    at_64 = [r for r in decode if r["streams"] == max(decode_levels) and r["frames_per_window"] == 1]
    results = {
        "title": f"Orpheus {'smoke (CPU, tiny models)' if smoke else 'GPU'}: "
        f"{torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU'}",
        "machine": machine(),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "smoke": smoke,
        "backend": backend_name,
        "backend_fallback_reason": backend_error,
        "levels": list(levels),
        "tokens_per_stream_requested": requested_tokens,
        "tokens_per_stream": tokens,
        "max_total_tokens": args.max_total_tokens,
        "levels_skipped_for_time": skipped,
        "real_time_tokens_per_s": REAL_TIME_TOKENS_PER_S,
        "llm": llm_rows,
        "time_to_first_audio": ttfa,
        "time_to_first_audio_skipped_for_time": ttfa_skipped,
        "time_to_first_audio_note": ttfa_note,
        "snac_decode": decode,
        "snac_batched_speedup_at_max_streams": at_64[0]["batched_speedup"] if at_64 else None,
        "decoder_equivalence": equivalence,
        "tf32_during_equivalence": False,
        "phases_s": phases_s,
        "total_s": time.monotonic() - began,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{name}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    png_path = args.out / f"{name}.png"
    plot(results, png_path)
    print(f"wrote {json_path} and {png_path} ({results['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
