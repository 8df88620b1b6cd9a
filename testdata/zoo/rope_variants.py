"""Rope-scaling variants of llama-instruct, for checking the engine's rope against transformers:
the same weights (byte-identical model.safetensors) with `linear`, `dynamic` and `yarn` scaling in
config.json, each with its transformers golden (logits on the shared golden ids).

    /work/venvs/main/bin/python rope_variants.py     # after generate.py's llama stage

Each golden prompt runs on a freshly loaded model (see the note on dynamic rope in main()).
The scalings are set so the short golden prompts are affected: `dynamic` with
max_position_embeddings 16 (prompts are 20–26 tokens), `yarn` with original 16 positions.
(The llama3 variant is made by gguf_archs.py rope-llama3, together with its GGUF.)
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

import generate as G

VARIANTS = {
    "llama-rope-linear": {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}},
    "llama-rope-dynamic": {"rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}, "max_position_embeddings": 16},
    "llama-rope-yarn": {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16}},
}


def main() -> None:
    ref = load_file(str(G.GOLD / "llama-instruct.safetensors"))
    n = len([k for k in ref if k.startswith("input_ids.")])
    for name, changes in VARIANTS.items():
        m = G.load_model(G.MODELS / "llama-instruct")
        for k, v in changes.items():
            setattr(m.config, k, v)
        out = G.MODELS / name
        m.save_pretrained(out)
        G.load_tok().save_pretrained(out)
        tensors = {}
        with torch.no_grad():
            for i in range(n):
                # A fresh model per prompt: transformers' dynamic-NTK rope keeps the frequencies of
                # the longest sequence it has seen (it only grows, or resets below the original
                # length), so one instance's output would depend on the prompts before.
                m = G.load_model(out)
                ids = ref[f"input_ids.{i}"]
                tensors[f"input_ids.{i}"] = ids
                tensors[f"logits.{i}"] = m(input_ids=ids[None]).logits[0].float().contiguous()
        save_file(tensors, str(G.GOLD / f"{name}.safetensors"), metadata={"variant": name, **{f"v_{k}": v for k, v in G.versions().items()}})
        G.log(f"{name}: {changes}")


if __name__ == "__main__":
    main()
