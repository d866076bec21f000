"""Build tiny Orpheus models offline: a Llama LM, its tokenizer, its GGUF, a SNAC decoder.

The LM has the real Orpheus vocabulary (156 940 ids: Llama 3's 128 000 text
ids, the 256 special ids with BOS at 128 000 and ``<|eot_id|>`` at 128 009, then
``<custom_token_N>`` at 128 256 + N) and the real architecture family (Llama,
tied embeddings, grouped-query attention) at toy width. The tokenizer is laid
out like Canopy's: a byte-level BPE (every UTF-8 byte is a token, plus one
merge of two control bytes) with Llama 3's 256 tokens as *special* added
tokens and the ``<custom_token_N>`` as *ordinary* added tokens, wrapped in
``PreTrainedTokenizerFast``; it prepends BOS like Llama 3's.

:func:`write_gguf` converts a model directory to GGUF with the ``gguf``
package's writer the way llama.cpp's ``convert_hf_to_gguf.py`` converts a
Llama: the same tensor names, Q/K rows permuted to GGML's rotary layout, the
llama3 rope factors as ``rope_freqs.weight``, token types from the tokenizer
(special added tokens and ``<|…|>`` ones CONTROL, other added tokens
USER_DEFINED), the merges and special ids from ``gguf.SpecialVocab``, and the
``llama-bpe`` pre-tokenizer of Llama 3 models.

:func:`build_scripted_llama` builds a Llama whose greedy (or low-temperature,
top-p) decoding emits a known chain of tokens: attention and MLP outputs are
zero, so the next token depends only on the current one, and ``lm_head`` is a
bigram table: after ``START_OF_SPEECH`` come the audio tokens of given
frames, then ``END_OF_SPEECH``, then ``<|eot_id|>``.

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


BYTE_MERGE = ("Ā", "ā")
"""The one merge (bytes 0x00 0x01, never in test text): GGUF files need a non-empty merge list."""


def build_tokenizer(out: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["".join(BYTE_MERGE)] = len(vocab)
    for filler in range(len(vocab), TEXT_VOCAB_SIZE):
        vocab[f"<unused_{filler}>"] = filler
    for token_id in range(SPECIAL_BASE, ORPHEUS_VOCAB_SIZE):
        vocab[_special_name(token_id)] = token_id
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[BYTE_MERGE]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    # As in Canopy's tokenizer: Llama 3's tokens are special, the custom tokens ordinary added tokens.
    tokenizer.add_special_tokens(
        [AddedToken(_special_name(t), special=True, normalized=False) for t in range(SPECIAL_BASE, CUSTOM_BASE)]
    )
    tokenizer.add_tokens(
        [AddedToken(_special_name(t), special=False, normalized=False) for t in range(CUSTOM_BASE, ORPHEUS_VOCAB_SIZE)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, SPECIAL_BASE)],
    )
    # transformers leaves the tokenizer's __init__ unannotated (*args, **kwargs).
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
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


def build_llama(
    out: Path, shape: dict[str, Any] | None = None, seed: int = 0, device: str = "cpu", init_std: float = 0.02
) -> None:
    """A random-weight Llama with the Orpheus vocabulary; ``shape`` defaults to :data:`TINY_LLAMA`.

    ``init_std`` is the weights' standard deviation; larger makes attention sharp (position-sensitive).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    # LlamaConfig's dataclass signature omits the rope_theta/rope_scaling keywords that its
    # __post_init__(**kwargs) still accepts.
    config = LlamaConfig(  # type: ignore[call-arg]
        vocab_size=ORPHEUS_VOCAB_SIZE,
        **(shape or TINY_LLAMA),
        max_position_embeddings=131_072,
        tie_word_embeddings=True,
        bos_token_id=SPECIAL_BASE,
        eos_token_id=128_258,
        pad_token_id=128_263,
        initializer_range=init_std,
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


def _rope_factors(config: Any) -> Any:
    """llama3 rope scaling factors, computed as llama.cpp's converter does (``rope_freqs.weight``)."""
    import math

    import numpy as np

    scaling = config.rope_scaling or {}
    if scaling.get("rope_type") != "llama3":
        return None
    dim = config.head_dim
    base = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def _permute(weights: Any, n_head: int) -> Any:
    """HF's rotary layout (halves) to GGML's (interleaved pairs), as ``LlamaModel.permute``."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _gguf_vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and token types, as ``convert_hf_to_gguf.py``'s ``get_vocab_base``."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            looks_special = token.startswith("<|") and token.endswith("|>")
            types.append(gguf.TokenType.CONTROL if decoder[i].special or looks_special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def write_gguf(model_dir: Path, path: Path) -> Path:
    """Convert the Llama (with its tokenizer) in ``model_dir`` to an F32 GGUF file at ``path``."""
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(model_dir.name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    rope = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(config.vocab_size)
    tokens, types = _gguf_vocab(model_dir, config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    factors = _rope_factors(config)
    if factors is not None:
        writer.add_tensor("rope_freqs.weight", factors)
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    if not config.tie_word_embeddings:
        writer.add_tensor("output.weight", state["lm_head.weight"])
    names = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for layer in range(config.num_hidden_layers):
        for hf, ours in names.items():
            data = state[f"model.layers.{layer}.{hf}.weight"]
            if hf == "self_attn.q_proj":
                data = _permute(data, n_head)
            elif hf == "self_attn.k_proj":
                data = _permute(data, n_kv)
            writer.add_tensor(f"blk.{layer}.{ours}.weight", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


SCRIPTED_LLAMA: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
SCRIPTED_LOGIT = 48.0
"""Logit of the scripted next token (every other token gets 0): sampling at temperature <= 1 with top-p < 1
keeps it alone."""


def scripted_frames(n_frames: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``n_frames`` frames of codes, no code repeated within a slot (so every token of the chain is unique)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    columns = [rng.choice(4096, size=n_frames, replace=False) for _ in range(7)]
    return [tuple(int(columns[slot][i]) for slot in range(7)) for i in range(n_frames)]


def scripted_chain(frames: list[tuple[int, ...]]) -> list[int]:
    """START_OF_SPEECH, the frames' audio tokens, END_OF_SPEECH, ``<|eot_id|>``."""
    audio = [128_266 + 4096 * slot + code for frame in frames for slot, code in enumerate(frame)]
    return [128_257, *audio, 128_258, 128_009]


def build_scripted_llama(out: Path, frames: list[tuple[int, ...]], loop: bool = False) -> list[int]:
    """A Llama (and tokenizer) at ``out`` that, after any prompt, speaks ``frames`` and stops; returns the chain.

    With ``loop`` it never stops: after the last frame comes the first one again, until ``max_tokens``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    chain = scripted_chain(frames)
    if loop:
        chain = chain[:-2]
    hidden = SCRIPTED_LLAMA["hidden_size"]
    if len(chain) > hidden:
        raise ValueError(f"at most {(hidden - 3) // 7} frames fit a scripted model of width {hidden}")
    torch.manual_seed(0)
    # LlamaConfig's dataclass signature omits the rope_theta/rope_scaling keywords that its
    # __post_init__(**kwargs) still accepts.
    config = LlamaConfig(  # type: ignore[call-arg]
        vocab_size=ORPHEUS_VOCAB_SIZE,
        **SCRIPTED_LLAMA,
        max_position_embeddings=131_072,
        tie_word_embeddings=False,
        bos_token_id=SPECIAL_BASE,
        eos_token_id=128_258,
        pad_token_id=128_263,
        rope_theta=500_000.0,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        # Tokens off the chain point along the last axis, which no lm_head row reads.
        embed.zero_()
        embed[:, hidden - 1] = 1.0
        head = model.lm_head.weight
        head.zero_()
        # After RMSNorm a one-hot embedding becomes sqrt(hidden) * e_j.
        for position, token in enumerate(chain):
            embed[token].zero_()
            embed[token, position] = 1.0
            if position + 1 < len(chain):
                head[chain[position + 1], position] = SCRIPTED_LOGIT / hidden**0.5
        if loop:
            head[chain[1], len(chain) - 1] = SCRIPTED_LOGIT / hidden**0.5
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    build_tokenizer(out)
    return chain


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
