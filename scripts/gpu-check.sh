#!/usr/bin/env bash
# The GPU check of issue 18, as one prepared script.
#
#   scripts/gpu-check.sh build            # on any machine (no GPU needed): release binary with
#                                         # --features cuda into target/gpu-check/bin/ckptcheck
#   scripts/gpu-check.sh run              # on the GPU machine, with target/gpu-check carried
#   scripts/gpu-check.sh run --dry-run    # every step on the CPU, with $CKPTCHECK (any build)
#
# The GPU machine reaches no network: build here, carry target/gpu-check (the binary, ~15 MB),
# and run there. `run` needs bash and python3 (standard library only) and prints, last, one
# table: parity of every zoo comparison and bisect on the GPU against the CPU (f32 and bf16:
# KL mean, top-1, P(EOS), verdict, first bad step), then the forward speed on a random-weight
# Llama of realistic shape (bench/random_model.py: 1.1 B parameters by default, GPU_CHECK_SHAPE
# to change) on the GPU against the CPU. Results also go to $OUT (or target/gpu-check/out).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-}
dry=0
[ "${2:-}" = "--dry-run" ] && dry=1

case "$mode" in
build)
    if ! command -v nvcc >/dev/null 2>&1; then
        eval "$(scripts/cuda-toolkit.sh target/gpu-check/venv)"
    fi
    export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
    nvcc --version | tail -n 1
    cargo build --release --locked --features cuda
    mkdir -p target/gpu-check/bin
    cp target/release/ckptcheck target/gpu-check/bin/ckptcheck
    target/gpu-check/bin/ckptcheck --version
    echo "built target/gpu-check/bin/ckptcheck for sm_$CUDA_COMPUTE_CAP: carry target/gpu-check/bin, run scripts/gpu-check.sh run"
    exit 0
    ;;
run) ;;
*)
    echo "usage: scripts/gpu-check.sh build | run [--dry-run]" >&2
    exit 2
    ;;
esac

bin=${CKPTCHECK:-target/gpu-check/bin/ckptcheck}
[ -x "$bin" ] || { echo "gpu-check: no binary at $bin (scripts/gpu-check.sh build, or set CKPTCHECK)" >&2; exit 2; }
out=${OUT:-target/gpu-check/out}
mkdir -p "$out"
if [ "$dry" = 1 ]; then
    gpu=cpu
    shape=${GPU_CHECK_SHAPE:---hidden 512 --layers 2 --intermediate 1024 --heads 8 --kv-heads 4 --vocab 4096}
    tokens=256
else
    gpu=cuda
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
    shape=${GPU_CHECK_SHAPE:---hidden 2048 --layers 16 --intermediate 8192 --heads 32 --kv-heads 8 --vocab 32000}
    tokens=2048
fi
"$bin" --version | tee "$out/version.txt"
zoo=testdata/zoo
# Every run's JSON is kept; exit 1 (a failing verdict) is an answer, exit 2 is not.
runj() {
    local name=$1
    shift
    local t0=$SECONDS rc=0
    "$bin" "$@" --json >"$out/$name.json" 2>"$out/$name.err" || rc=$?
    echo "$((SECONDS - t0))" >"$out/$name.seconds"
    if [ "$rc" -ge 2 ]; then
        echo "gpu-check: \`$bin $*\` exited $rc:" >&2
        tail -n 5 "$out/$name.err" >&2
        echo "error" >"$out/$name.json"
    fi
}

pairs=(
    "llama-f16:$zoo/models/llama-instruct:$zoo/gguf/llama-instruct-f16.gguf"
    "llama-q4_k_m:$zoo/models/llama-instruct:$zoo/gguf/llama-instruct-q4_k_m.gguf"
    "qwen2-q8_0:$zoo/models/qwen2-instruct:$zoo/gguf/qwen2-instruct-q8_0.gguf"
    "gemma3-f16:$zoo/models/gemma3:$zoo/gguf/gemma3-f16.gguf"
    "mixtral-q8_0:$zoo/models/mixtral:$zoo/gguf/mixtral-q8_0.gguf"
    "gptq:$zoo/models/llama-instruct:$zoo/models/llama-gptq-w4g128"
    "sft-collapsed:$zoo/models/llama-instruct:$zoo/models/llama-sft-collapsed"
)
for p in "${pairs[@]}"; do
    IFS=: read -r name ref cand <<<"$p"
    runj "compare-$name-cpu" compare "$ref" "$cand" --layers --device cpu
    runj "compare-$name-gpu-f32" compare "$ref" "$cand" --layers --device "$gpu" --dtype f32
    runj "compare-$name-gpu-bf16" compare "$ref" "$cand" --layers --device "$gpu" --dtype bf16
