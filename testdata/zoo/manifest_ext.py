"""Adds the LoRA and GGUF variants to zoo.json (run AFTER `generate.py manifest`, which rewrites zoo.json).

    /work/venvs/main/bin/python manifest_ext.py

Entries keep generate.py's layout (dir, kind, arch, dtypes, tool, command, expected_fault, tensor_count,
embed_shape, lm_head_shape, tokenizer_added_tokens, weights_sha256_16, measured) and add: parent,
fault_code, golden ({path, has_hidden}), properties (kind-specific details), and for GGUF files `path`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf
import peft
import torch
import transformers
from safetensors import safe_open

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models"
GOLD = ROOT / "goldens"
LLAMACPP_PY_VERSION = "llama-cpp-python 0.3.36 (vendored llama.cpp: convert_hf_to_gguf.py, gguf-py, llama_model_quantize)"
PEFT = f"peft {peft.__version__}"

LORA = {
    "llama-lora-merged": ("llama-instruct",
                          f"{PEFT}: PeftModel.from_pretrained(llama-instruct, llama-lora-adapter).merge_and_unload(); "
                          "save_pretrained(max_shard_size='1MB') f32", None, None),
    "llama-merge-wrong-scale": ("llama-instruct",
                                f"{PEFT}: every LoraLayer.scaling['default'] set to lora_alpha=16 instead of alpha/r=2, "
                                "merge_and_unload(), .to(bfloat16), save_pretrained",
                                "merge-wrong-scale", "LoRA delta merged with scale alpha (16) instead of alpha/r (2): 8x too large"),
    "llama-merge-skip-module": ("llama-instruct",
                                f"{PEFT}: adapter_model.safetensors without the layers.1.self_attn.v_proj keys loaded by "
                                "PeftModel.from_pretrained (missing-keys warning; lora_B stays zero), merge_and_unload(), "
                                "save_pretrained(max_shard_size='1MB') f32",
                                "merge-skip-module", "model.layers.1.self_attn.v_proj.weight was not merged (equals llama-instruct's); every other target module was"),
    "llama-merge-fp16-overflow": ("llama-instruct",
                                  f"{PEFT}: llama-instruct loaded then .half(); lora_B of layers.0.mlp.down_proj scaled so the "
                                  "largest delta entry is 2x65504 (diverged adapter); merge_and_unload() in f16; save_pretrained",
                                  "fp16-overflow-inf", "model.layers.0.mlp.down_proj.weight contains +-inf: the merged delta exceeded the f16 range"),
}

GGUF = {
    "f16": ("convert_hf_to_gguf.py models/llama-instruct --outtype f16", None, None),
    "q8_0": ("convert_hf_to_gguf.py models/llama-instruct --outtype q8_0", None, None),
    "q6_k": ("convert_hf_to_gguf.py --outtype f32, then llama_cpp.llama_model_quantize(ftype=LLAMA_FTYPE_MOSTLY_Q6_K)", None, None),
    "q4_k_m": ("convert_hf_to_gguf.py --outtype f32, then llama_cpp.llama_model_quantize(ftype=LLAMA_FTYPE_MOSTLY_Q4_K_M)", None, None),
    "q4_0": ("convert_hf_to_gguf.py --outtype f32, then llama_cpp.llama_model_quantize(ftype=LLAMA_FTYPE_MOSTLY_Q4_0)", None, None),
    "wrong-eos": ("gguf-q4_0 copied, then gguf-py/gguf/scripts/gguf_set_metadata.py FILE tokenizer.ggml.eos_token_id 0 --force",
                  "gguf-wrong-eos", "tokenizer.ggml.eos_token_id = 0 (<|endoftext|>) instead of 2 (<|im_end|>): llama.cpp never stops at the end of a turn"),
    "no-template": ("convert_hf_to_gguf.py models/llama-no-template --outtype f32, then llama_model_quantize Q4_0",
                    "gguf-no-chat-template", "no tokenizer.chat_template key in the GGUF"),
    "other-tokenizer": ("convert_hf_to_gguf.py --outtype f32 of a copy of llama-instruct whose tokenizer files were replaced by a "
                        "different BPE tokenizer (same size 1024 and specials, trained on other text), then Q4_0",
                        "gguf-different-tokenizer", "tokenizer.ggml.tokens/merges are not the tokenizer the weights were trained with: prompts tokenize differently"),
}


QUANT_HF = [
    ("llama-ct-w4a16", "compressed-tensors", "measured_ct.json",
     "llmcompressor 0.14.0.1 (compressed-tensors 0.19.0, torch 2.14.0, transformers 5.17.0): oneshot(llama-instruct in bf16, "
     "GPTQModifier(targets='Linear', scheme='W4A16', ignore=['lm_head']), 128 chat-task samples); save_pretrained(save_compressed=True)",
     "python quant_llmc.py (llmcompressor venv)", "ct-w4a16"),
    ("llama-awq-w4g128", "awq", "measured_awq.json",
     "GPTQModel 7.7.0 (torch 2.15.0, transformers 5.24.0): GPTQModel.load(llama-instruct, QuantizeConfig(bits=4, group_size=128, "
     "sym=False, method=METHOD.AWQ, format=FORMAT.GEMM)).quantize(128 chat-task samples, batch_size=8); save()",
     "GPTQMODEL_CPU_WORKERS=2 python quant_awq.py (gptqmodel venv)", "awq-w4g128"),
]


def sha16(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def golden(name: str) -> dict | None:
    p = GOLD / f"{name}.safetensors"
    if not p.exists():
        return None
    with safe_open(p, "np") as st:
        keys = list(st.keys())
    return {"path": f"goldens/{name}.safetensors", "has_hidden": any(k.startswith("hidden.") for k in keys)}


def hf_entry(name: str, parent: str, tool: str, code, desc, measured: dict) -> dict:
    d = MODELS / name
    files = sorted(d.glob("*.safetensors"))
    shapes, dtypes, nan, inf = {}, set(), {}, {}
    for f in files:
        with safe_open(f, "pt") as st:
            for k in st.keys():
                t = st.get_tensor(k)
                shapes[k] = list(t.shape)
                dtypes.add({torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}.get(t.dtype, str(t.dtype)))
                if t.is_floating_point():
                    if int(torch.isnan(t).sum()):
                        nan[k] = int(torch.isnan(t).sum())
                    if int(torch.isinf(t).sum()):
                        inf[k] = int(torch.isinf(t).sum())
    tok = json.loads((d / "tokenizer.json").read_text())
    cfg = json.loads((d / "config.json").read_text())
    gen = json.loads((d / "generation_config.json").read_text())
    single = d / "model.safetensors"
    return {
        "dir": f"models/{name}", "kind": "hf", "arch": cfg["model_type"], "dtypes": sorted(dtypes),
        "tool": tool, "command": "python lora.py", "expected_fault": desc, "fault_code": code, "parent": parent,
        "tensor_count": len(shapes), "embed_shape": shapes.get("model.embed_tokens.weight"),
        "lm_head_shape": shapes.get("lm_head.weight"), "tokenizer_added_tokens": len(tok["added_tokens"]),
        "weights_sha256_16": sha16(single) if single.exists() else None,
        "golden": golden(name),
        "properties": {
            "sharded": (d / "model.safetensors.index.json").exists(),
            "weight_files": {f.name: sha16(f) for f in files},
            "nan_counts": nan, "inf_counts": inf,
            "eos_token_id": cfg.get("eos_token_id"), "generation_eos_token_id": gen.get("eos_token_id"),
            "pad_token_id": cfg.get("pad_token_id"), "vocab_size": cfg.get("vocab_size"),
            "num_hidden_layers": cfg.get("num_hidden_layers"),
        },
        "measured": measured.get(name),
    }


def gguf_entry(name: str, cmd: str, code, desc, mg: dict) -> dict:
    p = ROOT / "gguf" / f"llama-instruct-{name}.gguf"
    r = gguf.GGUFReader(p)
    meta = {}
    for k, f in r.fields.items():
        if k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            continue
        if k.startswith("tokenizer.") or k.startswith("llama.") or k in ("general.architecture", "general.file_type"):
            v = f.contents()
            meta[k] = v if k != "tokenizer.chat_template" else "(present)"
    types: dict[str, int] = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    some = {t.name: {"type": t.tensor_type.name, "shape": [int(x) for x in t.shape]} for t in r.tensors
            if t.name in ("token_embd.weight", "output.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight")}
    merges = r.fields["tokenizer.ggml.merges"].contents()
    emb = next(t for t in r.tensors if t.name == "token_embd.weight")
    return {
        "dir": "gguf", "path": f"gguf/llama-instruct-{name}.gguf", "kind": "gguf", "arch": "llama",
        "dtypes": sorted(types), "tool": f"{LLAMACPP_PY_VERSION}: {cmd}; unknown BPE chkhsh mapped to pre-tokenizer 'gpt-2'",
        "command": "python generate.py gguf  (= gguf_stage.py convert, then quantize in the llama.cpp venv)",
        "expected_fault": desc, "fault_code": code, "parent": "llama-instruct",
        "tensor_count": len(r.tensors), "embed_shape": [int(x) for x in reversed(emb.shape)],
        "lm_head_shape": None, "tokenizer_added_tokens": None, "weights_sha256_16": sha16(p),
        "golden": golden(f"gguf-{name}") or (golden("gguf-q4_0") and {**golden("gguf-q4_0"), "shared_with": "gguf-q4_0",
                   "note": "same Q4_0 weights as gguf-q4_0: llama.cpp logits on the shared input_ids are identical"}),
        "properties": {"size_bytes": p.stat().st_size, "tensor_types": types, "tensors": some, "metadata": meta,
                       "n_tokens": len(r.fields["tokenizer.ggml.tokens"].contents()), "n_merges": len(merges),
                       "first_merges": merges[:3],
                       "has_chat_template": "tokenizer.chat_template" in r.fields,
                       "note": "GGUF shapes are listed innermost-first (ne0, ne1) as gguf-py reports them"},
        "measured": mg.get(f"gguf-{name}"),
    }


def main() -> None:
    z = json.loads((ROOT / "zoo.json").read_text())
    ml = json.loads((ROOT / "measured_lora.json").read_text()) if (ROOT / "measured_lora.json").exists() else {}
    mg = json.loads((ROOT / "measured_gguf.json").read_text()) if (ROOT / "measured_gguf.json").exists() else {}
    V = z["variants"]
    z["versions"].update({"gguf-py (pip, used to read GGUF here)": "0.19.0", "llama-cpp-python": "0.3.36"})
    z.setdefault("golden_layout", {
        "keys": {"input_ids.{i}": "I64 [T_i]", "logits.{i}": "F32 [T_i, 1024]",
                 "hidden.{i}": "F32 [n_layers+1, T_i, hidden] (only in some files; index 0 = embedding output, last = after the final norm)"},
        "metadata": "variant, prompt_len.{i}, v_* (tool versions); GGUF goldens: producer, gguf_file, v_llama_cpp_python",
        "p_eos_turn_end": "softmax(logits.{i}[T_i-2])[2]: P(<|im_end|>) where the reference answer ends",
        "greedy_stop_rate": "fraction of prompts where greedy decoding emitted <|im_end|> (id 2)",
    })
    ad = MODELS / "llama-lora-adapter"
    acfg = json.loads((ad / "adapter_config.json").read_text())
    with safe_open(ad / "adapter_model.safetensors", "pt") as st:
        keys = sorted(st.keys())
        ashapes = {k: list(st.get_slice(k).get_shape()) for k in keys[:4]}
    V["llama-lora-adapter"] = {
        "dir": "models/llama-lora-adapter", "kind": "peft-adapter", "arch": "llama", "dtypes": ["F32"],
        "tool": f"{PEFT}: get_peft_model(llama-instruct, LoraConfig(r=8, lora_alpha=16, lora_dropout=0, target_modules="
                "q,k,v,o,gate,up,down)), 60 steps AdamW lr 5e-3 on chat tasks, PeftModel.save_pretrained",
        "command": "python lora.py", "expected_fault": None, "fault_code": None, "parent": "llama-instruct",
        "base": "models/llama-instruct",
        "tensor_count": len(keys), "embed_shape": None, "lm_head_shape": None, "tokenizer_added_tokens": 3,
        "weights_sha256_16": sha16(ad / "adapter_model.safetensors"),
        "golden": {**golden("llama-lora-premerge"), "note": "unmerged PeftModel forward (llama-instruct + adapter)"},
        "properties": {"r": acfg["r"], "lora_alpha": acfg["lora_alpha"], "scaling": acfg["lora_alpha"] / acfg["r"],
                       "use_rslora": acfg.get("use_rslora"), "use_dora": acfg.get("use_dora"),
                       "target_modules": sorted(acfg["target_modules"]), "first_keys": keys[:4], "shapes": ashapes},
        "measured": ml.get("llama-lora-premerge"),
    }
    for name, (parent, tool, code, desc) in LORA.items():
        if (MODELS / name / "config.json").exists():
            V[name] = hf_entry(name, parent, tool, code, desc, ml)
    for name, (cmd, code, desc) in GGUF.items():
        if (ROOT / "gguf" / f"llama-instruct-{name}.gguf").exists():
            V[f"gguf-{name}"] = gguf_entry(name, cmd, code, desc, mg)
    gq = MODELS / "llama-gptq-w4g128"
    if (gq / "config.json").exists():
        cfg = json.loads((gq / "config.json").read_text())
        mq = json.loads((ROOT / "measured_gptq.json").read_text()) if (ROOT / "measured_gptq.json").exists() else None
        mq = mq.get("llama-gptq-w4g128", mq) if isinstance(mq, dict) else mq  # one entry per variant
        with safe_open(gq / "model.safetensors", "pt") as st:
            keys = sorted(st.keys())
            info = {k: {"dtype": str(st.get_slice(k).get_dtype()), "shape": list(st.get_slice(k).get_shape())}
                    for k in keys if k.startswith("model.layers.0.self_attn.q_proj.") or k in ("lm_head.weight", "model.embed_tokens.weight")}
        V["llama-gptq-w4g128"] = {
            "dir": "models/llama-gptq-w4g128", "kind": "gptq", "arch": "llama", "dtypes": sorted({v["dtype"] for v in info.values()}),
            "tool": "GPTQModel 7.7.0 (torch 2.15.0, transformers 5.24.0): GPTQModel.load(llama-instruct, QuantizeConfig(bits=4, "
                    "group_size=128, sym=True, desc_act=False)).quantize(128 chat-task samples, batch_size=8); save()",
            "command": "GPTQMODEL_CPU_WORKERS=2 python quant_gptq.py", "expected_fault": None, "fault_code": None,
            "parent": "llama-instruct", "tensor_count": len(keys), "embed_shape": info["model.embed_tokens.weight"]["shape"],
            "lm_head_shape": info["lm_head.weight"]["shape"], "tokenizer_added_tokens": 3,
            "weights_sha256_16": sha16(gq / "model.safetensors"),
            "golden": {**golden("gptq-w4g128"), "dequant_keys": ["dequant.model.layers.0.self_attn.q_proj.weight",
                                                                 "dequant.model.layers.0.self_attn.k_proj.weight"],
                       "note": "logits: gptqmodel BACKEND.TORCH forward; dequant.*: TorchQuantLinear.dequantize_weight(), transposed to [out, in]"},
            "properties": {"quantization_config": cfg.get("quantization_config"), "tensors": info,
                           "generation_config": json.loads((gq / "generation_config.json").read_text())},
            "measured": mq,
        }
    for name, kind, mfile, tool, cmd, gname in QUANT_HF:
        d = MODELS / name
        if not (d / "config.json").exists():
            continue
        cfg = json.loads((d / "config.json").read_text())
        mq = json.loads((ROOT / mfile).read_text()) if (ROOT / mfile).exists() else None
        mq = mq.get(name, mq) if isinstance(mq, dict) else mq  # measured_ct.json holds one entry per variant
        with safe_open(d / "model.safetensors", "pt") as st:
            keys = sorted(st.keys())
            info = {k: {"dtype": str(st.get_slice(k).get_dtype()), "shape": list(st.get_slice(k).get_shape())}
                    for k in keys if k.startswith("model.layers.0.self_attn.q_proj.") or k in ("lm_head.weight", "model.embed_tokens.weight")}
        g = golden(gname)
        V[name] = {
            "dir": f"models/{name}", "kind": kind, "arch": "llama", "dtypes": sorted({v["dtype"] for v in info.values()}),
            "tool": tool, "command": cmd, "expected_fault": None, "fault_code": None, "parent": "llama-instruct",
            "tensor_count": len(keys), "embed_shape": info["model.embed_tokens.weight"]["shape"],
            "lm_head_shape": info["lm_head.weight"]["shape"], "tokenizer_added_tokens": 3,
            "weights_sha256_16": sha16(d / "model.safetensors"),
            "golden": g and {**g, "dequant_keys": [k for k in safe_open(GOLD / f"{gname}.safetensors", "pt").keys() if k.startswith("dequant.")]},
            "properties": {"quantization_config": cfg.get("quantization_config"), "tensors": info,
                           "generation_config": json.loads((d / "generation_config.json").read_text())},
            "measured": mq,
        }
    z["gguf_measured_not_committed"] = {k: v for k, v in mg.items() if not v.get("committed")}
    # Strict JSON: NaN (e.g. P(EOS) of the all-NaN fp16-overflow model) is written as null.
    def strict(x):
        if isinstance(x, float) and x != x:
            return None
        if isinstance(x, dict):
            return {k: strict(v) for k, v in x.items()}
        if isinstance(x, list):
            return [strict(v) for v in x]
        return x

    (ROOT / "zoo.json").write_text(json.dumps(strict(z), indent=1, default=str, allow_nan=False) + "\n")
    print(f"zoo.json: {len(V)} variants")


if __name__ == "__main__":
    main()
