# Source this file (`. scripts/cuda-env.sh`) to compile acs's `cuda` feature on a machine
# without a GPU: it installs NVIDIA's CUDA 13.0 compiler wheels (nvcc, nvvm, headers, cudart)
# from PyPI into a cached virtual environment, once, and exports the variables candle's build
# scripts read. CUDA 13.0: cudarc 0.19 (candle 0.11) knows 13.0-13.4, and an H100/H200 driver
# runs it; every wheel is pinned to 13.0 because a newer nvvm writes PTX that the 13.0 ptxas
# refuses (shared/notes/cuda-build-2026-11-29.md). CUDA_COMPUTE_CAP=90: Hopper (H100/H200).
acs_cuda_env="${ACS_CUDA_ENV:-$HOME/.cache/acs/cuda-13.0}"
acs_cuda_wheels="nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85"
if [ ! -x "$acs_cuda_env/bin/python" ]; then
    python3 -m venv "$acs_cuda_env"
fi
if [ "$(cat "$acs_cuda_env/.acs-wheels" 2>/dev/null)" != "$acs_cuda_wheels" ]; then
    # shellcheck disable=SC2086
    "$acs_cuda_env/bin/pip" install --quiet $acs_cuda_wheels
    echo "$acs_cuda_wheels" > "$acs_cuda_env/.acs-wheels"
fi
acs_cuda_prefix="$("$acs_cuda_env/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
export PATH="$acs_cuda_prefix/bin:$PATH"
export CUDA_ROOT="$acs_cuda_prefix" CUDA_PATH="$acs_cuda_prefix" CUDA_HOME="$acs_cuda_prefix"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
