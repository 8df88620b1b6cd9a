"""A LoRA adapter over the experts of an MoE model, and two merges of it: one right, one that
dropped every expert delta.

    /work/venvs/main/bin/python moe_lora.py            # after moe.py hf (models/qwen3-moe)
    /work/venvs/main/bin/python moe_lora.py manifest   # adds these entries to zoo.json
    /work/venvs/main/bin/python moe_lora.py mixtral    # after moe.py hf (models/mixtral)

transformers 5 holds an MoE block's experts as fused 3-D parameters (`mlp.experts.gate_up_proj`
`[experts, 2·moe_inter, hidden]`, `mlp.experts.down_proj` `[experts, hidden, moe_inter]`), so peft
adapts them with `target_parameters` (peft ≥ 0.17, `lora.ParamWrapper`), not `target_modules`;
checkpoints are still saved per expert (`mlp.experts.E.{gate,up,down}_proj.weight`).

Writes:
  models/qwen3-moe-lora-adapter           r 4, alpha 8 on q/k/v/o_proj + both expert parameters,
                                          trained 40 steps on the chat corpus (f32 adapter)
  goldens/qwen3-moe-lora-premerge         peft's forward of base (f32) + adapter, unmerged
  models/qwen3-moe-lora-merged            PeftModel.merge_and_unload() over the bf16 base
  models/qwen3-moe-lora-merged-no-experts the same merge with the adapter loaded as a peft that
                                          predates target_parameters does: the field is not in its
                                          LoraConfig, so the expert factors load as unexpected keys
                                          (peft warns) and only the attention deltas are folded in
  measured_moe_lora.json                  loss, peft's warning, P(EOS), max |ΔW| per merge

`mixtral` writes the same adapter shape over Mixtral, whose experts are stored as
`block_sparse_moe.experts.E.{w1,w3,w2}` but held by transformers 5 as `mlp.experts.gate_up_proj`
/ `down_proj` (so peft saves Qwen-style `mlp.experts` names that match no stored tensor):
  models/mixtral-lora-adapter             r 4, alpha 8, q/k/v/o + both expert parameters, 30 steps
  goldens/mixtral-lora-premerge           peft's unmerged forward over the f32 base, 2 prompts
  measured_moe_lora.json ["mixtral"]      loss and the adapter's saved key names
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate as G  # noqa: E402
import moe  # noqa: E402

BASE = G.MODELS / "qwen3-moe"
ADAPTER = G.MODELS / "qwen3-moe-lora-adapter"
MERGED = G.MODELS / "qwen3-moe-lora-merged"
DROPPED = G.MODELS / "qwen3-moe-lora-merged-no-experts"
MEASURED = G.ROOT / "measured_moe_lora.json"
TARGET_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def base_model(dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(BASE, dtype=dtype, attn_implementation="eager").eval()


def merge(adapter: Path, out: Path, tok) -> dict:
    """merge_and_unload over the bf16 base (how merges ship), saved like every zoo model."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(base_model(torch.bfloat16), adapter)
    merged = pm.merge_and_unload()
    G.save_hf(merged, tok, out)
    base, new = load_file(BASE / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k: float((new[k].float() - base[k].float()).abs().max()) for k in base if not torch.equal(new[k], base[k])}
    experts_changed = sum(".experts." in k for k in changed)
    msgs = sorted({str(w.message).split("\n")[0][:300] for w in caught if "key" in str(w.message).lower()})
    return {"tensors_changed": len(changed), "expert_tensors_changed": experts_changed, "peft_warnings": msgs}


def main() -> None:
    t0 = time.time()
    torch.set_num_threads(2)
    tok = G.load_tok()
    m = base_model(torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                     target_parameters=TARGET_PARAMETERS)
    pm = get_peft_model(m, cfg)
    loss = G.train(pm, tok, G.chat_example, steps=40, lr=5e-3, seed=G.SEED + 70)
    if ADAPTER.exists():
        shutil.rmtree(ADAPTER)
    pm.save_pretrained(ADAPTER)
    (ADAPTER / "README.md").unlink(missing_ok=True)
    ac = json.loads((ADAPTER / "adapter_config.json").read_text())
    pm.eval()
    moe.save_hf_golden(pm, "qwen3-moe-lora-premerge")
    measured = {"train_loss_last": loss, "premerge": G.measure(pm, tok, G.reference_sequences(base_model(torch.float32), tok))}

    measured["merged"] = merge(ADAPTER, MERGED, tok)
    # The same adapter as a peft without `target_parameters` reads it (LoraConfig has no such field).
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "adapter"
        shutil.copytree(ADAPTER, old)
        del ac["target_parameters"]
        (old / "adapter_config.json").write_text(json.dumps(ac, indent=2, sort_keys=True) + "\n")
        measured["merged-no-experts"] = merge(old, DROPPED, tok)
    measured["seconds"] = round(time.time() - t0, 1)
    MEASURED.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    G.log(json.dumps(measured, indent=1))


def mixtral() -> None:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    tok = G.load_tok()
    base = G.MODELS / "mixtral"
    out = G.MODELS / "mixtral-lora-adapter"
    m = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="eager").eval()
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                     target_parameters=TARGET_PARAMETERS)
    pm = get_peft_model(m, cfg)
    loss = G.train(pm, tok, G.chat_example, steps=30, lr=5e-3, seed=G.SEED + 71)
    if out.exists():
        shutil.rmtree(out)
    pm.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)
    pm.eval()
    moe.save_hf_golden(pm, "mixtral-lora-premerge", seqs=moe.golden_seqs()[:2])
    keys = sorted(load_file(out / "adapter_model.safetensors"))
    measured = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    measured["mixtral"] = {"train_loss_last": loss, "expert_keys": [k for k in keys if ".layers.0." in k and "experts" in k]}
    MEASURED.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    G.log(json.dumps(measured["mixtral"], indent=1))


