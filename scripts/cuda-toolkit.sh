#!/usr/bin/env bash
# Installs the CUDA compiler and headers that `--features cuda` needs at build time (candle-kernels
# compiles its PTX with nvcc) from NVIDIA's Python wheels into a venv, then prints the environment
# to build with:
#
#   eval "$(scripts/cuda-toolkit.sh /tmp/cuda-venv)"
#   cargo check --locked --features cuda --lib --bins
#
# No GPU and no driver are needed to build: cudarc loads libcuda at run time. The versions are
# pinned together (nvcc, nvvm and crt must agree: a 13.5 libnvvm emits PTX 9.5 that 13.0's ptxas
# refuses) to CUDA 13.0, the newest toolkit cudarc 0.19.10 knows (13.5 is "Unsupported cuda
# toolkit version"). The CUDA 12 wheels (nvidia-cuda-nvcc-cu12 12.4-12.9) hold ptxas only, no nvcc.
# CUDA_COMPUTE_CAP picks the PTX target (default 90: H100/H200); a GPU machine's own nvcc, when on
# PATH, is used instead by scripts/gpu-check.sh.
set -euo pipefail
venv=${1:?usage: scripts/cuda-toolkit.sh VENV_DIR}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/pip" ]; then
    "$python" -m venv "$venv" >&2
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 >&2
root=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
if [ ! -x "$root/bin/nvcc" ]; then
    echo "cuda-toolkit.sh: no nvcc under $root after installing the wheels" >&2
    exit 1
fi
echo "export PATH=\"$root/bin:\$PATH\" CUDA_ROOT=\"$root\" CUDA_PATH=\"$root\" CUDA_COMPUTE_CAP=\"${CUDA_COMPUTE_CAP:-90}\""
