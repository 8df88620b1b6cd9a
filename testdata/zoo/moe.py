"""Mixture-of-experts models for the zoo: tiny Mixtral and Qwen3-MoE made by transformers (random
init: they are here for parity, not behaviour), their transformers goldens, and their GGUFs made by
llama.cpp's own converter and quantizer.

    <main venv python> moe.py hf        # models/{mixtral,qwen3-moe,qwen3-moe-mixed} + goldens
    <main venv python> moe.py gguf      # convert_hf_to_gguf.py --outtype f16, llama-quantize Q8_0
    <main venv python> moe.py gguf-goldens   # llama.cpp logits via llama_logits.c (gcc + libllama)
    <main venv python> moe.py qwen2moe-gguf   # untied Qwen2-MoE (HF in scratch only) -> F16 GGUF + llama.cpp golden
    <main venv python> moe.py manifest  # adds these entries to zoo.json

Random init gives near-uniform router probabilities (router logits ~0.05 apart), where an f32
rounding difference can swap two experts. The router weights are therefore drawn with std 0.3
(hidden states entering the router are RMS-normed, so logits have std ~2.4) and the generator
records the smallest top-k margin (k-th minus (k+1)-th router probability) over every golden token
and layer, so a routing flip between implementations is ruled out rather than hoped away.

Layout of the goldens: as every other golden (`input_ids.{i}`, `logits.{i}`, `hidden.{i}`), on the
zoo's shared golden ids (taken from goldens/llama-instruct.safetensors).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import peft  # noqa: F401  (generate.py imports it for its LoRA stages; not needed here)
except ImportError:
    import types

    sys.modules["peft"] = types.SimpleNamespace(__version__="not installed")
import generate as G  # noqa: E402

if isinstance(sys.modules.get("peft"), type(sys)) is False:
    del sys.modules["peft"]  # the stub only satisfies generate.py's import; transformers must not see it

ROOT = G.ROOT
LLAMACPP = Path(os.environ.get("ZOO_LLAMACPP_SRC", "/work/llama.cpp"))
QUANTIZE = Path(os.environ.get("ZOO_LLAMA_QUANTIZE", str(LLAMACPP / "build/bin/llama-quantize")))
MEASURED = ROOT / "measured_moe.json"
ROUTER_STD = 0.3
# Seeds moved on from SEED + 40 + i where the first draw left a top-k margin below 1e-4 (qwen2-moe:
# 1.8e-5 with shift 0; 2.2e-4, 6.6e-6, 9.2e-5 with 1-3; 4.8e-4 with 4); the margin of the draw kept is in measured_moe.json.
SEED_SHIFT = {"qwen2-moe": int(os.environ.get("ZOO_MOE_SEED_SHIFT", "4"))}


def configs():
    from transformers import MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig

    common = dict(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
                  bos_token_id=None, eos_token_id=G.IM_END, pad_token_id=G.PAD)
    return {
        # Mixtral: softmax → top-2 → renormalised; experts w1 (gate), w3 (up), w2 (down).
        "mixtral": ("MixtralForCausalLM", MixtralConfig(**common, intermediate_size=128, num_local_experts=4,
                                                        num_experts_per_tok=2, rope_theta=1e6,
                                                        tie_word_embeddings=False)),
        # Qwen3-MoE with norm_topk_prob (as Qwen3-30B-A3B ships), every layer sparse.
        "qwen3-moe": ("Qwen3MoeForCausalLM", Qwen3MoeConfig(**common, head_dim=16, intermediate_size=192,
                                                            moe_intermediate_size=128, num_experts=4,
                                                            num_experts_per_tok=2, norm_topk_prob=True,
                                                            decoder_sparse_step=1, mlp_only_layers=[],
                                                            rope_theta=1e6, tie_word_embeddings=True)),
        # The other branches: top-k weights not renormalised, layer 0 a dense MLP (mlp_only_layers),
        # HF only (llama.cpp's qwen3moe graph has no dense layers).
        "qwen3-moe-mixed": ("Qwen3MoeForCausalLM", Qwen3MoeConfig(**common, head_dim=16, intermediate_size=192,
                                                                  moe_intermediate_size=128, num_experts=4,
                                                                  num_experts_per_tok=2, norm_topk_prob=False,
                                                                  decoder_sparse_step=1, mlp_only_layers=[0],
                                                                  rope_theta=1e6, tie_word_embeddings=True)),
        # Qwen2-MoE: qkv bias, top-k weights as they are (norm_topk_prob false, the family default)
        # plus a shared expert on every token, gated by sigmoid(shared_expert_gate · x). Narrow
        # experts (32) to stay within the zoo's size budget.
        "qwen2-moe": ("Qwen2MoeForCausalLM", Qwen2MoeConfig(**common, intermediate_size=128, moe_intermediate_size=32,
                                                            shared_expert_intermediate_size=64, num_experts=4,
                                                            num_experts_per_tok=2, norm_topk_prob=False,
                                                            decoder_sparse_step=1, mlp_only_layers=[],
                                                            rope_theta=1e6, tie_word_embeddings=True)),
    }


def golden_seqs():
    ref = load_file(str(G.GOLD / "llama-instruct.safetensors"))
    from safetensors import safe_open
    with safe_open(str(G.GOLD / "llama-instruct.safetensors"), "pt") as f:
        meta = f.metadata()
    n = len([k for k in ref if k.startswith("input_ids.")])
    return [(int(meta[f"prompt_len.{i}"]), ref[f"input_ids.{i}"]) for i in range(n)]


@torch.no_grad()
def router_margin(model, seqs) -> float:
    """Smallest p_k − p_(k+1) of the router softmax over every token and sparse layer."""
    worst = float("inf")
    k = model.config.num_experts_per_tok
    captured = []

    def hook(mod, inp, out):
        x = inp[0].reshape(-1, inp[0].shape[-1])
        p = torch.softmax(torch.nn.functional.linear(x, mod.weight).float(), -1)
        top = torch.topk(p, k + 1, -1).values
        captured.append(float((top[:, k - 1] - top[:, k]).min()))

    hs = [m.register_forward_hook(hook) for n, m in model.named_modules() if n.endswith("mlp.gate") and hasattr(m, "top_k")]
    for _, ids in seqs:
        model(input_ids=ids[None])
    for h in hs:
        h.remove()
    return min(captured) if captured else worst


@torch.no_grad()
def init_model(name: str, cls_name: str, cfg):
    """The random-init model of zoo entry `name`: its seed (from its place in `configs()`) and the
    router drawn with std ROUTER_STD. Used by stage_hf and stage_qwen2moe_gguf."""
    import transformers

    torch.manual_seed(G.SEED + 40 + list(configs()).index(name) + SEED_SHIFT.get(name, 0))
    model = getattr(transformers, cls_name)(cfg).float().eval()
    for n, p in model.named_parameters():
        if n.endswith("mlp.gate.weight"):
            p.normal_(0.0, ROUTER_STD)
    return model


def stage_hf() -> None:
    tok = G.load_tok()
    seqs = golden_seqs()
    measured = {}
    only = os.environ.get("ZOO_MOE_ONLY")
    if only and MEASURED.exists():
        measured = json.loads(MEASURED.read_text())
    for name, (cls_name, cfg) in configs().items():
        if only and name not in only.split(","):
            continue
        model = init_model(name, cls_name, cfg)
        out = G.MODELS / name
        # Stored bf16, the dtype MoE checkpoints ship in; goldens from the bf16 values upcast.
        G.save_hf(model.to(torch.bfloat16), tok, out)
        m = G.load_model(out)
        save_hf_golden(m, name, seqs)
        margin = router_margin(m, seqs)
        measured[name] = {"router_topk_margin_min": margin, "params": sum(p.numel() for p in m.parameters())}
        G.log(f"{name}: {measured[name]}")
    MEASURED.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")


GGUF_MODELS = ["mixtral", "qwen3-moe"]


def stage_gguf() -> None:
    import gguf_stage as S

    S.LLAMACPP = LLAMACPP
    S.GGUF_DIR.mkdir(exist_ok=True)
    for name in GGUF_MODELS:
        f16 = S.GGUF_DIR / f"{name}-f16.gguf"
        S.log(f"convert {name} -> f16")
        S.run_converter(G.MODELS / name, f16, "f16")
        q8 = S.GGUF_DIR / f"{name}-q8_0.gguf"
        S.log(f"llama-quantize {name} -> Q8_0")
        subprocess.run([str(QUANTIZE), str(f16), str(q8), "Q8_0", "2"], check=True)
    # The speed hack users apply to Mixtral: one expert per token instead of two, written into the
    # file with gguf-py's own script (the same as llama.cpp's `--override-kv
    # llama.expert_used_count=int:1`, made permanent). The lineage testdata/pipelines/moe-top1.toml.
    import shutil

    top1 = S.GGUF_DIR / "mixtral-top1.gguf"
    shutil.copy(S.GGUF_DIR / "mixtral-q8_0.gguf", top1)
    subprocess.run([sys.executable, str(LLAMACPP / "gguf-py/gguf/scripts/gguf_set_metadata.py"), str(top1),
                    "llama.expert_used_count", "1", "--force"], check=True, env={**os.environ, "PYTHONPATH": str(LLAMACPP / "gguf-py")})


def llama_logits_tool() -> Path:
    """Builds llama_logits.c against the llama.cpp build (no llama-cpp-python needed)."""
    exe = Path(os.environ.get("ZOO_SCRATCH", "/work/scratch-moe")) / "llama_logits"
    exe.parent.mkdir(parents=True, exist_ok=True)
    lib = LLAMACPP / "build/bin"
    subprocess.run(["gcc", "-O2", f"-I{LLAMACPP}/include", f"-I{LLAMACPP}/ggml/include", str(ROOT / "llama_logits.c"),
                    f"-L{lib}", "-lllama", f"-Wl,-rpath,{lib}", "-o", str(exe)], check=True)
    return exe


def llama_cpp_logits(exe: Path, gguf: Path, seqs) -> list:
    import numpy as np

    out = Path(os.environ.get("ZOO_SCRATCH", "/work/scratch-moe")) / "logits.bin"
    text = "".join(" ".join(str(int(t)) for t in ids) + "\n" for _, ids in seqs)
    subprocess.run([str(exe), str(gguf), str(out)], input=text.encode(), check=True)
    flat = np.fromfile(out, dtype="<f4")
    total = sum(len(ids) for _, ids in seqs)
    vocab = flat.size // total
    res, at = [], 0
    for _, ids in seqs:
        res.append(torch.from_numpy(flat[at * vocab:(at + len(ids)) * vocab].reshape(len(ids), vocab).copy()))
        at += len(ids)
    return res


@torch.no_grad()
def save_hf_golden(m, name: str, seqs=None) -> None:
    """transformers' logits and hidden states of model `m` on the shared golden ids, as
    goldens/`name`.safetensors (the golden layout). Used here, by phi.py and by granite.py."""
    tensors, meta = {}, {"variant": name, **{f"v_{k}": v for k, v in G.versions().items()}}
    for j, (plen, ids) in enumerate(seqs if seqs is not None else golden_seqs()):
        o = m(input_ids=ids[None], output_hidden_states=True)
        tensors[f"input_ids.{j}"] = ids.clone()
        tensors[f"logits.{j}"] = o.logits[0].float().contiguous()
        tensors[f"hidden.{j}"] = torch.stack([h[0] for h in o.hidden_states]).float().contiguous()
        meta[f"prompt_len.{j}"] = str(plen)
    save_file(tensors, str(G.GOLD / f"{name}.safetensors"), metadata=meta)


def save_llama_cpp_golden(gguf: Path, variant: str) -> list:
    """llama.cpp's logits for `gguf` on the shared golden ids, saved as goldens/`variant`.safetensors
    (the golden layout); returns them. Used by phi.py and mixed_quant.py."""
    seqs = golden_seqs()
    logits = llama_cpp_logits(llama_logits_tool(), gguf, seqs)
    tensors, meta = {}, {"variant": variant, "producer": "llama_logits.c (libllama, /work/llama.cpp build)",
                         "gguf_file": f"gguf/{gguf.name}"}
    for i, ((plen, ids), lg) in enumerate(zip(seqs, logits)):
        tensors[f"input_ids.{i}"] = ids.clone()
        tensors[f"logits.{i}"] = lg.contiguous()
        meta[f"prompt_len.{i}"] = str(plen)
    save_file(tensors, str(G.GOLD / f"{variant}.safetensors"), metadata=meta)
    return logits


def stage_gguf_goldens() -> None:
    """llama.cpp logits on the shared golden ids, through llama_logits.c. The tool is first checked
    against a golden llama-cpp-python made (gguf-qwen2-instruct-f16)."""
    import gguf_stage as S

    exe = llama_logits_tool()
    seqs = golden_seqs()
    measured = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    ref = load_file(str(G.GOLD / "gguf-qwen2-instruct-f16.safetensors"))
    mine = llama_cpp_logits(exe, S.GGUF_DIR / "qwen2-instruct-f16.gguf", seqs)
    check = max(float((mine[i] - ref[f"logits.{i}"]).abs().max()) for i in range(len(seqs)))
    measured["llama_logits_tool_vs_llama_cpp_python_qwen2_f16_max_abs"] = check
    G.log(f"llama_logits vs llama-cpp-python golden (qwen2-instruct-f16): max |d| {check:.3g}")
    for name in GGUF_MODELS:
        hf = load_file(str(G.GOLD / f"{name}.safetensors"))
        for t in ["f16", "q8_0"]:
            logits = llama_cpp_logits(exe, S.GGUF_DIR / f"{name}-{t}.gguf", seqs)
            tensors, meta = {}, {"variant": f"gguf-{name}-{t}", "producer": "llama_logits.c (libllama, /work/llama.cpp build)",
                                 "gguf_file": f"gguf/{name}-{t}.gguf"}
            for i, ((plen, ids), lg) in enumerate(zip(seqs, logits)):
                tensors[f"input_ids.{i}"] = ids.clone()
                tensors[f"logits.{i}"] = lg.contiguous()
                meta[f"prompt_len.{i}"] = str(plen)
            save_file(tensors, str(G.GOLD / f"gguf-{name}-{t}.safetensors"), metadata=meta)
            d = max(float((lg - hf[f"logits.{i}"]).abs().max()) for i, lg in enumerate(logits))
            measured.setdefault(f"gguf-{name}-{t}", {})["max_abs_dlogit_vs_hf_f32"] = d
            G.log(f"gguf-{name}-{t}: llama.cpp vs transformers max |dlogit| {d:.3g}")
    MEASURED.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")


QWEN2MOE_GGUF = "qwen2-moe-f16.gguf"


@torch.no_grad()
def stage_qwen2moe_gguf() -> None:
    """Qwen2-MoE as llama.cpp runs it. llama.cpp's qwen2moe graph requires `output.weight`
    (src/models/qwen2moe.cpp creates it without TENSOR_NOT_REQUIRED), so the zoo's tied qwen2-moe
    cannot load there; the released Qwen1.5/Qwen2-MoE checkpoints are untied. This is the zoo
    config with tie_word_embeddings false (same seed and router std), saved to a scratch dir (not
    committed: testdata/ budget), converted to F16 by llama.cpp's converter; committed are the GGUF
    and llama.cpp's logits on the shared golden ids. Measured into measured_moe.json: llama.cpp vs
    transformers on the scratch HF model, and how far the shared expert moves transformers' logits
    (what a shared-expert bug in the engine would cost, against the test's tolerance)."""
    import gguf_stage as S

    S.LLAMACPP = LLAMACPP
    cls_name, cfg = configs()["qwen2-moe"]
    cfg.tie_word_embeddings = False
    model = init_model("qwen2-moe", cls_name, cfg)
    hf = Path(os.environ.get("ZOO_SCRATCH", "/work/scratch-moe")) / "qwen2-moe-untied"
    G.save_hf(model.to(torch.bfloat16), G.load_tok(), hf)
    gguf = S.GGUF_DIR / QWEN2MOE_GGUF
    S.log(f"convert {hf} -> {gguf.name}")
    S.run_converter(hf, gguf, "f16")
    seqs = golden_seqs()
    lc = save_llama_cpp_golden(gguf, "gguf-qwen2-moe-f16")
    m = G.load_model(hf)
    ref = [m(input_ids=ids[None]).logits[0].float() for _, ids in seqs]
    margin = router_margin(m, seqs)
    for layer in m.model.layers:
        layer.mlp.shared_expert.down_proj.weight.zero_()
    no_shared = [m(input_ids=ids[None]).logits[0].float() for _, ids in seqs]
    measured = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    measured["gguf-qwen2-moe-f16"] = {
        "max_abs_dlogit_vs_hf_f32": max(float((a - b).abs().max()) for a, b in zip(lc, ref)),
        "shared_expert_effect_max_abs_dlogit": min(float((a - b).abs().max()) for a, b in zip(no_shared, ref)),
        "router_topk_margin_min": margin,
        "untied_scratch_hf": str(hf),
    }
    G.log(f"gguf-qwen2-moe-f16: {measured['gguf-qwen2-moe-f16']}")
    MEASURED.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")


def stage_manifest() -> None:
    """Adds (or refreshes) this script's entries in zoo.json; every other entry is left as it is."""
    import hashlib

    import transformers
    from safetensors import safe_open

    zoo = json.loads((ROOT / "zoo.json").read_text())
    measured = json.loads(MEASURED.read_text())
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()[:16]  # noqa: E731
    for name in configs():
        d = G.MODELS / name
        cfg = json.loads((d / "config.json").read_text())
        st = safe_open(str(d / "model.safetensors"), "pt")
        shapes = {k: list(st.get_slice(k).get_shape()) for k in st.keys()}
        zoo["variants"][name] = {
            "dir": f"models/{name}", "kind": "hf", "arch": cfg["model_type"],
            "dtypes": sorted({str(st.get_slice(k).get_dtype()) for k in st.keys()}),
            "tool": f"transformers {transformers.__version__} save_pretrained (random init, router std {ROUTER_STD})",
            "command": "python moe.py hf", "expected_fault": None, "tensor_count": len(shapes),
            "embed_shape": shapes.get("model.embed_tokens.weight"), "lm_head_shape": shapes.get("lm_head.weight"),
            "tokenizer_added_tokens": len(json.loads((d / "tokenizer.json").read_text())["added_tokens"]),
            "weights_sha256_16": sha(d / "model.safetensors"),
            "measured": measured.get(name),
            "golden": {"path": f"goldens/{name}.safetensors", "has_hidden": True},
            "properties": {k: cfg.get(k) for k in ["num_local_experts", "num_experts_per_tok", "norm_topk_prob",
                                                   "moe_intermediate_size", "mlp_only_layers", "decoder_sparse_step"] if k in cfg},
        }
    for name in GGUF_MODELS:
        for t in ["f16", "q8_0"]:
            path = ROOT / "gguf" / f"{name}-{t}.gguf"
            tool = ("llama.cpp convert_hf_to_gguf.py --outtype f16 (unknown BPE chkhsh mapped to 'gpt-2')" if t == "f16"
                    else "llama.cpp llama-quantize F16 -> Q8_0")
            zoo["variants"][f"gguf-{name}-{t}"] = {
                "dir": "gguf", "path": f"gguf/{name}-{t}.gguf", "kind": "gguf", "arch": None, "dtypes": None,
                "tool": f"{tool} ({LLAMACPP}); goldens from llama_logits.c (libllama)",
                "command": "python moe.py gguf gguf-goldens", "expected_fault": None, "parent": name,
                "tensor_count": None, "embed_shape": None, "lm_head_shape": None, "tokenizer_added_tokens": None,
                "weights_sha256_16": sha(path),
                "golden": {"path": f"goldens/gguf-{name}-{t}.safetensors", "has_hidden": False},
                "measured": measured.get(f"gguf-{name}-{t}"),
            }
    path = ROOT / "gguf" / QWEN2MOE_GGUF
    zoo["variants"]["gguf-qwen2-moe-f16"] = {
        "dir": "gguf", "path": f"gguf/{QWEN2MOE_GGUF}", "kind": "gguf", "arch": None, "dtypes": None,
        "tool": f"llama.cpp convert_hf_to_gguf.py --outtype f16 of an untied qwen2-moe (scratch HF dir, not committed) "
                f"({LLAMACPP}); golden from llama_logits.c (libllama)",
        "command": "python moe.py qwen2moe-gguf", "expected_fault": None, "parent": None,
        "tensor_count": None, "embed_shape": None, "lm_head_shape": None, "tokenizer_added_tokens": None,
        "weights_sha256_16": sha(path),
        "golden": {"path": "goldens/gguf-qwen2-moe-f16.safetensors", "has_hidden": False},
        "measured": measured.get("gguf-qwen2-moe-f16"),
    }
    top1 = ROOT / "gguf" / "mixtral-top1.gguf"
    zoo["variants"]["gguf-mixtral-top1"] = {
        "dir": "gguf", "path": "gguf/mixtral-top1.gguf", "kind": "gguf", "arch": None, "dtypes": None,
        "tool": "gguf-py gguf_set_metadata.py mixtral-q8_0.gguf llama.expert_used_count 1 --force",
        "command": "python moe.py gguf", "expected_fault": "llama.expert_used_count 1 (config.json num_experts_per_tok 2)",
        "parent": "gguf-mixtral-q8_0", "tensor_count": None, "embed_shape": None, "lm_head_shape": None,
        "tokenizer_added_tokens": None, "weights_sha256_16": sha(top1), "golden": None, "measured": None,
    }
    (ROOT / "zoo.json").write_text(json.dumps(zoo, indent=1) + "\n")
    G.log("zoo.json: MoE entries added")


if __name__ == "__main__":
    torch.set_num_threads(2)
    stages = {"hf": stage_hf, "gguf": stage_gguf, "gguf-goldens": stage_gguf_goldens, "qwen2moe-gguf": stage_qwen2moe_gguf,
              "manifest": stage_manifest}
    for s in sys.argv[1:]:
        stages[s]()
