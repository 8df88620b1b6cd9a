#!/usr/bin/env python3
"""Write random-init (seeded) Llama checkpoints of realistic shape for the speed/memory benchmark.

Run from the bench venv (bench/setup.sh):

    $BENCH_ENV/bin/python bench/make_models.py llama-0.25b            # HF dir + GGUF F16/Q8_0/Q4_K_M
    $BENCH_ENV/bin/python bench/make_models.py llama-0.9b --perturb 1e-3
    $BENCH_ENV/bin/python bench/make_models.py l8b-2layers l8b-6layers --perturb 1e-3   # no GGUF unless --gguf

Output: ${BENCH_MODELS:-/work/bench-models}/<preset>/ (HF dir, bf16 safetensors, tokenizer),
<preset>-cand/ with --perturb (same weights + relative noise), and <preset>/gguf/<preset>-{F16,Q8_0,Q4_K_M}.gguf.
Every file is generated: never commit any of it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_MODELS = Path(os.environ.get("BENCH_MODELS", "/work/bench-models"))
LLAMA_DIR = Path(os.environ.get("LLAMA_DIR", "/work/llama.cpp"))
VOCAB = 32000

# name: (hidden, intermediate, layers, heads, kv_heads, head_dim, rope_theta, gguf_by_default)
PRESETS = {
    "llama-0.25b": (1024, 2816, 16, 16, 4, 64, 10000.0, True),      # 245.8 M params
    "llama-0.9b": (2048, 5632, 16, 16, 8, 128, 10000.0, True),      # 886.0 M params
    "l8b-2layers": (4096, 14336, 2, 32, 8, 128, 500000.0, False),   # Llama-3-8B layer shape, 698 M
    "l8b-6layers": (4096, 14336, 6, 32, 8, 128, 500000.0, False),   # 1.57 B
    "llama-8b": (4096, 14336, 32, 32, 8, 128, 500000.0, False),     # Llama-3-8B shape, 7.5 B (32k vocab)
}
# Presets too big to build as one torch module in RAM (8B in f32 is 32 GB): written tensor by
# tensor into shards instead (make_hf_streamed).
STREAMED = {"llama-8b"}
SHARD_BYTES = 2 << 30

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0 (pad), 1, 2 (eos)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def log(msg: str) -> None:
    print(f"[make_models {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def corpus_files() -> list[Path]:
    """Plain English text that every Debian machine has (licences, copyright files)."""
    files = sorted(Path("/usr/share/common-licenses").glob("*"))
    files += sorted(Path("/usr/share/doc").glob("*/copyright"))
    files += sorted(Path(sys.base_prefix).glob("lib/python3*/LICENSE.txt"))
    return [f for f in files if f.is_file() and not f.is_symlink()]


def corpus_text(max_bytes: int = 12_000_000) -> str:
    out, size = [], 0
    for f in corpus_files():
        t = f.read_text(errors="replace")
        out.append(t)
        size += len(t)
        if size >= max_bytes:
            break
    return "\n".join(out)


def tokenizer_dir() -> Path:
    """A byte-level BPE with exactly VOCAB entries (llama.cpp's converter wants vocab == n_vocab),
    trained once and shared by every preset."""
    d = BENCH_MODELS / "_tokenizer"
    if (d / "tokenizer.json").exists():
        return d
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    log("training the 32000-entry byte-level BPE tokenizer")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIALS, min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    text = corpus_text()
    lines = text.splitlines()
    tok.train_from_iterator(lines, trainer=trainer)
    n = tok.get_vocab_size()
    if n < VOCAB:  # a small corpus may run out of merges: fill up with plain (non-special) tokens
        tok.add_tokens([f"<filler_{i}>" for i in range(VOCAB - n)])
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    d.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(d)
    log(f"tokenizer: {n} trained entries, {VOCAB - n} fillers → {d}")
    return d


def n_params(h, i, l, nh, nkv, hd) -> int:
    attn = h * nh * hd * 2 + h * nkv * hd * 2
    return l * (attn + 3 * h * i + 2 * h) + 2 * VOCAB * h + h


def llama_config(name: str, **extra):
    """The LlamaConfig of a preset (both writers use it)."""
    from transformers import LlamaConfig

    h, i, l, nh, nkv, hd, theta, _ = PRESETS[name]
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=h, intermediate_size=i, num_hidden_layers=l,
        num_attention_heads=nh, num_key_value_heads=nkv, head_dim=hd, max_position_embeddings=4096,
        rms_norm_eps=1e-5, rope_theta=theta, tie_word_embeddings=False, hidden_act="silu",
        bos_token_id=None, eos_token_id=2, pad_token_id=0, attention_bias=False, mlp_bias=False, **extra)


def make_hf_streamed(name: str, seed: int, perturb: float | None, force: bool) -> tuple[Path, Path | None]:
    """The same checkpoint make_hf writes (config by transformers, transformers' init: normal(0,
    0.02) matrices, ones for norms; bf16; sharded safetensors + index like save_pretrained), one
    tensor at a time, so peak memory is one shard per output, not the model."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, GenerationConfig

    h, i, l, nh, nkv, hd, _, _ = PRESETS[name]
    ref = BENCH_MODELS / name
    cand = BENCH_MODELS / f"{name}-cand" if perturb else None
    outs = [d for d in (ref, cand) if d is not None]
    if all((d / "model.safetensors.index.json").exists() for d in outs) and not force:
        log(f"{name}: HF checkpoint(s) already there")
        return ref, cand
    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    cfg = llama_config(name, torch_dtype="bfloat16")
    shapes = [("model.embed_tokens.weight", (VOCAB, h))]
    for n in range(l):
        p = f"model.layers.{n}."
        shapes += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                   (p + "self_attn.q_proj.weight", (nh * hd, h)), (p + "self_attn.k_proj.weight", (nkv * hd, h)),
                   (p + "self_attn.v_proj.weight", (nkv * hd, h)), (p + "self_attn.o_proj.weight", (h, nh * hd)),
                   (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                   (p + "mlp.down_proj.weight", (h, i))]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (VOCAB, h))]
    shards, cur, size = [], [], 0
    for t in shapes:
        b = 2 * int(torch.Size(t[1]).numel())
        if cur and size + b > SHARD_BYTES:
            shards.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += b
    shards.append(cur)
    log(f"{name}: {n_params(h, i, l, nh, nkv, hd) / 1e9:.2f} B params in {len(shards)} shards (seed {seed})")
    total = sum(2 * int(torch.Size(s).numel()) for _, s in shapes)
    for d in outs:
        d.mkdir(parents=True, exist_ok=True)
        cfg.save_pretrained(d)
        GenerationConfig(eos_token_id=2, pad_token_id=0).save_pretrained(d)
        tok.save_pretrained(d)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        ref_t, cand_t = {}, {}
        for j, (tname, shape) in enumerate(shard):
            g = torch.Generator().manual_seed(seed * 100003 + len(weight_map))
            w = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=g) * 0.02
            ref_t[tname] = w.to(torch.bfloat16)
            if cand is not None:
                gc = torch.Generator().manual_seed(seed * 100003 + len(weight_map) + 7919)
                noise = torch.randn(shape, generator=gc) * (perturb * w.abs().mean())
                cand_t[tname] = (w + noise).to(torch.bfloat16)
            weight_map[tname] = fname
        save_file(ref_t, str(ref / fname), metadata={"format": "pt"})
        if cand is not None:
            save_file(cand_t, str(cand / fname), metadata={"format": "pt"})
        log(f"{name}: shard {k + 1}/{len(shards)} written")
    for d in outs:
        (d / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return ref, cand


def make_hf(name: str, seed: int, perturb: float | None, force: bool) -> tuple[Path, Path | None]:
    if name in STREAMED:
        return make_hf_streamed(name, seed, perturb, force)
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    h, i, l, nh, nkv, hd, _, _ = PRESETS[name]
    ref = BENCH_MODELS / name
    cand = BENCH_MODELS / f"{name}-cand" if perturb else None
    done = (ref / "model.safetensors").exists() or (ref / "model.safetensors.index.json").exists()
    cand_done = cand is None or (cand / "config.json").exists()
    if done and cand_done and not force:
        log(f"{name}: HF checkpoint(s) already there")
        return ref, cand
    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    cfg = llama_config(name)
    log(f"{name}: init {n_params(h, i, l, nh, nkv, hd) / 1e6:.1f} M params (seed {seed})")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    for d, label in ((ref, "reference"), (cand, "candidate")):
        if d is None:
            continue
        if label == "candidate":
            # same weights plus relative noise: w + eps * randn * mean|w| (per tensor), seeded
            g = torch.Generator().manual_seed(seed + 1)
            with torch.no_grad():
                for p in model.parameters():
                    scale = p.float().abs().mean()
                    noise = torch.randn(p.shape, generator=g) * (perturb * scale)
                    p.copy_((p.float() + noise).to(p.dtype))
        d.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
        log(f"{name}: {label} saved → {d}")
    del model
    return ref, cand


# convert_hf_to_gguf.py refuses a newly trained BPE ("BPE pre-tokenizer was not recognized"):
# map the unknown hash to the gpt-2 pre-tokenizer, the same byte-level split (toolchain.md).
CONVERT_WRAPPER = r"""
import runpy, sys
sys.path.insert(0, sys.argv[1])
import conversion.base as base
orig = base.TextModel.get_vocab_base_pre
def pre(self, tokenizer):
    try:
        return orig(self, tokenizer)
    except NotImplementedError:
        return "gpt-2"
base.TextModel.get_vocab_base_pre = pre
script = sys.argv[1] + "/convert_hf_to_gguf.py"
sys.argv = [script] + sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def make_gguf(name: str, ref: Path, types: list[str], force: bool) -> None:
    out = ref / "gguf"
    out.mkdir(exist_ok=True)
    f16 = out / f"{name}-F16.gguf"
    if force or not f16.exists():
        log(f"{name}: converting to GGUF F16")
        tmp = f16.with_suffix(".tmp")
        subprocess.run([sys.executable, "-c", CONVERT_WRAPPER, str(LLAMA_DIR), str(ref),
                        "--outtype", "f16", "--outfile", str(tmp)], check=True)
        tmp.rename(f16)
    quant = LLAMA_DIR / "build/bin/llama-quantize"
    for t in types:
        if t == "F16":
            continue
        q = out / f"{name}-{t}.gguf"
        if q.exists() and not force:
            continue
        log(f"{name}: quantizing to {t}")
        subprocess.run([str(quant), str(f16), str(q), t, "2"], check=True,
                       stdout=subprocess.DEVNULL)
    for f in sorted(out.glob("*.gguf")):
        log(f"  {f}  {f.stat().st_size / 2**20:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("presets", nargs="+", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--perturb", type=float, default=None,
                    help="also write <preset>-cand: same weights + EPS relative noise (e.g. 1e-3)")
    ap.add_argument("--gguf", action="store_true", help="make GGUFs for l8b-* presets too")
    ap.add_argument("--no-gguf", action="store_true", help="make no GGUF at all")
    ap.add_argument("--gguf-types", default="F16,Q8_0,Q4_K_M")
    ap.add_argument("--force", action="store_true", help="regenerate existing files")
    a = ap.parse_args()
    BENCH_MODELS.mkdir(parents=True, exist_ok=True)
    for name in a.presets:
        ref, _ = make_hf(name, a.seed, a.perturb, a.force)
        if not a.no_gguf and (PRESETS[name][7] or a.gguf):
            make_gguf(name, ref, a.gguf_types.split(","), a.force)
        info = {"preset": name, "shape": dict(zip(
            ["hidden", "intermediate", "layers", "heads", "kv_heads", "head_dim", "rope_theta"],
            PRESETS[name][:7])), "params": n_params(*PRESETS[name][:6]), "seed": a.seed,
            "perturb": a.perturb}
        (ref / "bench-preset.json").write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
