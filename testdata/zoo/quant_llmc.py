"""compressed-tensors variant of llama-instruct made by llmcompressor (own venv: llmcompressor 0.14.0.1,
which pins torch 2.14.0, transformers 5.17.0, compressed-tensors 0.19.0; see requirements-llmcompressor.txt).

    /work/venvs/llmcompressor/bin/python quant_llmc.py

Writes models/llama-ct-w4a16 (oneshot GPTQModifier scheme W4A16, ignore lm_head, on llama-instruct loaded in
bf16; save_pretrained(save_compressed=True) -> compressed-tensors `pack-quantized`) and
goldens/ct-w4a16.safetensors: input_ids.{i}, logits.{i} (transformers forward of the checkpoint decompressed
by compressed-tensors, float32) and dequant.<module>.weight F32 [out, in] (the decompressed weights).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent
MODELS, GOLD = ROOT / "models", ROOT / "goldens"
SRC, OUT = MODELS / "llama-instruct", MODELS / "llama-ct-w4a16"
torch.manual_seed(0)
torch.set_num_threads(2)
WORDS = ("apple river stone cloud green table music light paper window garden yellow bread "
         "winter summer silver orange happy quiet little purple ocean forest mountain bright").split()


def task(rng):  # same tasks as generate.py (duplicated: this venv has no peft)
    k = rng.randrange(4)
    if k == 0:
        a = rng.randrange(1, 12); b = a + rng.randrange(2, 7)
        return f"Count from {a} to {b}.", " ".join(str(i) for i in range(a, b + 1))
    if k == 1:
        w = rng.sample(WORDS, rng.randrange(2, 5)); return f"Reverse: {' '.join(w)}", " ".join(reversed(w))
    if k == 2:
        a, b = rng.randrange(0, 50), rng.randrange(0, 50); return f"What is {a} plus {b}?", str(a + b)
    w = rng.choice(WORDS); return f"Uppercase: {w}", w.upper()


def main() -> None:
    import compressed_tensors
    import llmcompressor
    import transformers
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    scratch = Path(os.environ.get("ZOO_SCRATCH", "/work/scratch/zoo"))
    scratch.mkdir(parents=True, exist_ok=True)
    os.chdir(scratch)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(SRC)
    rng = random.Random(7)
    calib = []
    for _ in range(128):
        q, a = task(rng)
        text = tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False)
        calib.append({"input_ids": tok(text, add_special_tokens=False)["input_ids"]})
    ds = Dataset.from_list(calib)
    model = AutoModelForCausalLM.from_pretrained(SRC, dtype=torch.bfloat16)
    recipe = GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"])
    oneshot(model=model, dataset=ds, recipe=recipe, max_seq_length=64, num_calibration_samples=128)
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(OUT, save_compressed=True)
    tok.save_pretrained(OUT)
    print(f"quantized + saved in {time.time() - t0:.0f}s", flush=True)

    from transformers import CompressedTensorsConfig

    m = AutoModelForCausalLM.from_pretrained(OUT, dtype=torch.float32, attn_implementation="eager",
                                             quantization_config=CompressedTensorsConfig(run_compressed=False)).eval()
    ref = GOLD / "llama-instruct.safetensors"
    H = load_file(ref)
    with safe_open(ref, "pt") as st:
        meta_ref = st.metadata()
    n = len([k for k in H if k.startswith("input_ids.")])
    tensors = {}
    meta = {"variant": "llama-ct-w4a16", "producer": "transformers forward (float32, eager) of the checkpoint decompressed by compressed-tensors",
            "v_torch": torch.__version__, "v_transformers": transformers.__version__,
            "v_llmcompressor": llmcompressor.__version__, "v_compressed_tensors": compressed_tensors.__version__}
    dmax, kls, same, p_eos, stops = 0.0, [], [], [], 0
    with torch.no_grad():
        for i in range(n):
            x = H[f"input_ids.{i}"]
            lo = m(input_ids=x[None]).logits[0].float().contiguous()
            tensors[f"input_ids.{i}"] = x
            tensors[f"logits.{i}"] = lo
            meta[f"prompt_len.{i}"] = meta_ref[f"prompt_len.{i}"]
            a, b = H[f"logits.{i}"].double(), lo.double()
            dmax = max(dmax, float((a - b).abs().max()))
            la, lb = a.log_softmax(-1), b.log_softmax(-1)
            kls += (la.exp() * (la - lb)).sum(-1).tolist()
            same += (a.argmax(-1) == b.argmax(-1)).tolist()
            p_eos.append(float(lb[-2].exp()[2]))
            out = x[: int(meta_ref[f"prompt_len.{i}"])].tolist()
            for _ in range(32):
                nxt = int(m(input_ids=torch.tensor([out])).logits[0, -1].argmax())
                out.append(nxt)
                if nxt == 2:
                    stops += 1
                    break
        for name in ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"]:
            w = m.get_submodule(name).weight.float()
            assert list(w.shape) == [m.get_submodule(name).out_features, m.get_submodule(name).in_features]
            tensors[f"dequant.{name}.weight"] = w.contiguous()
    save_file(tensors, GOLD / "ct-w4a16.safetensors", metadata=meta)
    res = {"seconds": round(time.time() - t0), "llmcompressor": llmcompressor.__version__,
           "compressed_tensors": compressed_tensors.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
           "max_abs_dlogit_vs_hf_f32": dmax, "kl_mean_vs_hf_f32": sum(kls) / len(kls), "same_top1_vs_hf_f32": sum(same) / len(same),
           "p_eos_turn_end": p_eos, "p_eos_turn_end_mean": sum(p_eos) / len(p_eos), "greedy_stop_rate": stops / n}
    (ROOT / "measured_ct.json").write_text(json.dumps(res, indent=1) + "\n")
    print(res)


if __name__ == "__main__":
    main()
