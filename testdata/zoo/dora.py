"""DoRA + rsLoRA part of the zoo: a real peft adapter with `use_dora=True, use_rslora=True` on
llama-instruct, the unmerged PeftModel's golden, and its `merge_and_unload` merge (saved in bf16, as
merged models usually are).

    /work/venvs/main/bin/python dora.py      # after generate.py's tokenizer + llama stages

Writes models/llama-dora-adapter, models/llama-dora-merged and goldens/llama-dora-premerge.safetensors.
"""

from __future__ import annotations

import shutil

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from generate import MODELS, SEED, chat_example, load_model, load_tok, log, reference_sequences, train
from lora import golden

TARGETS = ["q_proj", "v_proj", "down_proj"]


def main() -> None:
    tok = load_tok()
    src = MODELS / "llama-instruct"
    seqs = reference_sequences(load_model(src), tok)
    adir = MODELS / "llama-dora-adapter"
    cfg = LoraConfig(r=4, lora_alpha=8, use_dora=True, use_rslora=True, lora_dropout=0.0,
                     target_modules=TARGETS, task_type="CAUSAL_LM")
    torch.manual_seed(SEED + 7)
    pm = get_peft_model(load_model(src), cfg)
    log("llama-dora-adapter: LoraConfig(r=4, lora_alpha=8, use_dora, use_rslora, q/v/down), 30 steps, AdamW 5e-3")
    train(pm, tok, chat_example, steps=30, lr=5e-3, seed=7)
    if adir.exists():
        shutil.rmtree(adir)
    pm.save_pretrained(adir)

    pm = PeftModel.from_pretrained(load_model(src), adir).eval()
    golden(pm, "llama-dora-premerge", seqs, hidden=False)
    merged = pm.merge_and_unload().to(torch.bfloat16)
    out = MODELS / "llama-dora-merged"
    if out.exists():
        shutil.rmtree(out)
    merged.save_pretrained(out)
    tok.save_pretrained(out)
    log("llama-dora-merged: merge_and_unload, bf16")


if __name__ == "__main__":
    main()