done
lineages=(healthy sft-collapse quant-mixed-layer run-lr-too-high)
for l in "${lineages[@]}"; do
    runj "bisect-$l-cpu" bisect "testdata/pipelines/$l.toml" --device cpu
    runj "bisect-$l-gpu" bisect "testdata/pipelines/$l.toml" --device "$gpu"
done

# Speed on a realistic shape: random bf16 weights, written on the spot (nothing to carry).
model="$out/random-llama"
# shellcheck disable=SC2086 # $shape is a list of flags
python3 bench/random_model.py "$model" $shape | tee "$out/model.txt"
runj "speed-cpu-f32" bench-forward "$model" --device cpu --dtype f32 --tokens "$tokens" --repeat 2
runj "speed-gpu-bf16" bench-forward "$model" --device "$gpu" --dtype bf16 --tokens "$tokens" --repeat 3
runj "speed-gpu-f32" bench-forward "$model" --device "$gpu" --dtype f32 --tokens "$tokens" --repeat 3

python3 - "$out" "$gpu" "${lineages[@]}" <<'PY' | tee "$out/table.txt"
import json, os, sys

out, gpu, lineages = sys.argv[1], sys.argv[2], sys.argv[3:]
def load(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

rows = sorted({n[len("compare-"):-len("-cpu.json")] for n in os.listdir(out) if n.startswith("compare-") and n.endswith("-cpu.json")})
print(f"\n== parity: {gpu} vs cpu (same pair, same prompts) ==")
print(f"{'pair':<16} {'dtype':<5} {'KL mean cpu':>12} {'KL mean gpu':>12} {'|dKL|':>9} {'top1 d':>7} {'P(EOS) d':>9} {'max layer rel d':>15} verdict")
worst = 0.0
for r in rows:
    c = load(f"compare-{r}-cpu")
    for dt in ["f32", "bf16"]:
        g = load(f"compare-{r}-gpu-{dt}")
        if not c or not g:
            print(f"{r:<16} {dt:<5} {'error':>12}")
            continue
        cs, gs = c["summary"], g["summary"]
        dkl = abs(cs["kl"]["mean"] - gs["kl"]["mean"])
        dl = max((abs(a["rel_l2"] - b["rel_l2"]) for a, b in zip(c.get("layers") or [], g.get("layers") or [])), default=float("nan"))
        same = "same" if c["verdict"] == g["verdict"] else f"{c['verdict']} -> {g['verdict']}"
        if dt == "f32":
            worst = max(worst, dkl)
        print(f"{r:<16} {dt:<5} {cs['kl']['mean']:>12.4g} {gs['kl']['mean']:>12.4g} {dkl:>9.2e} {gs['top1'] - cs['top1']:>+7.3f} "
              f"{gs['p_eos_cand_mean'] - cs['p_eos_cand_mean']:>+9.4f} {dl:>15.2e} {same}")
print(f"\n== bisect: {gpu} vs cpu ==")
for l in lineages:
    c, g = load(f"bisect-{l}-cpu"), load(f"bisect-{l}-gpu")
    if not c or not g:
        print(f"{l:<20} error")
        continue
    same = (c["first_bad_step"], c.get("cause_id")) == (g["first_bad_step"], g.get("cause_id"))
    print(f"{l:<20} cpu: {c['first_bad_step']} {c.get('cause_id')}  {gpu}: {g['first_bad_step']} {g.get('cause_id')}  {'same' if same else 'DIFFERENT'}")
print(f"\n== forward speed, random-weight Llama ({open(os.path.join(out, 'model.txt')).read().strip()}) ==")
base = load("speed-cpu-f32")
for n in ["speed-cpu-f32", "speed-gpu-bf16", "speed-gpu-f32"]:
    s = load(n)
    if not s:
        print(f"{n:<18} error")
        continue
    ratio = s["tokens_per_s"] / base["tokens_per_s"] if base else float("nan")
    print(f"{n:<18} {s['tokens']:>6} tokens  {s['tokens_per_s']:>10.1f} tok/s  load {s['load_seconds']:.1f} s  x{ratio:.2f} vs cpu f32")
print("\nKL-reduction GB/s: no fused kernel yet (kernels/ is issue 18's remaining work); the KL runs on the host")
print(f"worst f32 |dKL| cpu vs {gpu}: {worst:.2e}")
PY
