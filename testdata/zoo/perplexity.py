"""llama-perplexity goldens for `compare --text` (issue 13's corpus mode).

    cd testdata/zoo && /work/venvs/main/bin/python perplexity.py     # after gguf_stage.py and spm.py

Writes corpus.txt (400 of the zoo's chat tasks as plain "question\\nanswer\\n" lines, seed 1313:
no special-token text, which llama-perplexity would tokenize as plain text) and
goldens/llama-perplexity.json: what llama.cpp's own `llama-perplexity` (built from the
llama-cpp-python 0.3.36 sdist: `cmake --build build --target llama-perplexity`; path in
$ZOO_LLAMA_BIN) prints for

  - `-m F -f corpus.txt -c 128` on llama-instruct F16/Q8_0/Q4_0 and spm-llama F16 (which adds
    BOS): chunks, final PPL ± SE;
  - `--kl-divergence-base` on the F16 file, then `--kl-divergence` on Q8_0 and Q4_0: the
    "KL divergence statistics" and "Token probability statistics" blocks.

Its `Mean PPL(base)` in KL mode is not its own perplexity: the base's log-probs are stored with
every logit below max − 16 clamped (tools/perplexity/perplexity.cpp, `process_logits` with a
logits stream), which lowers the NLL of tokens the base finds very unlikely. Both are recorded.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
from pathlib import Path

import generate as G

ROOT = Path(__file__).resolve().parent
BIN = Path(os.environ.get("ZOO_LLAMA_BIN", "/work/scratch/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"))
SCRATCH = Path(os.environ.get("ZOO_SCRATCH", "/work/scratch/zoo"))
CORPUS = ROOT / "corpus.txt"
OUT = ROOT / "goldens" / "llama-perplexity.json"
CTX = 128
PLAIN = ["llama-instruct-f16", "llama-instruct-q8_0", "llama-instruct-q4_0", "spm-llama-f16"]
KLD = ["llama-instruct-q8_0", "llama-instruct-q4_0"]


def write_corpus() -> None:
    rng = random.Random(1313)
    lines = []
    for _ in range(400):
        q, a = G.task(rng)
        lines.append(f"{q}\n{a}\n")
    CORPUS.write_text("".join(lines))


def run(args: list[str], expect: str) -> str:
    """Runs llama-perplexity until its output holds `expect`: its asynchronous logger, writing
    into a pipe, now and then loses lines at exit (seen 2026-12-03)."""
    cmd = [str(BIN / "llama-perplexity"), "-f", str(CORPUS), "-c", str(CTX), "-t", "2", *args]
    G.log(" ".join(cmd))
    for _ in range(5):
        text = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
        if all(e in text for e in expect.split("|")):
            return text
        G.log("  output incomplete, again")
    raise SystemExit(f"llama-perplexity never printed {expect!r}")


def number(text: str, label: str) -> tuple[float, float | None]:
    m = re.search(re.escape(label) + r"\s*:\s*(-?[0-9.]+)%?(?:\s*±\s*([0-9.]+))?", text)
    assert m, f"{label!r} not in llama-perplexity's output"
    return float(m.group(1)), (float(m.group(2)) if m.group(2) else None)


def main() -> None:
    write_corpus()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    out = {"ctx": CTX, "corpus": CORPUS.name, "llama_cpp": "llama-cpp-python 0.3.36 sdist, vendor/llama.cpp tools/perplexity",
           "plain": {}, "kld": {}}
    for name in PLAIN:
        text = run(["-m", str(ROOT / "gguf" / f"{name}.gguf")], "Final estimate|calculating perplexity over")
        chunks = int(re.search(r"calculating perplexity over (\d+) chunks", text).group(1))
        m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", text)
        assert m, f"no final estimate in:\n{text[-2000:]}"
        out["plain"][name] = {"chunks": chunks, "ppl": float(m.group(1)), "ppl_se": float(m.group(2))}
    base = SCRATCH / "llama-instruct-f16.kld"
    run(["-m", str(ROOT / "gguf" / "llama-instruct-f16.gguf"), "--kl-divergence-base", str(base)], "Final estimate")
    for name in KLD:
        text = run(["-m", str(ROOT / "gguf" / f"{name}.gguf"), "--kl-divergence-base", str(base), "--kl-divergence"],
                   "Mean PPL(base)|Same top p|Mean    KLD|RMS Δp")
        row = {}
        for key, label in [("ppl_q", "Mean PPL(Q)"), ("ppl_base_clamped", "Mean PPL(base)"), ("ln_ppl_ratio", "Mean ln(PPL(Q)/PPL(base))"),
                           ("kld_mean", "Mean    KLD"), ("kld_median", "Median  KLD"), ("kld_p99", "99.0%   KLD"),
                           ("kld_max", "Maximum KLD"), ("dp_mean", "Mean    Δp"), ("dp_rms", "RMS Δp    "), ("same_top", "Same top p")]:
            v, se = number(text, label)
            row[key] = v
            if se is not None:
                row[key + "_se"] = se
        out["kld"][name] = row
        G.log(f"{name}: {row}")
    OUT.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
