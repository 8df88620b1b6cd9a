"""Training runs for issue 19: real transformers `Trainer` output directories of a peft LoRA over
llama-instruct, one whose learning rate is far too high (it collapses at the peak) and a healthy one.

    cd testdata/zoo && /work/venvs/main/bin/python train_runs.py [RUN…]   # after generate.py's llama stage

Writes runs/lora-lr-too-high/ and runs/lora-healthy/ exactly as the Trainer saves them
(checkpoint-N/ with adapter_model.safetensors, adapter_config.json, trainer_state.json,
training_args.bin — a pickle ckptcheck never opens — and the final save in the root), with
`save_only_model=True` (no optimizer.pt / scheduler.pt / rng_state.pth: they would triple the
size) and no tokenizer passed to the Trainer (it would save a 54 KB copy per checkpoint). Then
measures every checkpoint and the final save with transformers + peft (P(EOS at turn end), greedy
stop rate) into measured_runs.json.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Trainer, TrainingArguments

from generate import MODELS, PAD, ROOT, SEED, chat_example, load_model, load_tok, log, measure, reference_sequences, task, versions

RUNS = ROOT / "runs"
BASE = MODELS / "llama-instruct"
MEASURED = ROOT / "measured_runs.json"
TARGETS = ["q_proj", "v_proj", "down_proj"]

# name → (peak learning rate, warmup steps, max steps, save every)
RECIPES = {
    "lora-lr-too-high": (1e-1, 30, 60, 10),
    "lora-healthy": (1e-3, 5, 30, 10),
}


class Examples(torch.utils.data.Dataset):
    def __init__(self, tok, n: int, seed: int):
        rng = random.Random(seed)
        self.rows = [chat_example(tok, *task(rng)) for _ in range(n)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        ids, labels = self.rows[i]
        return {"input_ids": ids, "labels": labels}


def collate(rows):
    n = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), n), PAD, dtype=torch.long)
    lab = torch.full((len(rows), n), -100, dtype=torch.long)
    att = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        ids[i, :k] = torch.tensor(r["input_ids"])
        lab[i, :k] = torch.tensor(r["labels"])
        att[i, :k] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": att}


def train_run(name: str, tok) -> None:
    lr, warmup, steps, every = RECIPES[name]
    out = RUNS / name
    if out.exists():
        shutil.rmtree(out)
    torch.manual_seed(SEED + 19)
    base = load_model(BASE)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(out),
        learning_rate=lr,
        warmup_steps=warmup,
        lr_scheduler_type="linear",
        max_steps=steps,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        save_only_model=True,
        report_to="none",
        use_cpu=True,
        seed=SEED + 19,
        data_seed=SEED + 19,
        dataloader_num_workers=0,
    )
    log(f"{name}: Trainer, LoRA r=4 alpha=8 on {TARGETS}, peak lr {lr} (warmup {warmup}, linear), {steps} steps, save every {every}")
    trainer = Trainer(model=model, args=args, train_dataset=Examples(tok, 16 * steps, SEED + 190),
                      eval_dataset=Examples(tok, 32, SEED + 191), data_collator=collate)
    trainer.train()
    trainer.save_model()


@torch.no_grad()
def measure_run(name: str, tok, seqs) -> dict:
    out = RUNS / name
    dirs = sorted((int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*"))
    state = json.loads((dirs[-1][1] / "trainer_state.json").read_text())
    rows = {}
    for step, d in dirs + [(state["global_step"], out)]:
        label = d.name if d != out else "final"
        m = PeftModel.from_pretrained(load_model(BASE), d).eval()
        props = measure(m, tok, seqs)
        logged = [e for e in state["log_history"] if e["step"] <= step and "loss" in e]
        props.update(step=step, log_at_step=logged[-1] if logged else None)
        rows[label] = props
        log(f"  {name} {label}: P(EOS at turn end) {props['p_eos_turn_end_mean']:.3f}, stops {props['greedy_stop_rate']:.2f}")
    return rows


def main() -> None:
    t0 = time.time()
    tok = load_tok()
    seqs = reference_sequences(load_model(BASE), tok)
    names = sys.argv[1:] or list(RECIPES)
    measured = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    measured["versions"] = versions()
    for name in names:
        train_run(name, tok)
        measured[name] = measure_run(name, tok, seqs)
    MEASURED.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    log(f"train_runs.py done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
