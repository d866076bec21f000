"""Build tiny random-weight Orpheus models offline: a Llama LM, its tokenizer, a SNAC decoder.

The LM has the real Orpheus vocabulary (156 940 ids: Llama 3's 128 000 text
ids, the 256 special ids with BOS at 128 000 and ``<|eot_id|>`` at 128 009, then
``<custom_token_N>`` at 128 256 + N) and the real architecture family (Llama,
tied embeddings, grouped-query attention) at toy width. The tokenizer is a
byte-level BPE with no merges (every UTF-8 byte is a token) plus those special
tokens, wrapped in ``PreTrainedTokenizerFast``; it prepends BOS like Llama 3's.
The SNAC decoder has the real 24 kHz layout (rates, strides, kernels, noise,
depthwise convolutions), optionally at reduced width. Nothing is downloaded.

Usage: ``python tests/engines/orpheus/make_tiny_models.py OUT_DIR [--full-snac]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ORPHEUS_VOCAB_SIZE = 156_940
TEXT_VOCAB_SIZE = 128_000
SPECIAL_BASE = 128_000
CUSTOM_BASE = 128_256
BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
EOT_TOKEN = "<|eot_id|>"

SNAC_24KHZ: dict[str, Any] = {
    "sampling_rate": 24000,
    "encoder_dim": 48,
    "encoder_rates": [2, 4, 8, 8],
    "decoder_dim": 1024,
    "decoder_rates": [8, 8, 4, 2],
    "attn_window_size": None,
    "codebook_size": 4096,
    "codebook_dim": 8,
    "vq_strides": [4, 2, 1],
    "noise": True,
    "depthwise": True,
}
TINY_SNAC_WIDTHS = {"encoder_dim": 4, "decoder_dim": 64}
"""Reduced widths: same receptive field and frame layout, a small fraction of the compute."""


def _special_name(token_id: int) -> str:
    named = {128_000: BOS_TOKEN, 128_001: EOS_TOKEN, 128_009: EOT_TOKEN}
    if token_id in named:
        return named[token_id]
    if token_id >= CUSTOM_BASE:
        return f"<custom_token_{token_id - CUSTOM_BASE}>"
    return f"<|reserved_special_token_{token_id - SPECIAL_BASE}|>"


def build_tokenizer(out: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for filler in range(len(vocab), TEXT_VOCAB_SIZE):
        vocab[f"<unused_{filler}>"] = filler
    for token_id in range(SPECIAL_BASE, ORPHEUS_VOCAB_SIZE):
        vocab[_special_name(token_id)] = token_id
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(_special_name(t), special=True, normalized=False) for t in range(SPECIAL_BASE, ORPHEUS_VOCAB_SIZE)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, SPECIAL_BASE)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOT_TOKEN,
        pad_token="<|reserved_special_token_4|>",
    )
    fast.save_pretrained(str(out))
    # Name the portable class, so that transformers 4.x (as pinned by vLLM) loads it too.
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2))


TINY_LLAMA: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
ORPHEUS_3B_LLAMA: dict[str, Any] = {
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 28,
    "num_attention_heads": 24,
    "num_key_value_heads": 8,
    "head_dim": 128,
}
"""The real Orpheus 3B shape (Llama 3.2 3B), for benchmarks with random weights."""


def build_llama(out: Path, shape: dict[str, Any] | None = None, seed: int = 0, device: str = "cpu") -> None:
    """A random-weight Llama with the Orpheus vocabulary; ``shape`` defaults to :data:`TINY_LLAMA`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=ORPHEUS_VOCAB_SIZE,
        **(shape or TINY_LLAMA),
        max_position_embeddings=131_072,
        tie_word_embeddings=True,
        bos_token_id=SPECIAL_BASE,
        eos_token_id=128_258,
        pad_token_id=128_263,
        rope_theta=500_000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    if device == "cpu":
        model = LlamaForCausalLM(config)
    else:
        # Build the 3B shape straight on the GPU in bfloat16: minutes and 12 GB less than on the CPU.
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(device):
                model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(default)
    model.save_pretrained(str(out))


def build_snac(out: Path, full: bool = False, seed: int = 0) -> dict[str, Any]:
    import torch
    from snac import SNAC

    config = dict(SNAC_24KHZ) if full else {**SNAC_24KHZ, **TINY_SNAC_WIDTHS}
    torch.manual_seed(seed)
    model = SNAC(**config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    return config


def build_all(out: Path, full_snac: bool = False) -> tuple[Path, Path]:
    """Write ``out/llm`` (model + tokenizer) and ``out/snac``; returns their paths."""
    llm, snac = out / "llm", out / "snac"
    llm.mkdir(parents=True, exist_ok=True)
    build_llama(llm)
    build_tokenizer(llm)
    build_snac(snac, full=full_snac)
    return llm, snac


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--full-snac", action="store_true", help="SNAC at the real widths (19.8 M parameters)")
    args = parser.parse_args()
    llm, snac = build_all(args.out, args.full_snac)
    print(f"model: {llm}\nsnac: {snac}")


if __name__ == "__main__":
    main()
