"""A mixed quantization with one damaged layer, for tensor blame (issue 16).

    <main venv python> mixed_quant.py     # ~10 s: llama-quantize, then llama.cpp goldens

`gguf/llama-instruct-q8_0-blk1-q2_k.gguf`: llama.cpp's own `llama-quantize` from the committed
F16 conversion to Q8_0, except every tensor of layer 1 (`--tensor-type 'blk\\.1\\.=q2_k'`):
what a hand-tuned mixed quant that put one layer too low looks like. llama.cpp logits on the
shared golden ids (`goldens/gguf-q8_0-blk1-q2_k.safetensors`, via moe.py's `llama_logits.c`)
prove the engine reads the file as llama.cpp does; the lineage `quant-mixed-layer.toml` is blamed
on layer 1's tensors.

Uses the llama.cpp checkout in `$ZOO_LLAMACPP_SRC` (default /work/llama.cpp, built with cmake:
build/bin/llama-quantize and libllama.so).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
import moe as M  # noqa: E402  (llama_logits_tool, llama_cpp_logits, golden_seqs, LLAMACPP)

SRC = ROOT / "gguf/llama-instruct-f16.gguf"
OUT = ROOT / "gguf/llama-instruct-q8_0-blk1-q2_k.gguf"
GOLDEN = ROOT / "goldens/gguf-q8_0-blk1-q2_k.safetensors"


def main() -> None:
    subprocess.run([str(M.LLAMACPP / "build/bin/llama-quantize"), "--tensor-type", r"blk\.1\.=q2_k", str(SRC), str(OUT), "Q8_0"],
                   check=True, stdout=subprocess.DEVNULL)
    M.save_llama_cpp_golden(OUT, GOLDEN.stem)
    print(f"{OUT.name}: {OUT.stat().st_size} bytes; golden {GOLDEN.name}: {GOLDEN.stat().st_size} bytes")


if __name__ == "__main__":
    main()
