"""A Llama checkpoint of realistic shape with random bf16 weights, from the standard library only
(for a GPU machine that has no torch and no network: scripts/gpu-check.sh).

    python3 bench/random_model.py OUT [--hidden 2048] [--layers 16] [--intermediate 8192]
                                      [--heads 32] [--kv-heads 8] [--vocab 32000]

Writes OUT/config.json and OUT/model.safetensors. Weights are one block of 2^20 N(0, 0.02)
values (bf16), repeated: the numbers are meaningless, the shapes, dtype and bytes moved are those
of a real model. Norm weights are 1. For speed and memory only, never for correctness.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
from pathlib import Path

BLOCK = 1 << 20


def bf16_block(std: float) -> bytes:
    rng = random.Random(0)
    floats = struct.pack(f"<{BLOCK}f", *(rng.gauss(0.0, std) for _ in range(BLOCK)))
    # bf16 = the upper two bytes of each little-endian f32 (truncation)
    return b"".join(floats[i + 2:i + 4] for i in range(0, len(floats), 4))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    a = ap.parse_args()
    head_dim = a.hidden // a.heads
    shapes: list[tuple[str, list[int]]] = [("model.embed_tokens.weight", [a.vocab, a.hidden])]
    for i in range(a.layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", [a.hidden]),
            (p + "self_attn.q_proj.weight", [a.heads * head_dim, a.hidden]),
            (p + "self_attn.k_proj.weight", [a.kv_heads * head_dim, a.hidden]),
            (p + "self_attn.v_proj.weight", [a.kv_heads * head_dim, a.hidden]),
            (p + "self_attn.o_proj.weight", [a.hidden, a.heads * head_dim]),
            (p + "post_attention_layernorm.weight", [a.hidden]),
            (p + "mlp.gate_proj.weight", [a.intermediate, a.hidden]),
            (p + "mlp.up_proj.weight", [a.intermediate, a.hidden]),
            (p + "mlp.down_proj.weight", [a.hidden, a.intermediate]),
        ]
    shapes += [("model.norm.weight", [a.hidden]), ("lm_head.weight", [a.vocab, a.hidden])]
    header, offset = {}, 0
    for name, shape in shapes:
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    a.out.mkdir(parents=True, exist_ok=True)
    block = bf16_block(0.02)
    one = struct.pack("<f", 1.0)[2:4]
    tmp = a.out / "model.safetensors.tmp"
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape in shapes:
            n = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            if len(shape) == 1:
                f.write(one * (n // 2))
                continue
            while n > 0:
                k = min(n, len(block))
                f.write(block[:k])
                n -= k
    os.replace(tmp, a.out / "model.safetensors")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.hidden,
        "intermediate_size": a.intermediate, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads, "head_dim": head_dim, "vocab_size": a.vocab, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "max_position_embeddings": 8192, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "hidden_act": "silu",
    }
    (a.out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    params = sum(header[n]["data_offsets"][1] - header[n]["data_offsets"][0] for n, _ in shapes) // 2
    print(f"{a.out}: {params / 1e9:.2f} B parameters, {offset / 2**30:.2f} GiB bf16")


if __name__ == "__main__":
    main()
