"""Embedded engine: whether onnxruntime options or int8 quantization make the voice faster.

The same seedable graph the engine runs (``PiperEngine`` loads it), in
sessions that differ in one option each, renders the same segments in turn,
one run at a time on one thread (each variant's CPU time is then its own):

- **default**: what the engine uses (all graph optimizations);
- **no_spinning**: ``session.intra_op.allow_spinning = 0``;
- **denormals_zero**: ``session.set_denormal_as_zero = 1``;
- **basic_optimization**: ``ORT_ENABLE_BASIC`` instead of ``ORT_ENABLE_ALL``;
- **int8_matmul** / **int8_matmul_conv**: onnxruntime's dynamic int8
  quantization of the MatMul (and Conv) weights.

Variants take turns each round, so machine noise hits them alike. Per
variant: audio seconds per CPU second of this process, and the ratio to
``default`` in the same run. Writes ``bench/results/engine_options.json``
and ``engine_options.png``.

    python -m bench.engine_options [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine, pyplot, save_figure, write_json
from orpheus_tts.engines.base import validate_params
from orpheus_tts.engines.embedded import PiperEngine, _seedable_graph, _settings
from orpheus_tts.protocol import SAMPLE_RATE_HZ, SAMPLE_WIDTH_BYTES

SEGMENTS = [
    "Sure, I can help you with that.",
    "Your order left our warehouse on Monday morning.",
    "It should arrive at your door within three days.",
    "Thanks for calling, and welcome back.",
    "The weather today is sunny with a light breeze from the west.",
]
VARIANTS = (
    "default",
    "no_spinning",
    "denormals_zero",
    "basic_optimization",
    "int8_matmul",
    "int8_matmul_conv",
)


def _sessions(graph: bytes, tmp: Path) -> dict[str, Any]:
    import onnxruntime  # type: ignore[import-untyped]
    from onnxruntime.quantization import QuantType, quantize_dynamic  # type: ignore[import-untyped]

    source = tmp / "voice.onnx"
    source.write_bytes(graph)

    def options(configure: Callable[[Any], None] = lambda o: None) -> Any:
        o = onnxruntime.SessionOptions()
        o.intra_op_num_threads = 1
        o.inter_op_num_threads = 1
        configure(o)
        return o

    def quantized(ops: list[str]) -> str:
        out = tmp / f"voice_{'_'.join(ops)}.onnx"
        quantize_dynamic(str(source), str(out), op_types_to_quantize=ops, weight_type=QuantType.QInt8)
        return str(out)

    basic = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    made: dict[str, tuple[Any, Any]] = {
        "default": (graph, options()),
        "no_spinning": (graph, options(lambda o: o.add_session_config_entry("session.intra_op.allow_spinning", "0"))),
        "denormals_zero": (graph, options(lambda o: o.add_session_config_entry("session.set_denormal_as_zero", "1"))),
        "basic_optimization": (graph, options(lambda o: setattr(o, "graph_optimization_level", basic))),
        "int8_matmul": (quantized(["MatMul"]), options()),
        "int8_matmul_conv": (quantized(["MatMul", "Conv"]), options()),
    }
    return {
        name: onnxruntime.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        for name, (model, opts) in made.items()
    }


def measure(rounds: int) -> dict[str, Any]:
    engine = PiperEngine(capacity=1, intra_op_threads=1)
    asyncio.run(engine.start())
    try:
        model = engine._require_model()
        settings = _settings(validate_params(engine.param_specs(), {}), model.voice.config)
        graph, _, _ = _seedable_graph(engine._voice_files()[0])
        with tempfile.TemporaryDirectory() as tmp:
            sessions = _sessions(graph, Path(tmp))
        totals = {name: {"audio_s": 0.0, "cpu_s": 0.0} for name in sessions}
        for r in range(rounds + 1):  # round 0 warms every session up
            for name, session in sessions.items():
                model.session = session
                model.narrow = None
                rng = np.random.default_rng(1)
                cpu0 = time.process_time()
                audio = sum(
                    len(engine._render(model, s, settings, rng).pcm) / (SAMPLE_WIDTH_BYTES * SAMPLE_RATE_HZ)
                    for s in SEGMENTS
                )
                if r:
                    totals[name]["audio_s"] += audio
                    totals[name]["cpu_s"] += time.process_time() - cpu0
    finally:
        asyncio.run(engine.close())
    out = {name: {**t, "audio_s_per_cpu_s": t["audio_s"] / t["cpu_s"]} for name, t in totals.items()}
    for row in out.values():
        row["vs_default"] = row["audio_s_per_cpu_s"] / out["default"]["audio_s_per_cpu_s"]
    return out


def plot(variants: dict[str, Any]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(variants)
    ax.bar(range(len(names)), [variants[n]["audio_s_per_cpu_s"] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("audio seconds per CPU second (1 thread)")
    ax.set_title("Embedded engine: onnxruntime options and int8 quantization")
    fig.tight_layout()
    save_figure(fig, "engine_options")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="turns per variant")
    args = parser.parse_args(argv)
    variants = measure(args.rounds)
    for name, row in variants.items():
        print(f"{name:>20}: {row['audio_s_per_cpu_s']:5.1f} audio s per CPU s ({row['vs_default']:.2f}x default)")
    data = {
        "benchmark": "engine_options",
        "machine": machine(),
        "rounds": args.rounds,
        "segments": SEGMENTS,
        "variants": variants,
    }
    print("wrote", write_json("engine_options", data))
    plot(variants)


if __name__ == "__main__":
    main()
