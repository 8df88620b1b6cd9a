"""Granite (issue 14: a family users bring often, run by both transformers and llama.cpp): Llama's
layout with four scalars — embeddings × `embedding_multiplier`, attention scores × `attention_multiplier`
(instead of 1/sqrt(head_dim)), each block's output × `residual_multiplier` before the residual add,
logits ÷ `logits_scaling`.

    <main venv python> granite.py hf gguf gguf-golden gguf-broken   # ~10 s (the golden needs libllama, see moe.py)

`models/granite-mini`: `GraniteForCausalLM(GraniteConfig(hidden 64, intermediate 128, 2 layers, 4 heads,
2 kv heads, embedding_multiplier 12, attention_multiplier 1/64, residual_multiplier 0.22,
logits_scaling 8))` — Granite 3's multipliers (12, 1/head_dim, 0.22, 8) in miniature. Random init (parity
only), seed `SEED + 70`, stored bf16 with the zoo tokenizer; goldens as phi.py (transformers f32,
logits + hidden states on moe.py's `golden_seqs`). `gguf/granite-mini-f16.gguf`: llama.cpp's own
converter (GraniteModel: `granite.embedding_scale`, `.attention.scale`, `.residual_scale`,
`.logit_scale`), llama.cpp golden `goldens/gguf-granite-mini-f16.safetensors` via llama_logits.c.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import moe as M  # noqa: E402  (golden_seqs; imports generate as G with the peft stub)

G = M.G
NAME = "granite-mini"


@torch.no_grad()
def stage_hf() -> None:
    from transformers import GraniteConfig, GraniteForCausalLM

    cfg = GraniteConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=None,
                        eos_token_id=G.IM_END, pad_token_id=G.PAD, tie_word_embeddings=False,
                        embedding_multiplier=12.0, attention_multiplier=1 / 64, residual_multiplier=0.22, logits_scaling=8.0)
    torch.manual_seed(G.SEED + 70)
    model = GraniteForCausalLM(cfg).float().eval()
    out = G.MODELS / NAME
    G.save_hf(model.to(torch.bfloat16), G.load_tok(), out)
    m = G.load_model(out)
    assert abs(m.config.logits_scaling - 8.0) < 1e-9
    M.save_hf_golden(m, NAME)
    size = sum(f.stat().st_size for f in out.iterdir())
    G.log(f"{NAME}: {size} bytes on disk; golden {(G.GOLD / f'{NAME}.safetensors').stat().st_size} bytes")


def stage_gguf() -> None:
    import gguf_stage as S

    S.LLAMACPP = M.LLAMACPP
    out = S.GGUF_DIR / f"{NAME}-f16.gguf"
    S.run_converter(G.MODELS / NAME, out, "f16")
    G.log(f"{out.name}: {out.stat().st_size} bytes")


def stage_gguf_broken() -> None:
    """gguf/granite-mini-no-residual-scale.gguf: the F16 file with `granite.residual_scale` set to 1
    by gguf-py's own gguf_set_metadata.py — what llama.cpp runs when a converter leaves the key out
    (it skips the scaling), as converters that took Granite for Llama did. pipelines/granite-gguf-scale.toml."""
    import os
    import shutil
    import subprocess

    src = M.G.ROOT / "gguf" / f"{NAME}-f16.gguf"
    out = src.with_name(f"{NAME}-no-residual-scale.gguf")
    shutil.copy(src, out)
    subprocess.run([sys.executable, str(M.LLAMACPP / "gguf-py/gguf/scripts/gguf_set_metadata.py"), str(out),
                    "granite.residual_scale", "1.0", "--force"], check=True,
                   env={**os.environ, "PYTHONPATH": str(M.LLAMACPP / "gguf-py")})
    G.log(f"{out.name}: granite.residual_scale 0.22 -> 1.0")


def stage_gguf_golden() -> None:
    M.save_llama_cpp_golden(M.G.ROOT / "gguf" / f"{NAME}-f16.gguf", f"gguf-{NAME}-f16")


if __name__ == "__main__":
    for stage in sys.argv[1:] or ["hf", "gguf", "gguf-golden", "gguf-broken"]:
        {"hf": stage_hf, "gguf": stage_gguf, "gguf-golden": stage_gguf_golden, "gguf-broken": stage_gguf_broken}[stage]()
