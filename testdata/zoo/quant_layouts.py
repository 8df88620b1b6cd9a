"""Two more on-disk layouts of gptqmodel's quantizers (issue 15), on the zoo's smallest bases (size budget).
Its own venv (torch 2.15.0, transformers 5.24.0, gptqmodel 7.7.0, optimum 2.3.0; requirements-gptqmodel.txt):

    GPTQMODEL_CPU_WORKERS=2 /work/venvs/gptqmodel/bin/python quant_layouts.py [VARIANT ...]   # default: both, ~30 s
    /work/venvs/gptqmodel/bin/python quant_layouts.py manifest      # their zoo.json entries; then python3 dedupe.py

Variants:
  mistral-awq-gemv      AWQ (METHOD.AWQ, FORMAT.GEMV: AutoAWQ's GEMV layout), 4-bit, group 64, asymmetric,
                        from models/mistral (hidden 128, trained). GEMV is output-major: qweight I32
                        [out, in/8] (inputs 8c..8c+7 in nibbles 0..7 of word c), qzeros I32 [out, W] and
                        scales F16 [out, 8W], W = calculate_zeros_width(in, group) (groups padded). gptqmodel
                        packs it with AwqGEMVLinear.pack (pure torch), whose device gate allows CUDA/ROCm only:
                        CPU is added to SUPPORTS_DEVICES for the packing; nothing else is changed. It needs an
                        f16 model (the GEMV kernel's only dtype). gptqmodel has no CPU forward for GEMV, so
                        goldens/awq-gemv.safetensors holds dequant.<module> F32 [out, in] for every linear,
                        decoded by gptqmodel's own GEMV unpacker (utils/mlx_packing.repack_awq_gemv: codes,
                        scales, biases = −zero·scale), and logits.{i} of transformers' MistralForCausalLM in f32
                        with those weights (and the checkpoint's f16 embeddings, norms and head) on the ids of
                        the first two prompts of goldens/mistral.safetensors.
  mistral-tekken-gptq-v2
                        GPTQ 4-bit, group 32, asymmetric, FORMAT.GPTQ_V2 (checkpoint_format gptq_v2: zero points
                        stored as they are, v1 stores them minus one) from models/mistral-tekken (hidden 64,
                        random init: parity only). goldens/gptq-v2.safetensors: input_ids.{i} (two rendered
                        prompts + 8 greedy tokens), logits.{i} of gptqmodel's BACKEND.TORCH forward (float32
                        activations) and dequant.<module> from TorchQuantLinear.dequantize_weight().
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
sys.path.insert(0, str(ROOT))
from quant_awq import task  # noqa: E402  (the chat tasks, shared with the other quantizer scripts)

torch.manual_seed(0)
torch.set_num_threads(2)


def calibration(tok, n: int = 64) -> list[str]:
    rng = random.Random(7)
    return [tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False)
            for q, a in (task(rng) for _ in range(n))]


def quantize(src: Path, out: Path, qcfg, dtype=None) -> None:
    from gptqmodel import GPTQModel
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = GPTQModel.load(str(src), qcfg, **({"dtype": dtype} if dtype is not None else {}))
    model.quantize(calibration(tok), batch_size=8, tokenizer=tok)
    if out.exists():
        shutil.rmtree(out)
    model.save(str(out))
    tok.save_pretrained(out)
    for junk in ("quant_log.csv",):
        (out / junk).unlink(missing_ok=True)


def awq_gemv() -> dict:
    import numpy as np
    import gptqmodel
    from gptqmodel import QuantizeConfig
    from gptqmodel.models._const import DEVICE
    from gptqmodel.nn_modules.qlinear.gemv_awq import AwqGEMVLinear
    from gptqmodel.quantization.config import FORMAT, METHOD
    from gptqmodel.utils.mlx_packing import repack_awq_gemv
    from transformers import AutoModelForCausalLM

    src, out = MODELS / "mistral", MODELS / "mistral-awq-gemv"
    AwqGEMVLinear.SUPPORTS_DEVICES = [*AwqGEMVLinear.SUPPORTS_DEVICES, DEVICE.CPU]  # packing only: see above
    qcfg = QuantizeConfig(bits=4, group_size=64, sym=False, method=METHOD.AWQ, format=FORMAT.GEMV)
    quantize(src, out, qcfg, dtype=torch.float16)
    cfg = json.loads((out / "config.json").read_text())
    gs = cfg["quantization_config"]["group_size"]

    def unpack_rows(words: np.ndarray, inp: int) -> np.ndarray:
        # the inverse of mlx_packing._pack_rows at 4 bits: nibble k of word c is input 8c + k
        return ((words[..., None] >> (np.arange(8, dtype=np.uint32) * 4)) & 15).reshape(words.shape[0], inp)

    with safe_open(out / "model.safetensors", "pt") as st:
        keys = list(st.keys())
        dense = {k: st.get_tensor(k).float() for k in keys if not k.rsplit(".", 1)[1] in ("qweight", "qzeros", "scales")}
        deq = {}
        for k in keys:
            if not k.endswith(".qweight"):
                continue
            m = k.removesuffix(".qweight")
            qw, qz, sc = (st.get_tensor(f"{m}.{s}").numpy() for s in ("qweight", "qzeros", "scales"))
            o, inp = qw.shape[0], qw.shape[1] * 8
            words, scales, biases = repack_awq_gemv(qw, qz, sc, inp, o, gs)
            codes = unpack_rows(words, inp).astype(np.float32)
            g = np.arange(inp) // gs
            w = codes * scales.astype(np.float32)[:, g] + biases.astype(np.float32)[:, g]
            deq[m] = torch.from_numpy(np.ascontiguousarray(w))
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager").eval()
    model.load_state_dict({**dense, **{f"{m}.weight": w for m, w in deq.items()}}, strict=True)
    tensors, meta = {}, {"variant": "mistral-awq-gemv", "v_torch": torch.__version__, "v_gptqmodel": gptqmodel.__version__,
                         "producer": "dequant: gptqmodel utils.mlx_packing.repack_awq_gemv; logits: transformers f32 eager on those weights"}
    with safe_open(GOLD / "mistral.safetensors", "pt") as st:
        meta_ref = st.metadata()
        ids = [st.get_tensor(f"input_ids.{i}") for i in range(2)]  # two of four: the size budget
    with torch.no_grad():
        for i, x in enumerate(ids):
            tensors[f"input_ids.{i}"] = x
            tensors[f"logits.{i}"] = model(input_ids=x[None]).logits[0].float().contiguous()
            meta[f"prompt_len.{i}"] = meta_ref[f"prompt_len.{i}"]
    for m in ("model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"):
        tensors[f"dequant.{m}.weight"] = deq[m]
    save_file(tensors, GOLD / "awq-gemv.safetensors", metadata=meta)
    return vs_reference("mistral", tensors, len(ids))


def gptq_v2() -> dict:
    import gptqmodel
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    from gptqmodel.quantization.config import FORMAT
    from transformers import AutoTokenizer

    src, out = MODELS / "mistral-tekken", MODELS / "mistral-tekken-gptq-v2"
    qcfg = QuantizeConfig(bits=4, group_size=32, sym=False, desc_act=False, format=FORMAT.GPTQ_V2)
    quantize(src, out, qcfg)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"].get("checkpoint_format") == "gptq_v2", cfg["quantization_config"]
    tok = AutoTokenizer.from_pretrained(out)
    q = GPTQModel.load(str(out), backend=BACKEND.TORCH, device="cpu")
    hf = q.model.float() if hasattr(q, "model") else q
    prompts = [json.loads(l)["messages"] for l in (ROOT / "prompts.jsonl").read_text().splitlines()[:2]]
    tensors, meta = {}, {"variant": "mistral-tekken-gptq-v2", "producer": f"gptqmodel {gptqmodel.__version__} BACKEND.TORCH forward",
                         "v_torch": torch.__version__, "v_gptqmodel": gptqmodel.__version__}
    with torch.no_grad():
        for i, msgs in enumerate(prompts):
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            x = tok(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
            meta[f"prompt_len.{i}"] = str(len(x))
            for _ in range(8):
                x = torch.cat([x, hf(input_ids=x[None]).logits[0, -1].argmax().view(1)])
            tensors[f"input_ids.{i}"] = x.to(torch.int64)
            tensors[f"logits.{i}"] = hf(input_ids=x[None]).logits[0].float().contiguous()
        for name in ("model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"):
            mod = hf.get_submodule(name)
            w = mod.dequantize_weight().float()  # [in_features, out_features]
            assert list(w.shape) == [mod.in_features, mod.out_features], w.shape
            tensors[f"dequant.{name}.weight"] = w.t().contiguous()
    save_file(tensors, GOLD / "gptq-v2.safetensors", metadata=meta)
    return {"checkpoint_format": cfg["quantization_config"]["checkpoint_format"], "prompts": len(prompts)}


def vs_reference(ref: str, tensors: dict, n: int) -> dict:
    from safetensors.torch import load_file

    H = load_file(GOLD / f"{ref}.safetensors")
    dmax, kls, same = 0.0, [], []
    for i in range(n):
        a, b = H[f"logits.{i}"].double(), tensors[f"logits.{i}"].double()
        dmax = max(dmax, float((a - b).abs().max()))
        la, lb = a.log_softmax(-1), b.log_softmax(-1)
        kls += (la.exp() * (la - lb)).sum(-1).tolist()
        same += (a.argmax(-1) == b.argmax(-1)).tolist()
    return {"max_abs_dlogit_vs_f32": dmax, "kl_mean_vs_f32": sum(kls) / len(kls), "same_top1_vs_f32": sum(same) / len(same)}


VARIANTS = {"mistral-awq-gemv": awq_gemv, "mistral-tekken-gptq-v2": gptq_v2}
TOOLS = {
    "mistral-awq-gemv": ("awq", "mistral", "QuantizeConfig(bits=4, group_size=64, sym=False, method=METHOD.AWQ, format=FORMAT.GEMV), "
                         "loaded in f16, AwqGEMVLinear allowed on CPU for packing", "awq-gemv"),
    "mistral-tekken-gptq-v2": ("gptq", "mistral-tekken", "QuantizeConfig(bits=4, group_size=32, sym=False, desc_act=False, "
                               "format=FORMAT.GPTQ_V2)", "gptq-v2"),
}


def manifest() -> None:
    """Adds (or refreshes) this script's entries in zoo.json; every other entry is left as it is."""
    import hashlib

    zoo = json.loads((ROOT / "zoo.json").read_text())
    measured = json.loads((ROOT / "measured_layouts.json").read_text())
    for name, (kind, parent, how, golden) in TOOLS.items():
        d = MODELS / name
        with safe_open(d / "model.safetensors", "pt") as st:
            shapes = {k: list(st.get_slice(k).get_shape()) for k in st.keys()}
            dtypes = sorted({st.get_slice(k).get_dtype() for k in st.keys()})
        tok = json.loads((d / "tokenizer.json").read_text())
        zoo["variants"][name] = {
            "dir": f"models/{name}", "kind": kind, "arch": "mistral", "dtypes": dtypes,
            "tool": f"GPTQModel {measured[name]['gptqmodel']} (torch 2.15.0, transformers 5.24.0): GPTQModel.load({parent}, {how})"
                    ".quantize(64 chat-task samples, batch_size=8); save()",
            "command": f"GPTQMODEL_CPU_WORKERS=2 python quant_layouts.py {name} (gptqmodel venv)",
            "expected_fault": None, "fault_code": None, "parent": parent, "tensor_count": len(shapes),
            "embed_shape": shapes.get("model.embed_tokens.weight"), "lm_head_shape": shapes.get("lm_head.weight"),
            "tokenizer_added_tokens": len(tok.get("added_tokens", [])),
            "weights_sha256_16": hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()[:16],
            "golden": {"path": f"goldens/{golden}.safetensors", "has_hidden": False, "note": TOOLS_NOTE[name]},
            "measured": {k: v for k, v in measured[name].items() if k not in ("gptqmodel", "torch")},
        }
    (ROOT / "zoo.json").write_text(json.dumps(zoo, indent=1, default=str, allow_nan=False) + "\n")


TOOLS_NOTE = {
    "mistral-awq-gemv": "dequant by gptqmodel's repack_awq_gemv; logits of transformers f32 on those weights",
    "mistral-tekken-gptq-v2": "gptqmodel BACKEND.TORCH forward and TorchQuantLinear.dequantize_weight()",
}


def main() -> None:
    import os

    scratch = Path(os.environ.get("ZOO_SCRATCH", "/work/scratch/zoo"))
    scratch.mkdir(parents=True, exist_ok=True)
    os.chdir(scratch)  # gptqmodel writes logs/ into the working directory
    import gptqmodel

    if sys.argv[1:] == ["manifest"]:
        return manifest()
    names = sys.argv[1:] or list(VARIANTS)
    path = ROOT / "measured_layouts.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    for name in names:
        t0 = time.time()
        res[name] = {**VARIANTS[name](), "seconds": round(time.time() - t0), "gptqmodel": gptqmodel.__version__, "torch": torch.__version__}
        print(name, res[name], flush=True)
    path.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
