"""Exports of the healthy training run (issue 19): runs/lora-healthy's final adapter merged into
llama-instruct by peft, converted by llama.cpp's converter and quantized by llama.cpp — a run whose
every checkpoint behaves while one exported artifact does not.

    cd testdata/zoo
    /work/venvs/main/bin/python run_exports.py merge       # peft merge_and_unload + convert_hf_to_gguf (f16, q8_0)
    <llama.cpp venv python>    run_exports.py quantize    # llama_model_quantize f16 -> Q2_K, llama.cpp logits

Writes gguf/lora-healthy-q8_0.gguf (the converter's own Q8_0: healthy) and gguf/lora-healthy-q2_k.gguf
(whole model in Q2_K, the mix `llama-quantize … Q2_K` makes: the export that breaks it), the
Q2_K file's llama.cpp golden goldens/gguf-lora-healthy-q2_k.safetensors (logits on the golden ids
of llama-instruct.safetensors), and what transformers (merged HF model) and llama.cpp (each GGUF)
measure — P(EOS at turn end), greedy stop rate — into measured_runs.json under "exports".
The merged HF model and the F16 GGUF stay in the scratch directory (not committed).
"""

from __future__ import annotations

import json
import shutil
import sys

import gguf_stage as S

RUN = S.ROOT / "runs" / "lora-healthy"
WORK = S.SCRATCH / "run-exports"
MERGED = WORK / "lora-healthy-merged"
MEASURED = S.ROOT / "measured_runs.json"
NAME = "lora-healthy"


def record(props: dict) -> None:
    m = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    m.setdefault("exports", {}).update(props)
    MEASURED.write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")


def merge() -> None:
    import torch
    from peft import PeftModel

    import generate as G

    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    S.log(f"peft: {RUN.name} over llama-instruct, merge_and_unload")
    m = PeftModel.from_pretrained(G.load_model(S.MODELS / "llama-instruct"), RUN).merge_and_unload()
    # The run saved no tokenizer (the Trainer was given none): the base's, as users do before converting.
    G.save_hf(m, G.load_tok(), MERGED)
    tok = G.load_tok()
    seqs = G.reference_sequences(G.load_model(S.MODELS / "llama-instruct"), tok)
    with torch.no_grad():
        props = G.measure(G.load_model(MERGED).eval(), tok, seqs)
    props["producer"] = "transformers + peft merge_and_unload, save_pretrained (f32)"
    record({f"{NAME}-merged": props})
    S.log(f"merged: P(EOS) {props['p_eos_turn_end_mean']:.3f} stops {props['greedy_stop_rate']:.2f}")
    for t in ["f16", "q8_0"]:
        S.log(f"convert merged -> {t}")
        S.run_converter(MERGED, WORK / f"{NAME}-{t}.gguf", t)


def quantize() -> None:
    import llama_cpp
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    S.log("llama_model_quantize f16 -> Q2_K")
    S.quantize_file(WORK / f"{NAME}-f16.gguf", WORK / f"{NAME}-q2_k.gguf", llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K)
    gold = S.GOLD / "llama-instruct.safetensors"
    ref = load_file(str(gold))
    with safe_open(str(gold), "np") as st:
        rmeta = st.metadata()
    n = len([k for k in ref if k.startswith("input_ids.")])
    prompts = [json.loads(l) for l in (S.ROOT / "prompts.jsonl").read_text().splitlines() if l.strip()]
    texts = ["".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in p["messages"]) + "<|im_start|>assistant\n"
             for p in prompts]
    seqs = [{"input_ids": [int(x) for x in ref[f"input_ids.{i}"]], "prompt_len": int(rmeta[f"prompt_len.{i}"]),
             "prompt_text": texts[i]} for i in range(n)]
    ver = llama_cpp.__version__
    for t in ["q8_0", "q2_k"]:
        path = WORK / f"{NAME}-{t}.gguf"
        logits, stop_rate, new_lens, tok_equal, meta = S.llama_logits(path, seqs)
        p_eos = []
        for l in logits:
            z = l[-2].astype(np.float64)
            p = np.exp(z - z.max())
            p_eos.append(float(p[S.IM_END] / p.sum()))
        props = {"p_eos_turn_end": p_eos, "p_eos_turn_end_mean": sum(p_eos) / len(p_eos), "greedy_stop_rate": stop_rate,
                 "greedy_new_tokens": new_lens, "prompt_token_roundtrip_equal": tok_equal, "gguf_meta": meta,
                 "size_bytes": path.stat().st_size, "producer": f"llama-cpp-python {ver}"}
        record({f"{NAME}-{t}": props})
        S.log(f"{NAME}-{t}: P(EOS) {props['p_eos_turn_end_mean']:.3f} stop {stop_rate:.2f} size {path.stat().st_size}")
        shutil.copy(path, S.GGUF_DIR / path.name)
        if t != "q2_k":
            continue  # the converter's Q8_0 is covered by gguf-q8_0's golden already
        tensors = {}
        gm = {"variant": f"gguf-{NAME}-{t}", "producer": f"llama-cpp-python {ver}: Llama(logits_all=True).eval(input_ids); scores",
              "v_llama_cpp_python": ver, "gguf_file": f"gguf/{path.name}"}
        for i, (s, l) in enumerate(zip(seqs, logits)):
            tensors[f"input_ids.{i}"] = np.array(s["input_ids"], dtype=np.int64)
            tensors[f"logits.{i}"] = np.ascontiguousarray(l)
            gm[f"prompt_len.{i}"] = str(s["prompt_len"])
        save_file(tensors, str(S.GOLD / f"gguf-{NAME}-{t}.safetensors"), metadata=gm)


if __name__ == "__main__":
    {"merge": merge, "quantize": quantize}[sys.argv[1]]()
