"""bitsandbytes variants of llama-instruct and a QLoRA adapter on the NF4 one, with their merges, all made by
the real tools (transformers 5.24.0 + bitsandbytes 0.50.2 on CPU, peft 0.21.2; main venv plus
requirements-bnb.txt).

    cd testdata/zoo
    nice -n 10 /work/venvs/main/bin/python quant_bnb.py              # = quant qlora merge gguf gguf-golden
    nice -n 10 /work/venvs/main/bin/python quant_bnb.py quant        # or one stage at a time, in this order
    <llama.cpp venv python> quant_bnb.py gguf-golden                 # only needs llama_cpp, numpy, safetensors

Stages and what they write:

quant   models/llama-bnb-nf4   from_pretrained(llama-instruct, BitsAndBytesConfig(load_in_4bit, nf4, double quant,
                               compute dtype float32)), save_pretrained (one model.safetensors) + tokenizer
        models/llama-bnb-fp4   the same with bnb_4bit_quant_type="fp4", no double quant
        models/llama-bnb-int8  BitsAndBytesConfig(load_in_8bit=True) (LLM.int8(), threshold 6.0)
        goldens/bnb-{nf4,fp4,int8}.safetensors: input_ids.{i}, logits.{i} (F32) = the reloaded checkpoint's own
        transformers forward on CPU on the ids of goldens/llama-instruct.safetensors, plus dequant.<module>.weight
        F32 [out, in] from bnb's own bitsandbytes.functional.dequantize_4bit(weight.data, weight.quant_state)
        (int8: bitsandbytes.functional.int8_vectorwise_dequant(weight.data, weight.SCB)).
qlora   models/llama-qlora-adapter: peft prepare_model_for_kbit_training(llama-bnb-nf4 as loaded from disk),
        LoraConfig(r=8, lora_alpha=16, 7 projections, dropout 0), 60 steps AdamW 5e-3 on lora.py's chat tasks,
        PeftModel.save_pretrained; goldens/qlora-premerge.safetensors = PeftModel(nf4 base + adapter) forward.
merge   models/llama-qlora-merged (adapter merged into the ORIGINAL llama-instruct loaded in bf16),
        models/llama-qlora-merged-dequant (into the NF4 base dequantized by transformers' model.dequantize(),
        i.e. bnb dequantize_4bit), models/llama-qlora-merged-wrong-scale (as the first, but from a copy of the
        adapter whose adapter_config.json has lora_alpha 4x: scale 8 instead of 2); all bf16, sharded so that the
        three share their embedding / lm_head shards; goldens/qlora-merged{,-dequant,-wrong-scale}.safetensors
        (the saved bf16 model loaded in float32; measured_bnb.json keys are the model names).
gguf    gguf/llama-qlora-merged-q8_0.gguf: llama.cpp's convert_hf_to_gguf.py --outtype q8_0 (gguf_stage.run_converter)
gguf-golden  goldens/gguf-llama-qlora-merged-q8_0.safetensors: llama-cpp-python logits (as run_exports.py does).

Measurements (KL / same top-1 / max |dlogit| vs the HF f32 golden or the premerge golden, P(EOS at turn end),
greedy stop rate within 32 new tokens, seconds, versions) go to measured_bnb.json.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MODELS, GOLD, GGUF_DIR = ROOT / "models", ROOT / "goldens", ROOT / "gguf"
SRC = MODELS / "llama-instruct"
WORK = Path(os.environ.get("ZOO_SCRATCH", "/work/scratch/zoo")) / "bnb"
MEASURED = ROOT / "measured_bnb.json"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEQUANT = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"]
# The goldens keep the first DEQUANT_ROWS output rows of each dequantized weight (the checks above and
# in measured_bnb.json run on the whole weight): 64 rows are 64-256 4-bit blocks and 64 int8 row scales,
# 1.9 MB less testdata/ over the three goldens than whole weights. tests/it/quant.rs compares that prefix.
DEQUANT_ROWS = 64
ADAPTER = MODELS / "llama-qlora-adapter"
# bf16 merged models: ~0.5 MB shards, so that embed_tokens and lm_head (not LoRA targets, equal in all three merges)
# are shards of their own, byte-identical across the merged family (git stores them once; dedupe.py links them).
SHARD = "500KB"
MAX_NEW = 32
IM_END = 2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def record(name: str, props: dict) -> None:
    m = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    m.setdefault(name, {}).update(props)
    MEASURED.write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")


def setup():
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    # LLM.int8() logs "MatMul8bitLt: inputs will be cast from torch.float32 to float16" on every matmul
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    sys.path.insert(0, str(ROOT))


def versions() -> dict:
    import bitsandbytes

    import generate as G

    return {**G.versions(), "bitsandbytes": bitsandbytes.__version__}


def ref_ids():
    from safetensors import safe_open

    with safe_open(GOLD / "llama-instruct.safetensors", "pt") as st:
        meta = st.metadata()
        n = len([k for k in st.keys() if k.startswith("input_ids.")])
        ids = [st.get_tensor(f"input_ids.{i}") for i in range(n)]
        logits = [st.get_tensor(f"logits.{i}") for i in range(n)]
    return ids, [int(meta[f"prompt_len.{i}"]) for i in range(n)], logits


def portable(model):
    """bnb 0.50.2's Linear4bit.forward, in eval mode without grad on a CPU with AVX512-BF16 (this one), repacks
    the weight into a CPU-only layout on the first call and runs a fused kernel in bfloat16 (activations and
    absmax cast to bf16) whatever bnb_4bit_compute_dtype says. Every other CPU, CUDA, and training mode run
    dequantize_4bit (float32) + F.linear in the compute dtype. The goldens use that portable path: switch the
    fast path off on every Linear4bit (its own flag). The fused path is measured separately (measured_bnb.json)."""
    import bitsandbytes as bnb

    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
    return model


def load_bnb(path: Path, cfg=None, fast_cpu_kernel: bool = False):
    import torch
    from transformers import AutoModelForCausalLM

    kw = {"quantization_config": cfg} if cfg is not None else {}
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, device_map="cpu",
                                             attn_implementation="eager", **kw).eval()
    return m if fast_cpu_kernel else portable(m)


def forward_all(model, ids):
    import torch

    with torch.no_grad():
        return [model(input_ids=x[None]).logits[0].float().contiguous() for x in ids]


def compare(ref, got) -> dict:
    """max |dlogit|, KL(ref || got) mean over all positions, same top-1, P(EOS at turn end) of `got`."""
    dmax, kls, same, p_eos = 0.0, [], [], []
    for a, b in zip(ref, got):
        a, b = a.double(), b.double()
        dmax = max(dmax, float((a - b).abs().max()))
        la, lb = a.log_softmax(-1), b.log_softmax(-1)
        kls += (la.exp() * (la - lb)).sum(-1).tolist()
        same += (a.argmax(-1) == b.argmax(-1)).tolist()
        p_eos.append(float(lb[-2].exp()[IM_END]))
    return {"max_abs_dlogit": dmax, "kl_mean": sum(kls) / len(kls), "kl_max": max(kls),
            "same_top1": sum(same) / len(same), "p_eos_turn_end": p_eos, "p_eos_turn_end_mean": sum(p_eos) / len(p_eos)}


def greedy_stop(model, ids, plens) -> tuple[float, list[int]]:
    import torch

    stops, lens = 0, []
    with torch.no_grad():
        for x, p in zip(ids, plens):
            out = x[:p].tolist()
            for k in range(MAX_NEW):
                nxt = int(model(input_ids=torch.tensor([out])).logits[0, -1].argmax())
                out.append(nxt)
                if nxt == IM_END:
                    stops += 1
                    break
            lens.append(k + 1)
    return stops / len(ids), lens


def write_golden(name: str, ids, plens, logits, extra: dict | None = None, producer: str = "", meta_extra: dict | None = None) -> None:
    import torch
    from safetensors.torch import save_file

    tensors, meta = {}, {"variant": name, "producer": producer, **{f"v_{k}": v for k, v in versions().items()}, **(meta_extra or {})}
    for i, (x, p, l) in enumerate(zip(ids, plens, logits)):
        tensors[f"input_ids.{i}"] = x.to(torch.int64).contiguous()
        tensors[f"logits.{i}"] = l
        meta[f"prompt_len.{i}"] = str(p)
    tensors.update(extra or {})
    save_file(tensors, GOLD / f"{name}.safetensors", metadata=meta)


# ---------------------------------------------------------------------------------------------
# the saved format, decoded by hand from the safetensors file (documents it; checked against bnb)


def decode_4bit_by_hand(f: Path, module: str):
    """weight U8 [n/2, 1]: byte k holds element 2k in its HIGH nibble and 2k+1 in its LOW nibble, elements
    in row-major [out, in] order; value = quant_map[nibble] * absmax[element // blocksize]; with double quant
    absmax = nested_quant_map[absmax_u8] * nested_absmax[block // nested_blocksize] + nested_offset."""
    import torch
    from safetensors import safe_open

    p = module + ".weight"
    with safe_open(f, "pt") as st:
        t = {k[len(p):]: st.get_tensor(k) for k in st.keys() if k.startswith(p)}
    qs_key = next(k for k in t if k.startswith(".quant_state."))
    qs = json.loads(bytes(t[qs_key].tolist()).decode())
    packed = t[""].reshape(-1)
    idx = torch.stack([packed >> 4, packed & 0xF], 1).reshape(-1).long()
    if "nested_blocksize" in qs:
        nb = torch.arange(t[".absmax"].numel()) // qs["nested_blocksize"]
        absmax = t[".nested_quant_map"][t[".absmax"].long()] * t[".nested_absmax"][nb] + qs["nested_offset"]
    else:
        absmax = t[".absmax"]
    n = qs["shape"][0] * qs["shape"][1]
    w = t[".quant_map"][idx[:n]] * absmax[torch.arange(n) // qs["blocksize"]]
    return w.reshape(qs["shape"]), qs


# ---------------------------------------------------------------------------------------------


def stage_quant() -> None:
    import torch
    import bitsandbytes as bnb
    from safetensors import safe_open
    from transformers import AutoTokenizer, BitsAndBytesConfig

    tok = AutoTokenizer.from_pretrained(SRC)
    ids, plens, H = ref_ids()
    f32 = torch.float32
    jobs = {
        "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=f32),
        "fp4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=False,
                                  bnb_4bit_compute_dtype=f32),
        "int8": BitsAndBytesConfig(load_in_8bit=True),
    }
    for name, cfg in jobs.items():
        t0 = time.time()
        out = MODELS / f"llama-bnb-{name}"
        log(f"llama-bnb-{name}: from_pretrained(llama-instruct, {cfg.to_dict()})")
        m = load_bnb(SRC, cfg)
        if out.exists():
            shutil.rmtree(out)
        m.save_pretrained(out)  # safetensors, one file; generation_config.json as loaded from the source
        tok.save_pretrained(out)
        mem = forward_all(m, ids)
        del m
        q = load_bnb(out)  # the golden comes from the checkpoint as saved
        logits = forward_all(q, ids)
        reload_d = max(float((a - b).abs().max()) for a, b in zip(mem, logits))
        extra, checks = {}, {}
        for mod_name in DEQUANT:
            mod = q.get_submodule(mod_name)
            w = mod.weight
            if name == "int8":
                scb = mod.state.SCB if mod.state.SCB is not None else w.SCB  # moved to state by the first forward
                d = bnb.functional.int8_vectorwise_dequant(w.data, scb)
                by_hand = w.data.float() * scb.view(-1, 1) / 127.0
            else:
                d = bnb.functional.dequantize_4bit(w.data, w.quant_state)
                by_hand, _ = decode_4bit_by_hand(out / "model.safetensors", mod_name)
            assert not getattr(getattr(w, "quant_state", None), "packing_format_for_cpu", False)
            d = d.float().contiguous()
            assert list(d.shape) == [mod.out_features, mod.in_features], d.shape
            extra[f"dequant.{mod_name}.weight"] = d[:DEQUANT_ROWS].contiguous()
            orig = H_weights()[mod_name + ".weight"]
            checks[mod_name] = {"max_abs_diff_bnb_vs_by_hand_decode": float((d - by_hand).abs().max()),
                                "rel_err_vs_f32": float((d - orig).norm() / orig.norm())}
        fast = compare(logits, forward_all(load_bnb(out, fast_cpu_kernel=True), ids))
        write_golden(f"bnb-{name}", ids, plens, logits, extra,
                     producer=f"transformers {__import__('transformers').__version__} + bitsandbytes {bnb.__version__}: "
                              "from_pretrained(saved checkpoint, device_map='cpu', dtype=float32) forward" +
                              ("" if name == "int8" else "; Linear4bit.support_avx512bf16_for_cpu=False "
                               "(dequantize_4bit to float32 + F.linear in float32, the portable path)"),
                     meta_extra={"dequant_rows": f"first {DEQUANT_ROWS} output rows (quant_bnb.py DEQUANT_ROWS)"})
        props = compare(H, logits)
        props = {f"{k}_vs_hf_f32" if k.startswith(("max", "kl", "same")) else k: v for k, v in props.items()}
        rate, lens = greedy_stop(q, ids, plens)
        with safe_open(out / "model.safetensors", "pt") as st:
            p = "model.layers.0.self_attn.q_proj."
            tensors = {k: {"dtype": str(st.get_slice(k).get_dtype()), "shape": list(st.get_slice(k).get_shape())}
                       for k in st.keys() if k.startswith(p)}
            qs = {k: bytes(st.get_tensor(k).tolist()).decode() for k in st.keys() if k.startswith(p) and "quant_state" in k}
        props.update({"greedy_stop_rate": rate, "greedy_new_tokens": lens, "seconds": round(time.time() - t0),
                      "max_abs_dlogit_saved_vs_in_memory": reload_d, "dequant_checks": checks,
                      "cpu_avx512bf16_fused_path_vs_golden": {k: fast[k] for k in ("max_abs_dlogit", "kl_mean", "same_top1")},
                      "q_proj_tensors": tensors, "q_proj_quant_state_json": {k: json.loads(v) for k, v in qs.items()},
                      "quantization_config": json.loads((out / "config.json").read_text())["quantization_config"],
                      "versions": versions()})
        record(f"llama-bnb-{name}", props)
        log(f"llama-bnb-{name}: KL {props['kl_mean_vs_hf_f32']:.2e} same-top1 {props['same_top1_vs_hf_f32']:.3f} "
            f"P(EOS) {props['p_eos_turn_end_mean']:.3f} stop {rate:.2f} reload diff {reload_d:.1e} checks {checks} "
            f"({props['seconds']} s)")


_HW = {}


def H_weights():
    from safetensors.torch import load_file

    if not _HW:
        _HW.update(load_file(SRC / "model.safetensors"))
    return _HW


def stage_qlora() -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    import generate as G

    t0 = time.time()
    tok = G.load_tok()
    ids, plens, H = ref_ids()
    base = load_bnb(MODELS / "llama-bnb-nf4")
    base = prepare_model_for_kbit_training(base)  # f32 non-quantized params, gradient checkpointing, input grads
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    torch.manual_seed(G.SEED + 5)  # as lora.py: same init seed, same batches, same steps
    pm = get_peft_model(base, cfg)
    log("llama-qlora-adapter: prepare_model_for_kbit_training(llama-bnb-nf4), LoraConfig(r=8, alpha=16, 7 targets), "
        "60 steps AdamW lr 5e-3")
    loss = G.train(pm, tok, G.chat_example, steps=60, lr=5e-3, seed=5)
    if ADAPTER.exists():
        shutil.rmtree(ADAPTER)
    pm.save_pretrained(ADAPTER)
    tok.save_pretrained(ADAPTER)
    train_s = time.time() - t0
    pm = PeftModel.from_pretrained(load_bnb(MODELS / "llama-bnb-nf4"), ADAPTER).eval()
    logits = forward_all(pm, ids)
    write_golden("qlora-premerge", ids, plens, logits,
                 producer="peft PeftModel.from_pretrained(llama-bnb-nf4 (bnb Linear4bit, compute f32, "
                          "support_avx512bf16_for_cpu=False), llama-qlora-adapter) forward, unmerged")
    fast = compare(logits, forward_all(PeftModel.from_pretrained(load_bnb(MODELS / "llama-bnb-nf4", fast_cpu_kernel=True), ADAPTER).eval(), ids))
    props = compare(H, logits)
    props = {f"{k}_vs_hf_f32" if k.startswith(("max", "kl", "same")) else k: v for k, v in props.items()}
    rate, lens = greedy_stop(pm, ids, plens)
    delta = {}
    for n_, mod in pm.named_modules():
        if n_.endswith("layers.0.self_attn.q_proj") and hasattr(mod, "get_delta_weight"):
            d = mod.get_delta_weight("default")
            delta = {"layers.0.q_proj_delta_norm_over_weight_norm":
                     float(d.norm() / H_weights()["model.layers.0.self_attn.q_proj.weight"].norm())}
    props.update({"greedy_stop_rate": rate, "greedy_new_tokens": lens, "final_train_loss": loss,
                  "train_seconds": round(train_s), "seconds": round(time.time() - t0), **delta,
                  "cpu_avx512bf16_fused_path_vs_golden": {k: fast[k] for k in ("max_abs_dlogit", "kl_mean", "same_top1")},
                  "adapter_base_model_name_or_path": json.loads((ADAPTER / "adapter_config.json").read_text())["base_model_name_or_path"],
                  "versions": versions()})
    record("qlora-premerge", props)
    log(f"qlora-premerge: P(EOS) {props['p_eos_turn_end_mean']:.3f} stop {rate:.2f} loss {loss:.3f} ({props['seconds']} s)")


def save_merged(model, tok, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, max_shard_size=SHARD)
    tok.save_pretrained(out)


def stage_merge() -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import generate as G

    t0 = time.time()
    tok = G.load_tok()
    ids, plens, _ = ref_ids()
    from safetensors.torch import load_file

    pre = load_file(GOLD / "qlora-premerge.safetensors")
    P = [pre[f"logits.{i}"] for i in range(len(ids))]
    bf16 = lambda: AutoModelForCausalLM.from_pretrained(SRC, dtype=torch.bfloat16, attn_implementation="eager")

    def finish(name: str, how: str, extra_props: dict | None = None):
        m = G.load_model(MODELS / name)  # bf16 file, loaded in float32
        logits = forward_all(m, ids)
        gname = name.removeprefix("llama-")  # goldens/qlora-merged{,-dequant,-wrong-scale}.safetensors
        write_golden(gname, ids, plens, logits, producer=f"{how}; golden: the saved bf16 model loaded with dtype=float32, forward")
        props = compare(P, logits)
        props = {f"{k}_vs_premerge" if k.startswith(("max", "kl", "same")) else k: v for k, v in props.items()}
        rate, lens = greedy_stop(m, ids, plens)
        props.update({"greedy_stop_rate": rate, "greedy_new_tokens": lens, "producer": how, "golden": f"goldens/{gname}.safetensors",
                      **(extra_props or {})})
        record(name, props)
        log(f"{name}: KL vs premerge {props['kl_mean_vs_premerge']:.2e} same-top1 {props['same_top1_vs_premerge']:.3f} "
            f"P(EOS) {props['p_eos_turn_end_mean']:.3f} stop {rate:.2f}")

    # a. the recommended merge: the original unquantized model (bf16) + adapter
    how = "PeftModel.from_pretrained(llama-instruct loaded in bf16, llama-qlora-adapter).merge_and_unload(), save_pretrained bf16"
    log(f"llama-qlora-merged: {how}")
    save_merged(PeftModel.from_pretrained(bf16(), ADAPTER).merge_and_unload(), tok, MODELS / "llama-qlora-merged")
    finish("llama-qlora-merged", how)

    # b. into the dequantized NF4 base: transformers' model.dequantize() (bnb dequantize_4bit per Linear4bit, f32)
    how = ("llama-bnb-nf4 loaded, model.dequantize() (transformers; bnb dequantize_4bit, float32), "
           "PeftModel.from_pretrained(.., llama-qlora-adapter).merge_and_unload(), .to(bfloat16), save_pretrained")
    log(f"llama-qlora-merged-dequant: {how}")
    d = load_bnb(MODELS / "llama-bnb-nf4").dequantize()
    m = PeftModel.from_pretrained(d, ADAPTER).merge_and_unload().to(torch.bfloat16)
    save_merged(m, tok, MODELS / "llama-qlora-merged-dequant")
    # what peft's own merge on the quantized PeftModel gives (merged weight re-quantized to nf4; not saved)
    rq = portable(PeftModel.from_pretrained(load_bnb(MODELS / "llama-bnb-nf4"), ADAPTER).merge_and_unload())
    kind = type(rq.model.layers[0].self_attn.q_proj).__name__
    c = compare(P, forward_all(rq, ids))
    finish("llama-qlora-merged-dequant", how, {"not_saved_peft_merge_on_nf4_model": {
        "note": "PeftModel(llama-bnb-nf4).merge_and_unload(): peft dequantizes, adds the delta and re-quantizes to nf4",
        "merged_module_type": kind, "kl_mean_vs_premerge": c["kl_mean"], "same_top1_vs_premerge": c["same_top1"],
        "max_abs_dlogit_vs_premerge": c["max_abs_dlogit"]}})

    # c. wrong scale: a copy of the adapter whose adapter_config.json says lora_alpha 64 (4x) -> scale 8, not 2
    bad = WORK / "qlora-adapter-alpha-x4"
    if bad.exists():
        shutil.rmtree(bad)
    shutil.copytree(ADAPTER, bad)
    acfg = json.loads((bad / "adapter_config.json").read_text())
    acfg["lora_alpha"] = 4 * acfg["lora_alpha"]
    (bad / "adapter_config.json").write_text(json.dumps(acfg, indent=2, sort_keys=True) + "\n")
    how = (f"as llama-qlora-merged, from a copy of the adapter with lora_alpha edited to {acfg['lora_alpha']} "
           f"(scale {acfg['lora_alpha'] / acfg['r']:g} instead of {acfg['lora_alpha'] / 4 / acfg['r']:g})")
    log(f"llama-qlora-merged-wrong-scale: {how}")
    save_merged(PeftModel.from_pretrained(bf16(), bad).merge_and_unload(), tok, MODELS / "llama-qlora-merged-wrong-scale")
    finish("llama-qlora-merged-wrong-scale", how, {"lora_alpha_used": acfg["lora_alpha"], "scale_used": acfg["lora_alpha"] / acfg["r"]})


def stage_gguf() -> None:
    import gguf_stage as S

    t0 = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
    out = WORK / "llama-qlora-merged-q8_0.gguf"
    log("convert_hf_to_gguf.py models/llama-qlora-merged --outtype q8_0")
    S.run_converter(MODELS / "llama-qlora-merged", out, "q8_0")
    GGUF_DIR.mkdir(exist_ok=True)
    shutil.copy(out, GGUF_DIR / out.name)


def stage_gguf_golden() -> None:
    """llama.cpp venv (or any with llama_cpp, numpy, safetensors): exactly run_exports.py's golden recipe."""
    import llama_cpp
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    import gguf_stage as S

    path = GGUF_DIR / "llama-qlora-merged-q8_0.gguf"
    gold = GOLD / "llama-instruct.safetensors"
    ref = load_file(str(gold))
    with safe_open(str(gold), "np") as st:
        rmeta = st.metadata()
    n = len([k for k in ref if k.startswith("input_ids.")])
    prompts = [json.loads(l) for l in (ROOT / "prompts.jsonl").read_text().splitlines() if l.strip()]
    texts = ["".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in p["messages"]) + "<|im_start|>assistant\n"
             for p in prompts]
    seqs = [{"input_ids": [int(x) for x in ref[f"input_ids.{i}"]], "prompt_len": int(rmeta[f"prompt_len.{i}"]),
             "prompt_text": texts[i]} for i in range(n)]
    ver = llama_cpp.__version__
    logits, stop_rate, new_lens, tok_equal, meta = S.llama_logits(path, seqs)
    name = "gguf-llama-qlora-merged-q8_0"
    tensors = {}
    gm = {"variant": name, "producer": f"llama-cpp-python {ver}: Llama(logits_all=True).eval(input_ids); scores",
          "v_llama_cpp_python": ver, "gguf_file": f"gguf/{path.name}"}
    for i, (s, l) in enumerate(zip(seqs, logits)):
        tensors[f"input_ids.{i}"] = np.array(s["input_ids"], dtype=np.int64)
        tensors[f"logits.{i}"] = np.ascontiguousarray(l)
        gm[f"prompt_len.{i}"] = str(s["prompt_len"])
    save_file(tensors, str(GOLD / f"{name}.safetensors"), metadata=gm)

    def lsm(z):
        z = z.astype(np.float64)
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    props = {"greedy_stop_rate": stop_rate, "greedy_new_tokens": new_lens, "prompt_token_roundtrip_equal": tok_equal,
             "gguf_meta": meta, "size_bytes": path.stat().st_size, "producer": f"llama-cpp-python {ver}"}
    for other in ["qlora-merged", "qlora-premerge"]:
        o = load_file(str(GOLD / f"{other}.safetensors"))
        kls, same, dmax = [], [], 0.0
        for i, l in enumerate(logits):
            a, b = o[f"logits.{i}"], l
            la, lb = lsm(a), lsm(b)
            kls += (np.exp(la) * (la - lb)).sum(-1).tolist()
            same += (a.argmax(-1) == b.argmax(-1)).tolist()
            dmax = max(dmax, float(np.abs(a - b).max()))
        props[f"vs_{other}"] = {"kl_mean": sum(kls) / len(kls), "same_top1": sum(same) / len(same), "max_abs_dlogit": dmax}
    p_eos = [float(np.exp(lsm(l[-2]))[IM_END]) for l in logits]
    props.update({"p_eos_turn_end": p_eos, "p_eos_turn_end_mean": sum(p_eos) / len(p_eos)})
    record(name, props)
    log(f"{name}: {props}")


STAGES = {"quant": stage_quant, "qlora": stage_qlora, "merge": stage_merge, "gguf": stage_gguf, "gguf-golden": stage_gguf_golden}

if __name__ == "__main__":
    args = sys.argv[1:] or list(STAGES)
    sys.path.insert(0, str(ROOT))
    if args != ["gguf-golden"]:
        setup()
    for a in args:
        t = time.time()
        STAGES[a]()
        record("_seconds", {a: round(time.time() - t)})
        log(f"stage {a}: {time.time() - t:.0f} s")
