#!/usr/bin/env python3
"""Speed/memory benchmark: ckptcheck vs transformers (f32, CPU) vs llama.cpp's llama-perplexity.

    $BENCH_ENV/bin/python bench/run.py llama-0.25b [--threads 2] [--tokens 512] [--out r.json]
    $BENCH_ENV/bin/python bench/run.py --compare-memory REF CAND [--out m.json]

Every measured tool runs in its own child process; a thread polls /proc/<pid>/status
(RssAnon, VmHWM) every 25 ms and keeps the max. See bench/README.md for what each number means.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_MODELS = Path(os.environ.get("BENCH_MODELS", "/work/bench-models"))
LLAMA_DIR = Path(os.environ.get("LLAMA_DIR", "/work/llama.cpp"))
GGUF_TYPES = ["F16", "Q8_0", "Q4_K_M"]


def _status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("RssAnon", "VmHWM", "RssFile"):
                    out[k] = int(v.split()[0])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return out


def measure(cmd: list[str], env: dict | None = None, timeout: float | None = None) -> dict:
    """Run cmd, poll its memory, return rc, wall_s, stdout, stderr, peak_rss_anon_mib, vm_hwm_mib."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = {"RssAnon": 0, "VmHWM": 0, "RssFile": 0}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for k, v in _status_kb(p.pid).items():
                peak[k] = max(peak[k], v)
            stop.wait(0.025)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    return {"cmd": cmd, "rc": p.returncode, "wall_s": round(wall, 3), "stdout": out, "stderr": err,
            "peak_rss_anon_mib": round(peak["RssAnon"] / 1024, 1),
            "vm_hwm_mib": round(peak["VmHWM"] / 1024, 1)}


def slim(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("stdout", "stderr")}


def disk_mib(path: Path) -> float:
    if path.is_file():
        return round(path.stat().st_size / 2**20, 1)
    return round(sum(f.stat().st_size for f in path.glob("*.safetensors")) / 2**20, 1)