def manifest() -> None:
    """Adds (or refreshes) this script's entries in zoo.json; every other entry is left as it is."""
    import hashlib

    import peft
    from safetensors import safe_open

    zoo = json.loads((G.ROOT / "zoo.json").read_text())
    measured = json.loads(MEASURED.read_text())
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()[:16]  # noqa: E731
    ac = json.loads((ADAPTER / "adapter_config.json").read_text())
    st = safe_open(str(ADAPTER / "adapter_model.safetensors"), "pt")
    zoo["variants"]["qwen3-moe-lora-adapter"] = {
        "dir": "models/qwen3-moe-lora-adapter", "kind": "peft-adapter", "arch": "qwen3_moe", "dtypes": ["F32"],
        "tool": f"peft {peft.__version__}: get_peft_model(qwen3-moe, LoraConfig(r=4, lora_alpha=8, target_modules=q,k,v,o, "
                f"target_parameters={TARGET_PARAMETERS})), 40 steps AdamW lr 5e-3 on chat tasks, PeftModel.save_pretrained",
        "command": "python moe_lora.py", "expected_fault": None, "fault_code": None, "parent": "qwen3-moe",
        "base": "models/qwen3-moe", "tensor_count": len(st.keys()), "embed_shape": None, "lm_head_shape": None,
        "tokenizer_added_tokens": None, "weights_sha256_16": sha(ADAPTER / "adapter_model.safetensors"),
        "golden": {"path": "goldens/qwen3-moe-lora-premerge.safetensors", "has_hidden": True,
                   "note": "unmerged PeftModel forward (qwen3-moe f32 + adapter)"},
        "properties": {"r": ac["r"], "lora_alpha": ac["lora_alpha"], "target_modules": sorted(ac["target_modules"]),
                       "target_parameters": ac["target_parameters"], "shapes": {k: list(st.get_slice(k).get_shape())
                                                                                for k in st.keys() if ".layers.0.mlp" in k}},
        "measured": {k: measured[k] for k in ("train_loss_last", "premerge")},
    }
    faults = {"qwen3-moe-lora-merged": (None, "PeftModel.from_pretrained(bf16 base, adapter).merge_and_unload()"),
              "qwen3-moe-lora-merged-no-experts": (
                  "the 24 expert weights equal qwen3-moe's; the 8 attention weights are merged",
                  "the adapter loaded with target_parameters removed from adapter_config.json (as a peft that predates "
                  "the field reads it), merge_and_unload()")}
    for name, (fault, how) in faults.items():
        d = G.MODELS / name
        st = safe_open(str(d / "model.safetensors"), "pt")
        shapes = {k: list(st.get_slice(k).get_shape()) for k in st.keys()}
        zoo["variants"][name] = {
            "dir": f"models/{name}", "kind": "hf", "arch": "qwen3_moe", "dtypes": ["BF16"],
            "tool": f"peft {peft.__version__}: {how}, save_pretrained bf16", "command": "python moe_lora.py",
            "expected_fault": fault, "fault_code": "merge-expert-delta-dropped" if fault else None, "parent": "qwen3-moe",
            "tensor_count": len(shapes), "embed_shape": shapes.get("model.embed_tokens.weight"),
            "lm_head_shape": shapes.get("lm_head.weight"),
            "tokenizer_added_tokens": len(json.loads((d / "tokenizer.json").read_text())["added_tokens"]),
            "weights_sha256_16": sha(d / "model.safetensors"), "golden": None,
            "measured": measured[name.replace("qwen3-moe-lora-", "")],
        }
    mx = G.MODELS / "mixtral-lora-adapter"
    st = safe_open(str(mx / "adapter_model.safetensors"), "pt")
    zoo["variants"]["mixtral-lora-adapter"] = {
        "dir": "models/mixtral-lora-adapter", "kind": "peft-adapter", "arch": "mixtral", "dtypes": ["F32"],
        "tool": f"peft {peft.__version__}: the qwen3-moe-lora-adapter LoraConfig over mixtral (f32), 30 steps AdamW lr 5e-3 "
                "on chat tasks, PeftModel.save_pretrained (expert factors saved under mlp.experts, as transformers 5 holds them)",
        "command": "python moe_lora.py mixtral", "expected_fault": None, "fault_code": None, "parent": "mixtral",
        "base": "models/mixtral", "tensor_count": len(st.keys()), "embed_shape": None, "lm_head_shape": None,
        "tokenizer_added_tokens": None, "weights_sha256_16": sha(mx / "adapter_model.safetensors"),
        "golden": {"path": "goldens/mixtral-lora-premerge.safetensors", "has_hidden": True,
                   "note": "unmerged PeftModel forward (mixtral f32 + adapter), first two golden sequences"},
        "measured": measured["mixtral"],
    }
    (G.ROOT / "zoo.json").write_text(json.dumps(zoo, indent=1) + "\n")
    G.log("zoo.json: MoE LoRA entries added")


if __name__ == "__main__":
    {"manifest": manifest, "mixtral": mixtral}.get(sys.argv[1] if sys.argv[1:] else "", main)()
