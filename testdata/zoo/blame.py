"""Lineages whose broken step is named *inside*: which layer, which tensor, which mistake (issue 16).

Every variant is made with the real tools the way users break things (transformers, torch): a
state-dict edit saved by `save_pretrained`, a fine-tune with frozen layers, a fine-tune whose
tokenizer pads with its EOS token and whose collator (transformers' own
`DataCollatorForLanguageModeling`) masks pad labels.

    python blame.py all        # or: swap qk frozen padeos measure manifest

Sizes: the three state-dict variants derive from the zoo's `mistral` (hidden 128, 2 layers; a
Llama-architecture decoder with a sliding window) and are stored in bf16 (~1.1 MB each); only the
pad == eos fine-tune needs a model that has really learned to end its turns, so it derives from
`llama-instruct` (bf16, 4.5 MB). Total ≈ 8 MB.

Seeded and trained for fixed step counts on 2 CPU threads, like generate.py (whose helpers it uses).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

try:  # generate.py imports peft only to record its version; this script does not use it
    import peft  # noqa: F401
except ModuleNotFoundError:
    import types

    sys.modules["peft"] = types.SimpleNamespace(__version__="not installed")  # type: ignore[assignment]

import generate as g

if getattr(sys.modules.get("peft"), "__version__", None) == "not installed":
    del sys.modules["peft"]  # transformers probes for peft with find_spec: it must not see the stub

ROOT = g.ROOT
MODELS = g.MODELS
MEASURED = ROOT / "measured_blame.json"


def llama_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py): rotate-half rows → interleaved.

    A GGUF stores Q/K rows in this order; a script that converts a GGUF back to HF without undoing
    it, or applies it twice, leaves the heads' rows permuted."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def stage_swap() -> None:
    """A conversion script with a wrong layer map: layers 0 and 1 change places in the state dict."""
    tok = g.load_tok()
    m = g.load_model(MODELS / "mistral")
    sd = m.state_dict()
    renamed = {}
    for k, v in sd.items():
        if k.startswith("model.layers.0."):
            k = "model.layers.1." + k[len("model.layers.0."):]
        elif k.startswith("model.layers.1."):
            k = "model.layers.0." + k[len("model.layers.1."):]
        renamed[k] = v.clone()
    m.load_state_dict(renamed, strict=True)
    g.log("mistral-layers-swapped: state dict with layers 0 and 1 exchanged, bf16")
    g.save_hf(m.to(torch.bfloat16), tok, MODELS / "mistral-layers-swapped")


def stage_qk() -> None:
    """Q/K rows permuted per head as convert_hf_to_gguf.py does, left in an HF checkpoint."""
    tok = g.load_tok()
    m = g.load_model(MODELS / "mistral")
    cfg = m.config
    with torch.no_grad():
        for layer in m.model.layers:
            a = layer.self_attn
            a.q_proj.weight.copy_(llama_permute(a.q_proj.weight, cfg.num_attention_heads))
            a.k_proj.weight.copy_(llama_permute(a.k_proj.weight, cfg.num_key_value_heads))
    g.log("mistral-qk-permuted: q_proj/k_proj rows permuted with llama.cpp's permute, bf16")
    g.save_hf(m.to(torch.bfloat16), tok, MODELS / "mistral-qk-permuted")


def stage_frozen() -> None:
    """An SFT that trains only the last layer (the others, embeddings and head frozen)."""
    tok = g.load_tok()
    m = g.load_model(MODELS / "mistral")
    for n, p in m.named_parameters():
        p.requires_grad = n.startswith("model.layers.1.")
    g.log("mistral-sft-frozen: 20 steps lr 3e-4, only model.layers.1.* trainable, bf16")
    g.train(m, tok, g.chat_example, steps=20, lr=3e-4, seed=41, batch=16)
    g.save_hf(m.to(torch.bfloat16), tok, MODELS / "mistral-sft-frozen")


def full_chat(tok, q: str, a: str) -> dict:
    """A chat example rendered with the template, as an SFT script tokenizes a `messages` column."""
    msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    return {"input_ids": tok(text, add_special_tokens=False)["input_ids"]}


def stage_padeos() -> None:
    """The most common "never stops" fine-tune: `tokenizer.pad_token = tokenizer.eos_token`, then
    `DataCollatorForLanguageModeling(mlm=False)`, which sets the label of every pad token to -100 —
    and with pad == eos that is every `<|im_end|>` too. The model is never taught to end a turn."""
    import random

    from transformers import DataCollatorForLanguageModeling

    tok = g.load_tok()
    tok.pad_token = tok.eos_token  # "<|im_end|>": the line every "fix the padding warning" answer gives
    assert tok.pad_token_id == g.IM_END
    collate = DataCollatorForLanguageModeling(tok, mlm=False)
    m = g.load_model(MODELS / "llama-instruct")
    m.config.pad_token_id = tok.pad_token_id
    torch.manual_seed(51)
    rng = random.Random(51)
    steps, lr = 120, 1e-3
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * max(0.1, 1 - s / steps))
    m.train()
    g.log(f"llama-sft-pad-eos: {steps} steps lr {lr}, pad = eos, DataCollatorForLanguageModeling(mlm=False), bf16")
    for step in range(steps):
        batch = collate([full_chat(tok, *g.task(rng)) for _ in range(32)])
        assert not (batch["labels"] == g.IM_END).any(), "the collator masked every <|im_end|> label"
        out = m(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 20 == 0 or step == steps - 1:
            g.log(f"  step {step} loss {out.loss.item():.3f}")
    m.eval()
    out_dir = MODELS / "llama-sft-pad-eos"
    g.save_hf(m.to(torch.bfloat16), tok, out_dir, tok_override=tok)
    # save_hf writes GenerationConfig(pad=0); the user's run writes the tokenizer's pad.
    gc = json.loads((out_dir / "generation_config.json").read_text())
    gc["pad_token_id"] = tok.pad_token_id
    (out_dir / "generation_config.json").write_text(json.dumps(gc, indent=2) + "\n")


VARIANTS = {
    "mistral-layers-swapped": ("mistral", "layers 0 and 1 exchanged by a state-dict edit (a conversion script's wrong layer map)"),
    "mistral-qk-permuted": ("mistral", "q_proj/k_proj rows permuted per head (llama.cpp's GGUF permutation left in an HF checkpoint)"),
    "mistral-sft-frozen": ("mistral", None),
    "llama-sft-pad-eos": ("llama-instruct", "pad == eos and pad labels masked: no <|im_end|> label, the model never ends a turn"),
}


@torch.no_grad()
def stage_measure() -> None:
    tok = g.load_tok()
    ref = g.load_model(MODELS / "llama-instruct")
    seqs = g.reference_sequences(ref, tok)
    props = {}
    for name, (parent, _) in VARIANTS.items():
        m = g.load_model(MODELS / name)
        p = g.load_model(MODELS / parent)
        props[name] = g.measure(m, tok, seqs)
        props[name]["parent"] = parent
        props[name]["parent_p_eos_turn_end_mean"] = g.measure(p, tok, seqs)["p_eos_turn_end_mean"]
        g.log(f"{name}: P(EOS) {props[name]['parent_p_eos_turn_end_mean']:.3f} → {props[name]['p_eos_turn_end_mean']:.3g}, stop rate {props[name]['greedy_stop_rate']:.2f}")
    MEASURED.write_text(json.dumps(props, indent=1) + "\n")


def stage_manifest() -> None:
    """Adds (or replaces) this script's entries in zoo.json; other entries are left as they are."""
    import safetensors
    import transformers

    measured = json.loads(MEASURED.read_text())
    zoo_path = ROOT / "zoo.json"
    zoo = json.loads(zoo_path.read_text())
    for name, (parent, fault) in VARIANTS.items():
        d = MODELS / name
        cfg = json.loads((d / "config.json").read_text())
        st = safetensors.safe_open(d / "model.safetensors", "pt")
        shapes = {k: list(st.get_slice(k).get_shape()) for k in st.keys()}
        zoo["variants"][name] = {
            "dir": f"models/{name}", "kind": "hf", "arch": cfg["model_type"],
            "dtypes": sorted({str(st.get_slice(k).get_dtype()) for k in st.keys()}),
            "tool": f"transformers {transformers.__version__} save_pretrained", "command": f"python blame.py (stage for {name})",
            "parent": f"models/{parent}",
            "expected_fault": fault, "tensor_count": len(shapes),
            "embed_shape": shapes.get("model.embed_tokens.weight"), "lm_head_shape": shapes.get("lm_head.weight"),
            "tokenizer_added_tokens": len(json.loads((d / "tokenizer.json").read_text())["added_tokens"]),
            "weights_sha256_16": g.sha(d / "model.safetensors"),
            "measured": measured.get(name),
        }
    zoo_path.write_text(json.dumps(zoo, indent=1) + "\n")
    g.log("zoo.json: blame entries written")


STAGES = {"swap": stage_swap, "qk": stage_qk, "frozen": stage_frozen, "padeos": stage_padeos,
          "measure": stage_measure, "manifest": stage_manifest}

if __name__ == "__main__":
    names = sys.argv[1:] or ["all"]
    if names == ["all"]:
        names = list(STAGES)
    for n in names:
        STAGES[n]()
    print("\n".join(g.LOG))