# ---------------------------------------------------------------- transformers worker (child)
def hf_worker(model_dir: str, ids_file: str, threads: int, repeat: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    ids = torch.tensor([json.loads(Path(ids_file).read_text())], dtype=torch.long)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    load_s = time.perf_counter() - t0
    times = []
    with torch.inference_mode():
        model(ids, logits_to_keep=1)  # warm-up (includes torch's own initialisation)
        for _ in range(repeat):
            t = time.perf_counter()
            # logits for the positions llama-perplexity scores (pos >= n/2), as bench-forward does
            logits = model(ids, logits_to_keep=ids.shape[1] - ids.shape[1] // 2).logits
            times.append(time.perf_counter() - t)
    n = ids.shape[1]
    print(json.dumps({"load_s": round(load_s, 3), "times_s": [round(t, 4) for t in times],
                      "tokens": n, "tokens_per_s": round(n / min(times), 2),
                      "tokens_per_s_median": round(n / statistics.median(times), 2),
                      "logits_finite": bool(torch.isfinite(logits).all())}))


# ---------------------------------------------------------------- llama.cpp
PERF_RE = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens.*?([\d.]+) tokens per second")
PASS_RE = re.compile(r"([\d.]+) seconds per pass")
KLD_RE = re.compile(r"Mean\s+KLD:\s*([-\d.]+)")


def llama_perplexity(gguf: Path, text: Path, n: int, threads: int, chunks: int, kld: Path, base: bool) -> dict:
    exe = LLAMA_DIR / "build/bin/llama-perplexity"
    cmd = [str(exe), "-m", str(gguf), "-f", str(text), "-c", str(n), "-b", str(n), "-ub", str(n),
           "-t", str(threads), "-tb", str(threads), "--chunks", str(chunks), "--kl-divergence-base", str(kld)]
    if not base:
        cmd.append("--kl-divergence")
    r = measure(cmd)
    log = r["stdout"] + r["stderr"]
    res = slim(r)
    m = PERF_RE.search(log)
    if m:
        res.update(prompt_eval_ms=float(m.group(1)), prompt_eval_tokens=int(m.group(2)),
                   tokens_per_s=float(m.group(3)))
    m = PASS_RE.search(log)
    if m:  # llama-perplexity prints no perf summary: only the first chunk's "X seconds per pass"
        res["seconds_per_pass"] = float(m.group(1))
        res.setdefault("tokens_per_s", round(n / float(m.group(1)), 2))
        res["tokens_per_s_source"] = "N / seconds_per_pass (first chunk)"
    m = KLD_RE.search(log)
    if m:
        res["mean_kld"] = float(m.group(1))
    if r["rc"] != 0 or "tokens_per_s" not in res:
        res["log_tail"] = log[-2000:]
    return res


# ---------------------------------------------------------------- ckptcheck
def ckptcheck_forward(exe: str, model: Path, n: int, threads: int, fallback_ref: Path, prompts: Path) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    r = measure([exe, "bench-forward", str(model), "--tokens", str(n), "--threads", str(threads),
                 "--repeat", "3", "--json"], env=env)
    err = r["stdout"] + r["stderr"]
    if r["rc"] == 2 and "unrecognized subcommand" in err:
        # FALLBACK: time a whole compare (load both + greedy 1 token + teacher-forced pass of both)
        cand = model
        r = measure([exe, "compare", str(fallback_ref), str(cand), "--prompts", str(prompts),
                     "--max-new-tokens", "1", "--json"], env=env)
        res = slim(r)
        res["mode"] = "FALLBACK compare REF CAND --max-new-tokens 1 (wall incl. loading both; no bench-forward)"
        res["tokens_per_s"] = None
        if r["rc"] not in (0, 1):
            res["log_tail"] = (r["stdout"] + r["stderr"])[-2000:]
        return res
    res = slim(r)
    res["mode"] = "bench-forward"
    try:  # bench-forward prints one (pretty-printed) JSON object
        res.update(json.loads(r["stdout"][r["stdout"].index("{"):]))
    except ValueError:
        res["log_tail"] = err[-2000:]
    return res


def make_inputs(model_dir: Path, n: int, chunks: int, work: Path) -> tuple[Path, Path, Path]:
    """Fixed text (tokenized by the model's tokenizer) → N ids for HF/ckptcheck, a text file of
    ≥ chunks·N tokens for llama-perplexity, and a one-prompt JSONL for the compare fallback."""
    sys.path.insert(0, str(Path(__file__).parent))
    from make_models import corpus_text
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = corpus_text(2_000_000)[1_000_000:]  # a fixed slice of the licence corpus
    ids = tok.encode(text).ids
    need = n * (chunks + 1)
    assert len(ids) >= need, (len(ids), need)
    (work / "ids.json").write_text(json.dumps(ids[:n]))
    (work / "text.txt").write_text(tok.decode(ids[:need]))
    prompt = tok.decode(ids[: n - 8])
    (work / "prompts.jsonl").write_text(json.dumps({"text": prompt}) + "\n")
    return work / "ids.json", work / "text.txt", work / "prompts.jsonl"


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def bench_preset(a) -> dict:
    ref = BENCH_MODELS / a.preset
    work = Path(tempfile.mkdtemp(prefix="ckptbench-"))
    ids, text, prompts = make_inputs(ref, a.tokens, a.chunks, work)
    res = {"preset": a.preset, "threads": a.threads, "tokens": a.tokens, "chunks": a.chunks,
           "ckptcheck": a.ckptcheck, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": []}

    def add(tool, model, r):
        row = {"tool": tool, "model": str(model), "disk_mib": disk_mib(model), **r}
        res["rows"].append(row)
        print(f"  {tool:<22} {Path(model).name:<28} tok/s {str(row.get('tokens_per_s')):>8}  "
              f"wall {row['wall_s']:>7.1f}s  RssAnon {row['peak_rss_anon_mib']:>7.0f} MiB  "
              f"VmHWM {row['vm_hwm_mib']:>7.0f} MiB  rc {row['rc']}", flush=True)

    if not a.skip_hf:
        r = measure([sys.executable, __file__, "--_hf-worker", str(ref), str(ids), str(a.threads), "3"])
        out = slim(r)
        try:
            out.update(json.loads(r["stdout"].strip().splitlines()[-1]))
        except (ValueError, IndexError):
            out["log_tail"] = (r["stdout"] + r["stderr"])[-2000:]
        add("transformers-f32", ref, out)

    ggufs = {t: ref / "gguf" / f"{a.preset}-{t}.gguf" for t in GGUF_TYPES}
    ggufs = {t: p for t, p in ggufs.items() if p.exists()}
    if ggufs and not a.skip_llama:
        kld = work / "base.kld"
        if "F16" in ggufs:
            add("llama.cpp kld-base", ggufs["F16"],
                llama_perplexity(ggufs["F16"], text, a.tokens, a.threads, a.chunks, kld, base=True))
            for t, p in ggufs.items():
                add(f"llama.cpp kld", p, llama_perplexity(p, text, a.tokens, a.threads, a.chunks, kld, base=False))
    if not a.skip_ckptcheck:
        if not Path(a.ckptcheck).exists():
            print(f"  ckptcheck binary {a.ckptcheck} missing: skipped", flush=True)
        else:
            add("ckptcheck", ref, ckptcheck_forward(a.ckptcheck, ref, a.tokens, a.threads, ref, prompts))
            for t, p in ggufs.items():
                add("ckptcheck", p, ckptcheck_forward(a.ckptcheck, p, a.tokens, a.threads, ref, prompts))

    # ratios (tokens/s): ckptcheck / llama.cpp per GGUF type, ckptcheck / transformers
    rows = res["rows"]
    tps = {(r["tool"], Path(r["model"]).name): r.get("tokens_per_s") for r in rows}
    hf = tps.get(("transformers-f32", ref.name))
    ck_hf = tps.get(("ckptcheck", ref.name))
    res["ratios"] = {"ckptcheck_hf_over_transformers": ratio(ck_hf, hf)}
    for t, p in ggufs.items():
        res["ratios"][f"ckptcheck_over_llama_cpp_{t}"] = ratio(tps.get(("ckptcheck", p.name)),
                                                               tps.get(("llama.cpp kld", p.name)))
    print("  ratios:", json.dumps(res["ratios"]), flush=True)
    return res


def compare_memory(a) -> dict:
    ref, cand = Path(a.compare_memory[0]), Path(a.compare_memory[1])
    work = Path(tempfile.mkdtemp(prefix="ckptbench-"))
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n" for q in [
        "What is the capital of France?", "Write a haiku about rain.",
        "Explain what a hash table is in two sentences.", "Count from 1 to 5."]))
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    r = measure([a.ckptcheck, "compare", str(ref), str(cand), "--prompts", str(prompts),
                 "--max-new-tokens", "8", "--json"], env=env)
    res = slim(r)
    res.update(ref=str(ref), cand=str(cand), ref_disk_mib=disk_mib(ref), cand_disk_mib=disk_mib(cand),
               threads=a.threads)
    if r["rc"] not in (0, 1):
        res["log_tail"] = (r["stdout"] + r["stderr"])[-2000:]
    print(f"  compare {ref.name} {cand.name}: wall {res['wall_s']:.1f}s  RssAnon {res['peak_rss_anon_mib']:.0f} MiB  "
          f"VmHWM {res['vm_hwm_mib']:.0f} MiB  (on disk {res['ref_disk_mib']:.0f} + {res['cand_disk_mib']:.0f} MiB)  "
          f"rc {res['rc']}", flush=True)
    return res


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_hf-worker":
        hf_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", nargs="?", help="a directory name under $BENCH_MODELS (bench/make_models.py)")
    ap.add_argument("--threads", "-t", type=int, default=2)
    ap.add_argument("--tokens", "-n", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=4, help="llama-perplexity chunks of N tokens")
    ap.add_argument("--ckptcheck", default="/work/main/target/release/ckptcheck")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare-memory", nargs=2, metavar=("REF", "CAND"))
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--skip-ckptcheck", action="store_true")
    a = ap.parse_args()
    if a.compare_memory:
        res = compare_memory(a)
    elif a.preset:
        res = bench_preset(a)
    else:
        ap.error("give a preset or --compare-memory REF CAND")
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
