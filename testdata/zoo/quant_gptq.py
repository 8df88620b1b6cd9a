"""GPTQ variants of llama-instruct made by gptqmodel (its own venv: torch 2.15.0, transformers 5.24.0,
gptqmodel 7.7.0, optimum 2.3.0; see requirements-gptqmodel.txt).

    GPTQMODEL_CPU_WORKERS=2 /work/venvs/gptqmodel/bin/python quant_gptq.py [VARIANT ...]   # default: all

Variants (QuantizeConfig): llama-gptq-w4g128 (bits 4, group 128, sym, no act-order), llama-gptq-w8g128-asym
(bits 8, group 128, asymmetric), llama-gptq-w3g128-act (bits 3, group 128, sym, desc_act=True: act-order, so
g_idx is a permutation of the groups). Each writes models/<variant> (gptqmodel save: qweight/qzeros/scales/g_idx,
quantize_config in config.json) and goldens/gptq-<variant minus llama-gptq->.safetensors: input_ids.{i},
logits.{i} (the quantized model's forward through gptqmodel's torch kernel, float32 activations) and
dequant.<module> F32 [out, in]: weights dequantized by gptqmodel's own TorchQuantLinear.dequantize_weight().
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent
MODELS, GOLD = ROOT / "models", ROOT / "goldens"
VARIANTS = {
    "llama-gptq-w4g128": dict(bits=4, group_size=128, sym=True, desc_act=False),
    "llama-gptq-w8g128-asym": dict(bits=8, group_size=128, sym=False, desc_act=False),
    "llama-gptq-w3g128-act": dict(bits=3, group_size=128, sym=True, desc_act=True),
}
SRC = MODELS / "llama-instruct"
torch.manual_seed(0)
torch.set_num_threads(2)

# same synthetic chat tasks as generate.py (duplicated: this venv has no peft, which generate.py imports)
WORDS = ("apple river stone cloud green table music light paper window garden yellow bread "
         "winter summer silver orange happy quiet little purple ocean forest mountain bright").split()


def task(rng):
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
    measured = ROOT / "measured_gptq.json"
    res = json.loads(measured.read_text()) if measured.exists() else {}
    if "seconds" in res:  # the file's first layout: one variant, llama-gptq-w4g128, at the top level
        res = {"llama-gptq-w4g128": res}
    for variant in sys.argv[1:] or list(VARIANTS):
        res[variant] = make(variant)
        print(variant, res[variant], flush=True)
        measured.write_text(json.dumps(res, indent=1) + "\n")


def make(variant: str) -> dict:
    import os

    scratch = Path(os.environ.get("ZOO_SCRATCH", "/work/scratch/zoo"))
    scratch.mkdir(parents=True, exist_ok=True)
    os.chdir(scratch)  # gptqmodel writes logs/ into the working directory
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    from transformers import AutoTokenizer
    import gptqmodel

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(SRC)
    rng = random.Random(7)
    calib = []
    for _ in range(128):
        q, a = task(rng)
        calib.append(tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False))
    OUT = MODELS / variant
    qcfg = QuantizeConfig(**VARIANTS[variant])
    model = GPTQModel.load(str(SRC), qcfg)
    model.quantize(calib, batch_size=8, tokenizer=tok)
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save(str(OUT))
    tok.save_pretrained(OUT)
    print(f"quantized + saved in {time.time() - t0:.0f}s", flush=True)

    # reference forward + dequantized tensors from gptqmodel's own kernel code
    q = GPTQModel.load(str(OUT), backend=BACKEND.TORCH, device="cpu")
    hf = q.model.float() if hasattr(q, "model") else q
    ref = GOLD / "llama-instruct.safetensors"
    with safe_open(ref, "pt") as st:
        meta_ref = st.metadata()
        n = len([k for k in st.keys() if k.startswith("input_ids.")])
        ids = [st.get_tensor(f"input_ids.{i}") for i in range(n)]
    tensors, meta = {}, {"variant": variant, "producer": f"gptqmodel {gptqmodel.__version__} BACKEND.TORCH forward",
                         "v_torch": torch.__version__, "v_gptqmodel": gptqmodel.__version__}
    with torch.no_grad():
        for i, x in enumerate(ids):
            tensors[f"input_ids.{i}"] = x
            tensors[f"logits.{i}"] = hf(input_ids=x[None]).logits[0].float().contiguous()
            meta[f"prompt_len.{i}"] = meta_ref[f"prompt_len.{i}"]
        for name in ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"]:
            mod = hf.get_submodule(name)
            w = mod.dequantize_weight().float()  # gptqmodel returns [in_features, out_features]
            assert list(w.shape) == [mod.in_features, mod.out_features], w.shape
            w = w.t()
            tensors[f"dequant.{name}.weight"] = w.contiguous()
    save_file(tensors, GOLD / f"gptq-{variant.removeprefix('llama-gptq-')}.safetensors", metadata=meta)
    # measurements vs the HF f32 golden: max |dlogit|, KL mean, same top-1, P(EOS at turn end), greedy stop
    from safetensors.torch import load_file

    H = load_file(ref)
    dmax, kls, same, p_eos, stops = 0.0, [], [], [], 0
    with torch.no_grad():
        for i, x in enumerate(ids):
            a, b = H[f"logits.{i}"].double(), tensors[f"logits.{i}"].double()
            dmax = max(dmax, float((a - b).abs().max()))
            la, lb = a.log_softmax(-1), b.log_softmax(-1)
            kls += (la.exp() * (la - lb)).sum(-1).tolist()
            same += (a.argmax(-1) == b.argmax(-1)).tolist()
            p_eos.append(float(lb[-2].exp()[2]))
            out = x[: int(meta[f"prompt_len.{i}"])].tolist()
            for _ in range(32):
                nxt = int(hf(input_ids=torch.tensor([out])).logits[0, -1].argmax())
                out.append(nxt)
                if nxt == 2:
                    stops += 1
                    break
    res = {"seconds": round(time.time() - t0), "gptqmodel": gptqmodel.__version__, "torch": torch.__version__,
           "max_abs_dlogit_vs_hf_f32": dmax, "kl_mean_vs_hf_f32": sum(kls) / len(kls),
           "same_top1_vs_hf_f32": sum(same) / len(same), "p_eos_turn_end": p_eos,
           "p_eos_turn_end_mean": sum(p_eos) / len(p_eos), "greedy_stop_rate": stops / len(ids)}
    print(f"done in {time.time() - t0:.0f}s")
    return res


if __name__ == "__main__":
    main()
