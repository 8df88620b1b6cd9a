#!/usr/bin/env bash
# Idempotent setup for the ckptcheck speed/memory benchmark (see bench/README.md).
#   bench/setup.sh            # both parts
#   bench/setup.sh python     # only the venv (torch, transformers, ...)
#   bench/setup.sh llama      # only llama.cpp's tools (llama-perplexity, llama-quantize, llama-bench)
# Environment: BENCH_ENV (venv, default /work/bench-env), LLAMA_DIR (default /work/llama.cpp),
#              JOBS (build parallelism, default 2).
# Versions follow ../shared/notes/toolchain.md.
set -euo pipefail

BENCH_ENV=${BENCH_ENV:-/work/bench-env}
LLAMA_DIR=${LLAMA_DIR:-/work/llama.cpp}
JOBS=${JOBS:-2}
LLAMA_CPP_PYTHON=0.3.36
PY=${PYTHON:-python3}
what=${1:-all}

log() { echo "[setup $(date +%H:%M:%S)] $*"; }

make_venv() {
  if [ ! -x "$BENCH_ENV/bin/python" ]; then
    log "creating venv $BENCH_ENV"
    "$PY" -m venv "$BENCH_ENV"
    "$BENCH_ENV/bin/pip" install -q --upgrade pip
  fi
}

setup_python() {
  make_venv
  if "$BENCH_ENV/bin/python" - <<'PYEOF' 2>/dev/null
import torch, transformers, tokenizers, safetensors, numpy, gguf, sentencepiece
assert transformers.__version__ == "5.24.0" and tokenizers.__version__ == "0.23.3"
PYEOF
  then log "python packages already installed"; return; fi
  log "installing torch (only the CUDA-bundled wheel exists; ~3 GB download, used on CPU)"
  "$BENCH_ENV/bin/pip" install -q torch==2.15.0
  log "installing transformers & co"
  "$BENCH_ENV/bin/pip" install -q transformers==5.24.0 tokenizers==0.23.3 safetensors==0.8.0 \
      gguf==0.19.0 numpy sentencepiece protobuf
}

setup_llama() {
  make_venv
  local bins="$LLAMA_DIR/build/bin"
  if [ -x "$bins/llama-perplexity" ] && [ -x "$bins/llama-quantize" ] && [ -f "$LLAMA_DIR/convert_hf_to_gguf.py" ]; then
    log "llama.cpp tools already built in $bins"; return
  fi
  # cmake from PyPI (the machine may have none); scikit-build-core lets pip fetch the sdist
  # without building it (plain --no-binary :all: hangs building build-dependencies).
  "$BENCH_ENV/bin/pip" install -q cmake scikit-build-core
  if [ ! -f "$LLAMA_DIR/CMakeLists.txt" ]; then
    local tmp; tmp=$(mktemp -d)
    log "downloading llama-cpp-python==$LLAMA_CPP_PYTHON sdist"
    "$BENCH_ENV/bin/pip" download -q --no-deps --no-binary llama-cpp-python --no-build-isolation \
        -d "$tmp" "llama-cpp-python==$LLAMA_CPP_PYTHON"
    tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
    mkdir -p "$(dirname "$LLAMA_DIR")"
    rm -rf "$LLAMA_DIR"
    mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$LLAMA_DIR"
    rm -rf "$tmp"
  fi
  log "building llama.cpp tools in $LLAMA_DIR (~20 min on 2 cores)"
  cd "$LLAMA_DIR"
  PATH="$BENCH_ENV/bin:$PATH" cmake -B build -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
      -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null
  PATH="$BENCH_ENV/bin:$PATH" cmake --build build -j"$JOBS" \
      --target llama-perplexity llama-quantize llama-bench
  log "built: $(ls "$bins" | tr '\n' ' ')"
}

case "$what" in
  all) setup_llama; setup_python ;;
  python) setup_python ;;
  llama) setup_llama ;;
  *) echo "usage: $0 [all|python|llama]" >&2; exit 2 ;;
esac
# gguf-py from the same sdist, so convert_hf_to_gguf.py matches its own gguf package.
if [ -d "$LLAMA_DIR/gguf-py" ] && [ -x "$BENCH_ENV/bin/python" ] && [ "$what" != llama ]; then
  "$BENCH_ENV/bin/pip" install -q --no-deps "$LLAMA_DIR/gguf-py"
fi
log "done"
