#!/usr/bin/env python3
"""Regenerates the GGUF test fixtures in this directory (tests/it/gguf.rs reads them).

Environment (pinned; ../shared/notes/toolchain.md):
    python3 -m venv /work/venvs/gguf && /work/venvs/gguf/bin/pip install gguf==0.19.0 numpy
    /work/venvs/gguf/bin/python testdata/gguf-fixtures/make_fixtures.py

What it writes:
- hf/: a tiny Llama HF checkpoint (hidden 64, 2 layers, 4 heads / 2 kv heads, vocab 1024) with
  random f16 weights (seeded) and the zoo's real BPE tokenizer + ChatML template (copied from
  testdata/zoo/.scratch/tokenizer). `config.json`, `generation_config.json` and
  `model.safetensors` are written here.
- tiny-llama.gguf: hf/ converted the way llama.cpp's convert_hf_to_gguf.py converts a Llama
  (same tensor names, Q/K rows permuted for llama.cpp's interleaved rope, tokenizer through
  gguf-py's own SpecialVocab, `tokenizer.ggml.pre = gpt-2` as the unknown-hash workaround writes),
  with a realistic type mix: F32 norms, Q8_0 embeddings, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/BF16/F16 weights.
- tiny-llama-*.gguf: the same conversion broken the way conversions break (one fault each).
- all-types.gguf: one random-bytes tensor of every ggml type gguf-py knows, general.alignment 64.

Files are deterministic (fixed seeds) and small (about 1 MB in all).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

HERE = Path(__file__).resolve().parent
HF = HERE / "hf"
TOKENIZER_SRC = HERE.parent / "zoo" / ".scratch" / "tokenizer"

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 1024,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-06,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": None,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "dtype": "float16",
    "transformers_version": "5.24.0",
}
GENERATION_CONFIG = {"bos_token_id": None, "eos_token_id": 2, "pad_token_id": 0}


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """safetensors by hand (the format is a JSON header + raw little-endian bytes)."""
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a).astype("<f2").tobytes()
        header[name] = {"dtype": "F16", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def make_hf() -> dict[str, np.ndarray]:
    HF.mkdir(exist_ok=True)
    if TOKENIZER_SRC.is_dir():
        for n in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
            shutil.copy(TOKENIZER_SRC / n, HF / n)
    (HF / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    (HF / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
    rng = np.random.default_rng(7)
    c = CONFIG
    h, f, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    w = lambda *s: (rng.standard_normal(s) * 0.05).astype(np.float16)
    t = {"model.embed_tokens.weight": w(c["vocab_size"], h), "model.norm.weight": (1 + w(h)).astype(np.float16)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = (1 + w(h)).astype(np.float16)
        t[p + "post_attention_layernorm.weight"] = (1 + w(h)).astype(np.float16)
        t[p + "self_attn.q_proj.weight"] = w(nh * hd, h)
        t[p + "self_attn.k_proj.weight"] = w(nkv * hd, h)
        t[p + "self_attn.v_proj.weight"] = w(nkv * hd, h)
        t[p + "self_attn.o_proj.weight"] = w(h, nh * hd)
        t[p + "mlp.gate_proj.weight"] = w(f, h)
        t[p + "mlp.up_proj.weight"] = w(f, h)
        t[p + "mlp.down_proj.weight"] = w(h, f)
    write_safetensors(HF / "model.safetensors", t)
    return t


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute: HF rotate-half rows → llama.cpp interleaved."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# HF suffix → (GGUF name, type in the good conversion)
LAYER_MAP = {
    "input_layernorm.weight": ("attn_norm.weight", Q.F32),
    "post_attention_layernorm.weight": ("ffn_norm.weight", Q.F32),
    "self_attn.q_proj.weight": ("attn_q.weight", Q.Q4_0),
    "self_attn.k_proj.weight": ("attn_k.weight", Q.Q4_1),
    "self_attn.v_proj.weight": ("attn_v.weight", Q.Q5_0),
    "self_attn.o_proj.weight": ("attn_output.weight", Q.Q5_1),
    "mlp.gate_proj.weight": ("ffn_gate.weight", Q.Q8_0),
    "mlp.up_proj.weight": ("ffn_up.weight", Q.BF16),
    "mlp.down_proj.weight": ("ffn_down.weight", Q.F16),
}


def add_tensor(wr: gguf.GGUFWriter, name: str, a: np.ndarray, qtype: Q) -> None:
    a = a.astype(np.float32)
    if qtype == Q.F32:
        wr.add_tensor(name, a)
    elif qtype == Q.F16:
        wr.add_tensor(name, a.astype(np.float16))
    else:
        wr.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)


def tokenizer_lists() -> tuple[list[str], list[int]]:
    tj = json.loads((HF / "tokenizer.json").read_text())
    vocab = dict(tj["model"]["vocab"])
    added = {t["id"]: t for t in tj["added_tokens"]}
    n = max(list(vocab.values()) + list(added)) + 1
    rev = {i: s for s, i in vocab.items()}
    tokens, types = [], []
    for i in range(n):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif i in rev:
            tokens.append(rev[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    return tokens, types


def convert(out: str, weights: dict[str, np.ndarray], fault: str | None = None) -> None:
    c = CONFIG
    wr = gguf.GGUFWriter(str(HERE / out), "llama")
    wr.add_name("tiny-llama" + (f" ({fault})" if fault else ""))
    wr.add_context_length(c["max_position_embeddings"])
    wr.add_embedding_length(c["hidden_size"])
    wr.add_block_count(c["num_hidden_layers"])
    wr.add_feed_forward_length(c["intermediate_size"])
    wr.add_head_count(c["num_attention_heads"])
    wr.add_head_count_kv(c["num_key_value_heads"])
    wr.add_rope_freq_base(500000.0 if fault == "wrong-rope" else c["rope_parameters"]["rope_theta"])
    wr.add_layer_norm_rms_eps(c["rms_norm_eps"])
    wr.add_rope_dimension_count(c["head_dim"])
    wr.add_vocab_size(c["vocab_size"])
    wr.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)

    tokens, types = tokenizer_lists()
    if fault == "other-tokenizer":
        # A tokenizer whose special tokens sit at the end of the vocabulary (same strings, other ids).
        order = list(range(3, len(tokens))) + [0, 1, 2]
        tokens = [tokens[i] for i in order]
        types = [types[i] for i in order]
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("llama-bpe" if fault == "pre-llama3" else "gpt-2")
    wr.add_token_list(tokens)
    wr.add_token_types(types)
    sv = gguf.SpecialVocab(HF, load_merges=True, n_vocab=len(tokens))
    if fault == "other-tokenizer":
        sv.special_token_ids = {k: tokens.index(["<|endoftext|>", "<|im_start|>", "<|im_end|>"][v]) for k, v in sv.special_token_ids.items()}
    if fault == "wrong-eos":
        sv.special_token_ids["eos"] = 0  # <|endoftext|> instead of <|im_end|>
    if fault == "no-template":
        sv.chat_template = None
    if fault == "double-bos":
        sv.special_token_ids["bos"] = 1
        sv.add_special_token["bos"] = True
        sv.chat_template = "{{ bos_token }}" + sv.chat_template
    sv.add_to_gguf(wr, quiet=True)

    rows = lambda q: q if fault is None else Q.Q4_0  # broken variants stay small
    add_tensor(wr, "token_embd.weight", weights["model.embed_tokens.weight"], Q.Q8_0 if fault is None else Q.Q4_0)
    for i in range(c["num_hidden_layers"]):
        for suffix, (gname, qtype) in LAYER_MAP.items():
            a = weights[f"model.layers.{i}.{suffix}"]
            if suffix.startswith("self_attn.q_proj"):
                a = permute(a, c["num_attention_heads"], c["num_attention_heads"])
            elif suffix.startswith("self_attn.k_proj"):
                a = permute(a, c["num_attention_heads"], c["num_key_value_heads"])
            add_tensor(wr, f"blk.{i}.{gname}", a, qtype if a.ndim == 1 else rows(qtype))
    add_tensor(wr, "output_norm.weight", weights["model.norm.weight"], Q.F32)

    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def all_types() -> None:
    rng = np.random.default_rng(11)
    wr = gguf.GGUFWriter(str(HERE / "all-types.gguf"), "llama")
    wr.add_custom_alignment(64)
    for qt in Q:
        block, size = gguf.GGML_QUANT_SIZES[qt]
        # 2 rows of 2 blocks each: dims [2*block, 2].
        raw = rng.integers(0, 256, size=(2, 2 * size), dtype=np.uint8)
        if qt in (Q.F32, Q.F16, Q.BF16, Q.F64):
            raw = np.zeros((2, 2 * size), dtype=np.uint8)  # zeros, so float types stay finite
        wr.add_tensor(f"t.{qt.name}", raw, raw_dtype=qt)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def main() -> None:
    weights = make_hf()
    convert("tiny-llama.gguf", weights)
    for fault in ["wrong-eos", "no-template", "other-tokenizer", "wrong-rope", "double-bos", "pre-llama3"]:
        convert(f"tiny-llama-{fault}.gguf", weights, fault)
    all_types()
    for p in sorted(HERE.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>9}  {p.relative_to(HERE)}")


if __name__ == "__main__":
    main()
