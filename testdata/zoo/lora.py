"""LoRA part of the zoo: a real peft adapter on llama-instruct and its merges, good and broken.

    /work/venvs/main/bin/python lora.py      # after generate.py's tokenizer + llama stages

Imports the helpers of generate.py. Writes models/llama-lora-adapter, llama-lora-merged,
llama-merge-wrong-scale, llama-merge-skip-module, llama-merge-fp16-overflow, goldens for the unmerged
PeftModel (goldens/llama-lora-premerge.safetensors) and every merge, and measured_lora.json.
"""

from __future__ import annotations

import json
import shutil
import time

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file

from generate import (GOLD, MODELS, ROOT, SCRATCH, SEED, chat_example, load_model, load_tok, log, measure,
                      reference_sequences, save_hf, train, versions)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHARD = "1MB"  # merged-family f32 checkpoints are sharded: a one-module difference then costs one shard in git
MEASURED = ROOT / "measured_lora.json"
WORK = SCRATCH / "lora"


def record(name: str, props: dict) -> None:
    m = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    m.setdefault(name, {}).update(props)
    MEASURED.write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")


@torch.no_grad()
def golden(model, name: str, seqs, hidden: bool) -> None:
    """Same layout as generate.py's goldens (input_ids.{i}, logits.{i}, hidden.{i}; metadata prompt_len.{i})."""
    tensors, meta = {}, {"variant": name, **{f"v_{k}": v for k, v in versions().items()}}
    for i, (plen, full) in enumerate(seqs):
        out = model(input_ids=torch.tensor([full]), output_hidden_states=hidden)
        tensors[f"input_ids.{i}"] = torch.tensor(full, dtype=torch.int64)
        tensors[f"logits.{i}"] = out.logits[0].float().contiguous()
        if hidden:
            tensors[f"hidden.{i}"] = torch.stack([h[0] for h in out.hidden_states]).float().contiguous()
        meta[f"prompt_len.{i}"] = str(plen)
    save_file(tensors, GOLD / f"{name}.safetensors", metadata=meta)


def finish(model, tok, name: str, seqs, hidden: bool = False) -> None:
    model.eval()
    golden(model, name, seqs, hidden)
    props = measure(model, tok, seqs)
    record(name, props)
    log(f"{name}: P(EOS at turn end) {props['p_eos_turn_end_mean']:.3f}, greedy stop rate {props['greedy_stop_rate']:.2f}")


