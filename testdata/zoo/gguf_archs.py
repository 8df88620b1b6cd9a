"""GGUFs of the other architectures (qwen2, gemma3) with llama.cpp reference logits, so the
GGUF reader is checked beyond llama: bias tensors, q/k norms, Gemma's (1+w) norms folded by the
converter, sandwich norms, softcapping, sliding windows.

    <main venv python>      gguf_archs.py convert    # convert_hf_to_gguf.py (same wrapper as gguf_stage.py)
    <llama.cpp venv python> gguf_archs.py goldens    # Llama(logits_all=True) on the shared golden ids

Outputs: gguf/<arch>-<type>.gguf (F16 and Q8_0) and goldens/gguf-<arch>-<type>.safetensors with the
same key layout as the other goldens (`input_ids.{i}`, `logits.{i}`; no hidden states).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gguf_stage as S  # noqa: E402

# gemma2: the converter only takes a SentencePiece tokenizer.model (Gemma2Model.set_vocab), and the
# zoo models share one byte-level BPE tokenizer, so no gemma2 GGUF can be made from them.
ARCHS = ["qwen2-instruct", "gemma3"]
TYPES = ["f16", "q8_0"]


def convert() -> None:
    S.GGUF_DIR.mkdir(exist_ok=True)
    for arch in ARCHS:
        for t in TYPES:
            out = S.GGUF_DIR / f"{arch}-{t}.gguf"
            S.log(f"convert {arch} -> {t}")
            S.run_converter(S.MODELS / arch, out, t)


def rope_llama3() -> None:
    """`llama-rope-llama3`: llama-instruct's weights with Llama-3.1-style rope scaling in its config
    (factor 8, low 1, high 4, original 64 positions, so the short golden prompts are affected), saved
    by transformers; its transformers golden; and its F16 GGUF, where the converter turns the
    scaling into a `rope_freqs.weight` tensor of per-frequency factors."""
    import torch
    import generate as G
    from safetensors.torch import save_file

    m = G.load_model(S.MODELS / "llama-instruct")
    m.config.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    out = S.MODELS / "llama-rope-llama3"
    m.save_pretrained(out)
    G.load_tok().save_pretrained(out)
    m = G.load_model(out)  # reload so the rope tables come from the saved config
    ref = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(S.GOLD / "llama-instruct.safetensors"))
    tensors, meta = {}, {"variant": "llama-rope-llama3"}
    with torch.no_grad():
        for i in range(len([k for k in ref if k.startswith("input_ids.")])):
            ids = ref[f"input_ids.{i}"]
            tensors[f"input_ids.{i}"] = ids
            tensors[f"logits.{i}"] = m(input_ids=ids[None]).logits[0].float().contiguous()
    save_file(tensors, str(S.GOLD / "llama-rope-llama3.safetensors"), metadata=meta)
    S.run_converter(out, S.GGUF_DIR / "llama-rope-llama3-f16.gguf", "f16")


def goldens() -> None:
    import numpy as np
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open
    import llama_cpp

    ref_path = S.GOLD / "llama-instruct.safetensors"
    ref = load_file(str(ref_path))
    with safe_open(str(ref_path), "np") as st:
        rmeta = st.metadata()
    n = len([k for k in ref if k.startswith("input_ids.")])
    for arch in ARCHS:
        for t in TYPES:
            path = S.GGUF_DIR / f"{arch}-{t}.gguf"
            llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=256, n_threads=2, n_threads_batch=2, seed=0, verbose=False)
            tensors, meta = {}, {"variant": f"gguf-{arch}-{t}", "v_llama_cpp_python": llama_cpp.__version__}
            for i in range(n):
                ids = [int(x) for x in ref[f"input_ids.{i}"]]
                llm.reset()
                llm.eval(ids)
                tensors[f"input_ids.{i}"] = np.array(ids, dtype=np.int64)
                tensors[f"logits.{i}"] = np.array(llm.scores[: len(ids)], dtype=np.float32)
                meta[f"prompt_len.{i}"] = rmeta[f"prompt_len.{i}"]
            del llm
            save_file(tensors, str(S.GOLD / f"gguf-{arch}-{t}.safetensors"), metadata=meta)
            S.log(f"golden gguf-{arch}-{t}")


if __name__ == "__main__":
    {"convert": convert, "goldens": goldens, "rope-llama3": rope_llama3}[sys.argv[1]]()
