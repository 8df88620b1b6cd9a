"""compressed-tensors variants of llama-instruct made by llmcompressor (own venv: llmcompressor 0.14.0.1,
which pins torch 2.14.0, transformers 5.17.0, compressed-tensors 0.19.0; see requirements-llmcompressor.txt).

    /work/venvs/llmcompressor/bin/python quant_llmc.py [VARIANT ...]     # default: every variant

Each variant: llama-instruct loaded in bf16, oneshot(recipe, ignore lm_head), save_pretrained(save_compressed=True):
  llama-ct-w4a16        GPTQModifier scheme W4A16 (calibrated)   -> `pack-quantized` int4, group 128
  llama-ct-fp8-dynamic  QuantizationModifier FP8_DYNAMIC (RTN)   -> `float-quantized`: F8_E4M3 weights, per-channel
                        scales; activations FP8 per token, dynamic
  llama-ct-fp8-block    QuantizationModifier FP8_BLOCK (RTN)     -> `float-quantized`: 128x128 weight blocks;
                        activations FP8 per group of 128, dynamic (DeepSeek-V3 style)
  llama-ct-w8a8         QuantizationModifier W8A8 (RTN)          -> `int-quantized`: I8 weights, per-channel scales;
                        activations int8 per token, dynamic
The new variants are saved in 1 MB shards (layers stay in their own files). goldens/ct-<variant>.safetensors:
input_ids.{i}, logits.{i} (transformers forward of the checkpoint decompressed by compressed-tensors, float32; the
activation quantization of the scheme applied by compressed-tensors' forward hooks) and dequant.<module>.weight F32
[out, in] (the decompressed weights). The first variant's golden is goldens/ct-w4a16.safetensors, as before.
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
SRC = MODELS / "llama-instruct"
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


def recipe(variant: str):
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    if variant == "llama-ct-w4a16":
        return GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"]), True
    scheme = {"llama-ct-fp8-dynamic": "FP8_DYNAMIC", "llama-ct-fp8-block": "FP8_BLOCK", "llama-ct-w8a8": "W8A8",
              "llama-ct-nvfp4a16": "NVFP4A16", "llama-ct-mxfp4a16": "MXFP4A16"}[variant]
    return QuantizationModifier(targets="Linear", scheme=scheme, ignore=["lm_head"]), False


VARIANTS = ["llama-ct-w4a16", "llama-ct-fp8-dynamic", "llama-ct-fp8-block", "llama-ct-w8a8", "llama-ct-nvfp4a16",
            "llama-ct-mxfp4a16"]


def make(variant: str) -> dict:
    import compressed_tensors
    import llmcompressor
    import transformers
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = MODELS / variant
    t0 = time.time()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(SRC)
    model = AutoModelForCausalLM.from_pretrained(SRC, dtype=torch.bfloat16)
    mod, calibrated = recipe(variant)
    if calibrated:
        rng = random.Random(7)
        calib = []
        for _ in range(128):
            q, a = task(rng)
            text = tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False)
            calib.append({"input_ids": tok(text, add_special_tokens=False)["input_ids"]})
        oneshot(model=model, dataset=Dataset.from_list(calib), recipe=mod, max_seq_length=64, num_calibration_samples=128)
    else:
        oneshot(model=model, recipe=mod)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shard = {} if variant == "llama-ct-w4a16" else {"max_shard_size": "1MB"}
    model.save_pretrained(out_dir, save_compressed=True, **shard)
    tok.save_pretrained(out_dir)
    print(f"{variant}: quantized + saved in {time.time() - t0:.0f}s", flush=True)

    from transformers import CompressedTensorsConfig

    m = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager",
                                             quantization_config=CompressedTensorsConfig(run_compressed=False)).eval()
    # NVFP4 / MXFP4 decompress to bf16 weights inside the f32 model: upcast them (a no-op for the others).
    m = m.float()
    ref = GOLD / "llama-instruct.safetensors"
    H = load_file(ref)
    with safe_open(ref, "pt") as st:
        meta_ref = st.metadata()
    n = len([k for k in H if k.startswith("input_ids.")])
    tensors = {}
    meta = {"variant": variant, "producer": "transformers forward (float32, eager) of the checkpoint decompressed by compressed-tensors",
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
        # compressed-tensors' own input quantization on the real inputs of three layers (act.<module>.input /
        # .quantized), captured before the hooks are turned off.
        if variant in ("llama-ct-fp8-dynamic", "llama-ct-fp8-block", "llama-ct-w8a8"):
            from compressed_tensors.quantization.lifecycle.forward import forward_quantize

            cap = {}
            names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.gate_proj", "model.layers.2.mlp.down_proj"]
            hooks = [m.get_submodule(nm).register_forward_pre_hook(lambda mod, args, nm=nm: cap.setdefault(nm, args[0][0].clone()))
                     for nm in names]
            m(input_ids=H["input_ids.0"][None])
            for h in hooks:
                h.remove()
            for nm in names:
                mod_ = m.get_submodule(nm)
                tensors[f"act.{nm}.input"] = cap[nm].float().contiguous()
                # [1, T, in] as the model passes it: compressed-tensors reads a 2-D input's "token" strategy as per tensor.
                qx = forward_quantize(mod_, cap[nm][None], "input", mod_.quantization_scheme.input_activations)[0]
                tensors[f"act.{nm}.quantized"] = qx.float().contiguous()
        # The activation quantization's share: the same forward with compressed-tensors' hooks off.
        for mod_ in m.modules():
            if hasattr(mod_, "quantization_enabled") or hasattr(mod_, "quantization_scheme"):
                mod_.quantization_enabled = False
        kls_w = []
        for i in range(n):
            a, b = H[f"logits.{i}"].double(), m(input_ids=H[f"input_ids.{i}"][None]).logits[0].double()
            la, lb = a.log_softmax(-1), b.log_softmax(-1)
            kls_w += (la.exp() * (la - lb)).sum(-1).tolist()
        for name in ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"]:
            w = m.get_submodule(name).weight.float()
            assert list(w.shape) == [m.get_submodule(name).out_features, m.get_submodule(name).in_features]
            tensors[f"dequant.{name}.weight"] = w.contiguous()
    gname = "ct-" + variant.removeprefix("llama-ct-")
    save_file(tensors, GOLD / f"{gname}.safetensors", metadata=meta)
    return {"seconds": round(time.time() - t0), "llmcompressor": llmcompressor.__version__,
            "compressed_tensors": compressed_tensors.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "max_abs_dlogit_vs_hf_f32": dmax, "kl_mean_vs_hf_f32": sum(kls) / len(kls), "same_top1_vs_hf_f32": sum(same) / len(same),
            "kl_mean_vs_hf_f32_weights_only": sum(kls_w) / len(kls_w),
            "p_eos_turn_end": p_eos, "p_eos_turn_end_mean": sum(p_eos) / len(p_eos), "greedy_stop_rate": stops / n}


def main() -> None:
    import sys

    scratch = Path(os.environ.get("ZOO_SCRATCH", "/work/scratch/zoo"))
    scratch.mkdir(parents=True, exist_ok=True)
    os.chdir(scratch)
    measured = ROOT / "measured_ct.json"
    res = json.loads(measured.read_text()) if measured.exists() else {}
    if "seconds" in res:  # the file's first layout: one variant, llama-ct-w4a16, at the top level
        res = {"llama-ct-w4a16": res}
    for variant in sys.argv[1:] or VARIANTS:
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant}; one of {VARIANTS}")
        res[variant] = make(variant)
        print(variant, res[variant], flush=True)
        measured.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