def main() -> None:
    t0 = time.time()
    tok = load_tok()
    src = MODELS / "llama-instruct"
    WORK.mkdir(parents=True, exist_ok=True)
    GOLD.mkdir(exist_ok=True)
    seqs = reference_sequences(load_model(src), tok)
    adir = MODELS / "llama-lora-adapter"

    # 1. the adapter
    base = load_model(src)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    torch.manual_seed(SEED + 5)
    pm = get_peft_model(base, cfg)
    log("llama-lora-adapter: LoraConfig(r=8, lora_alpha=16, 7 targets), 60 steps, AdamW lr 5e-3, chat template + <|im_end|>")
    train(pm, tok, chat_example, steps=60, lr=5e-3, seed=5)
    if adir.exists():
        shutil.rmtree(adir)
    pm.save_pretrained(adir)
    tok.save_pretrained(adir)

    # 2. base + adapter, unmerged (the premerge reference)
    pm = PeftModel.from_pretrained(load_model(src), adir).eval()
    finish(pm, tok, "llama-lora-premerge", seqs, hidden=True)

    # 3. correct merge, f32, sharded
    merged = PeftModel.from_pretrained(load_model(src), adir).merge_and_unload()
    save_sharded(merged, tok, MODELS / "llama-lora-merged")
    finish(merged, tok, "llama-lora-merged", seqs, hidden=True)

    # 4. wrong scale: scaling = lora_alpha (16) instead of lora_alpha / r (2), then merge; saved bf16
    pm = PeftModel.from_pretrained(load_model(src), adir)
    n = 0
    for _, mod in pm.named_modules():
        if isinstance(mod, LoraLayer):
            mod.scaling["default"] = 16.0
            n += 1
    log(f"llama-merge-wrong-scale: scaling set to 16.0 on {n} LoRA layers before merge_and_unload")
    m = pm.merge_and_unload()
    save_hf(m.to(torch.bfloat16), tok, MODELS / "llama-merge-wrong-scale")
    finish(load_model(MODELS / "llama-merge-wrong-scale"), tok, "llama-merge-wrong-scale", seqs)

    # 5. skip module: the adapter file lost layer 1's v_proj keys (filtered/renamed when copied); peft loads
    #    it with a missing-keys warning, that lora_B stays zero-initialised, the merge folds nothing there.
    partial = WORK / "adapter-missing-layer1-v_proj"
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(adir, partial)
    sd = load_file(adir / "adapter_model.safetensors")
    dropped = sorted(k for k in sd if "layers.1.self_attn.v_proj" in k)
    sd = {k: v for k, v in sd.items() if k not in dropped}
    save_file(sd, partial / "adapter_model.safetensors", metadata={"format": "pt"})
    log(f"llama-merge-skip-module: adapter without {dropped}")
    pm = PeftModel.from_pretrained(load_model(src), partial)
    m = pm.merge_and_unload()
    save_sharded(m, tok, MODELS / "llama-merge-skip-module")
    finish(m, tok, "llama-merge-skip-module", seqs)

    # 6. fp16 overflow: a diverged adapter (lora_B of layers.0.mlp.down_proj scaled so its largest delta entry is 2x65504, as after a loss spike)
    #    merged onto the base loaded in float16: peft computes the delta in f32 on CPU and casts it back to
    #    f16, entries beyond 65504 become +-inf, and save_pretrained writes them into the f16 file.
    pm = PeftModel.from_pretrained(load_model(src).half(), adir)
    with torch.no_grad():
        mod = pm.base_model.model.model.layers[0].mlp.down_proj
        delta = mod.get_delta_weight("default").float().abs().max()
        factor = float(2 * 65504 / delta)  # the diverged adapter's largest delta entry is 2x the f16 range
        mod.lora_B["default"].weight.mul_(factor)
    log(f"llama-merge-fp16-overflow: lora_B of layers.0.mlp.down_proj scaled x{factor:.4g}")
    record("llama-merge-fp16-overflow", {"lora_B_scale": factor})
    m = pm.merge_and_unload()
    w = m.model.layers[0].mlp.down_proj.weight
    ninf = int(torch.isinf(w).sum())
    log(f"llama-merge-fp16-overflow: {ninf} inf values in model.layers.0.mlp.down_proj.weight ({w.dtype})")
    save_hf(m, tok, MODELS / "llama-merge-fp16-overflow")
    record("llama-merge-fp16-overflow", {"inf_values": ninf})
    finish(load_model(MODELS / "llama-merge-fp16-overflow"), tok, "llama-merge-fp16-overflow", seqs)

    # merge algebra: merged vs unmerged PEFT forward
    a = load_file(GOLD / "llama-lora-premerge.safetensors")
    b = load_file(GOLD / "llama-lora-merged.safetensors")
    d = max(float((a[f"logits.{i}"] - b[f"logits.{i}"]).abs().max()) for i in range(len(seqs)))
    record("llama-lora-merged", {"max_abs_dlogit_vs_premerge": d})
    log(f"merged vs premerge max |dlogit| {d:.2e}; lora.py done in {time.time() - t0:.0f}s")
    record("_seconds", {"lora.py": round(time.time() - t0)})


def save_sharded(model, tok, out) -> None:
    from transformers import GenerationConfig

    from generate import IM_END, PAD

    if out.exists():
        shutil.rmtree(out)
    model.generation_config = GenerationConfig(eos_token_id=IM_END, pad_token_id=PAD, bos_token_id=None)
    model.save_pretrained(out, max_shard_size=SHARD)
    tok.save_pretrained(out)


if __name__ == "__main__":
    main()
