"""Phi-3 / Phi-4-mini (issue 14): fused `qkv_proj` and `gate_up_proj`, rope on part of each head.

    <main venv python> phi.py hf gguf   # ~15 s: models/phi3-partial + goldens, its F16 GGUF + llama.cpp golden
    <main venv python> phi.py longrope  # models/phi3-longrope + golden (logits only)
    <main venv python> phi.py longrope-gguf  # gguf/phi3-longrope-f16.gguf + llama.cpp goldens at two context sizes

`models/phi3-partial`: `Phi3ForCausalLM(Phi3Config(hidden 64, intermediate 128, 2 layers, 4 heads,
2 kv heads, head_dim 16, partial_rotary_factor 0.75))` — Phi-4-mini's layout in miniature (its
factor is 0.75: rope turns 12 of 16 dimensions, the other 4 pass through). Random init (parity
only, no training), seed `SEED + 60`, stored bf16 by `save_pretrained` with the zoo tokenizer.
Goldens as every other golden: transformers f32 on the bf16 weights, logits + hidden states on the
shared golden ids (moe.py's `golden_seqs`).

`gguf/phi3-partial-f16.gguf`: llama.cpp's own converter (`conversion/phi.py`, Phi3MiniModel: it
keeps `attn_qkv` and a fused `ffn_up`, writes `phi3.rope.dimension_count` 12) on a copy whose
tokenizer_config.json says `"tokenizer_class": "GPT2Tokenizer"` — the converter's test for a
Phi-4-style BPE tokenizer (otherwise it wants a SentencePiece tokenizer.model), with gguf_stage's
unknown-pre-tokenizer workaround, converted from a directory not named phi3 (see stage_gguf).
llama.cpp golden `goldens/gguf-phi3-partial-f16.safetensors` via
moe.py's `llama_logits.c`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import moe as M  # noqa: E402  (golden_seqs; imports generate as G with the peft stub)

G = M.G
NAME = "phi3-partial"


@torch.no_grad()
def stage_hf() -> None:
    from transformers import Phi3Config, Phi3ForCausalLM

    cfg = Phi3Config(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=256, original_max_position_embeddings=256,
                     rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=G.IM_END, pad_token_id=G.PAD,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75},
                     tie_word_embeddings=False)
    torch.manual_seed(G.SEED + 60)
    model = Phi3ForCausalLM(cfg).float().eval()
    out = G.MODELS / NAME
    G.save_hf(model.to(torch.bfloat16), G.load_tok(), out)
    m = G.load_model(out)
    assert m.model.layers[0].self_attn.qkv_proj.weight.shape[0] == 64 + 2 * 32
    M.save_hf_golden(m, NAME)
    size = sum(f.stat().st_size for f in out.iterdir())
    G.log(f"{NAME}: {size} bytes on disk; golden {(G.GOLD / f'{NAME}.safetensors').stat().st_size} bytes")


@torch.no_grad()
def stage_longrope() -> None:
    """models/phi3-longrope: Phi-3-128k's rope (`longrope`: per-frequency short/long factors, the
    long ones when a sequence is longer than `original_max_position_embeddings`, cos/sin × sqrt(1 +
    ln(max / original) / ln(original))) in miniature: original 21, max 84, so three of the four golden
    sequences (22-26 tokens) take the long factors and one (20) the short. Golden logits only."""
    from transformers import Phi3Config, Phi3ForCausalLM

    name = "phi3-longrope"
    short = [1.0, 1.05, 1.1, 1.2, 1.4, 1.8, 2.5, 3.0]
    long = [1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0]
    cfg = Phi3Config(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=84, original_max_position_embeddings=21,
                     rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=G.IM_END, pad_token_id=G.PAD,
                     rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": short,
                                      "long_factor": long, "original_max_position_embeddings": 21},
                     tie_word_embeddings=False)
    torch.manual_seed(G.SEED + 61)
    model = Phi3ForCausalLM(cfg).float().eval()
    out = G.MODELS / name
    G.save_hf(model.to(torch.bfloat16), G.load_tok(), out)
    m = G.load_model(out)
    tensors, meta = {}, {"variant": name, **{f"v_{k}": v for k, v in G.versions().items()}}
    for j, (plen, ids) in enumerate(M.golden_seqs()):
        tensors[f"input_ids.{j}"] = ids.clone()
        tensors[f"logits.{j}"] = m(input_ids=ids[None]).logits[0].float().contiguous()
        meta[f"prompt_len.{j}"] = str(plen)
    save_file(tensors, str(G.GOLD / f"{name}.safetensors"), metadata=meta)
    G.log(f"{name}: {sum(f.stat().st_size for f in out.iterdir())} bytes; golden {(G.GOLD / f'{name}.safetensors').stat().st_size}")


def stage_gguf() -> None:
    import json
    import shutil
    import tempfile

    import gguf_stage as S

    S.LLAMACPP = M.LLAMACPP
    with tempfile.TemporaryDirectory() as tmp:
        # Not named phi3: llama.cpp's vocab loader gives any model whose general.name contains
        # "phi3" or "phi-3" Phi-3's token attributes, looking up `</s>`, `<unk>` and `<s>` with
        # `.at()` — which throws (`unordered_map::at`) on the zoo tokenizer, which has none of them.
        src = Path(tmp) / "partial-rotary-mini"
        shutil.copytree(G.MODELS / NAME, src)
        tc = json.loads((src / "tokenizer_config.json").read_text())
        tc["tokenizer_class"] = "GPT2Tokenizer"
        (src / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
        out = S.GGUF_DIR / f"{NAME}-f16.gguf"
        S.run_converter(src, out, "f16")
    M.save_llama_cpp_golden(out, f"gguf-{NAME}-f16")
    G.log(f"{out.name}: {out.stat().st_size} bytes")


def stage_longrope_gguf() -> None:
    """gguf/phi3-longrope-f16.gguf: the converter writes both factor sets as tensors
    (`rope_factors_long/short.weight`) and `phi3.rope.scaling.attn_factor`. llama.cpp picks the long
    set when its context size exceeds the original (21 here) and pads every context to a multiple
    of 256, so it runs this model with the long factors whatever the sequence; transformers picks by
    sequence length. The llama.cpp golden therefore holds the three golden sequences longer than 21
    tokens (both rules: long); the fourth (20 tokens) differs between the two by design."""
    import json
    import shutil
    import tempfile

    import gguf_stage as S

    name = "phi3-longrope"
    S.LLAMACPP = M.LLAMACPP
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "longrope-mini"  # not named phi3: see stage_gguf
        shutil.copytree(G.MODELS / name, src)
        tc = json.loads((src / "tokenizer_config.json").read_text())
        tc["tokenizer_class"] = "GPT2Tokenizer"
        (src / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
        out = S.GGUF_DIR / f"{name}-f16.gguf"
        S.run_converter(src, out, "f16")
    seqs = M.golden_seqs()
    logits = M.llama_cpp_logits(M.llama_logits_tool(), out, seqs)
    hf = load_file(str(G.GOLD / f"{name}.safetensors"))
    tensors, meta = {}, {"variant": f"gguf-{name}-f16", "producer": "llama_logits.c (libllama, /work/llama.cpp build), n_ctx 256",
                         "gguf_file": f"gguf/{out.name}"}
    j = 0
    for i, ((plen, ids), lg) in enumerate(zip(seqs, logits)):
        d = float((lg - hf[f"logits.{i}"]).abs().max())
        G.log(f"  sequence {i} ({len(ids)} tokens): llama.cpp vs transformers max |dlogit| {d:.3g}")
        if len(ids) <= 21:
            continue
        tensors[f"input_ids.{j}"] = ids.clone()
        tensors[f"logits.{j}"] = lg.contiguous()
        meta[f"prompt_len.{j}"] = str(plen)
        j += 1
    save_file(tensors, str(G.GOLD / f"gguf-{name}-f16.safetensors"), metadata=meta)
    G.log(f"{out.name}: {out.stat().st_size} bytes; golden: {j} sequences")


if __name__ == "__main__":
    for stage in sys.argv[1:] or ["hf", "gguf"]:
        {"hf": stage_hf, "gguf": stage_gguf, "longrope": stage_longrope, "longrope-gguf": stage_longrope_gguf}[stage]()
