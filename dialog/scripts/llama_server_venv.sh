#!/usr/bin/env bash
# Creates (idempotently) the Python venv with llama-cpp-python's OpenAI-compatible server, used by
# dialog/tests/openai_server.rs to test the streaming HTTP backend against a real local server
# serving the same Qwen GGUF. llama-cpp-python compiles llama.cpp from source with cmake: several
# minutes on 2 cores. CPU only (no CUDA/Metal/Vulkan), tuned for the host CPU like our own build.
#
#   dialog/scripts/llama_server_venv.sh          # creates or completes the venv, prints its path
#   VOICERELAY_LLAMA_VENV=/path overrides the location (default $HOME/.cache/voicerelay/venvs/llama-server)
set -euo pipefail

VENV="${VOICERELAY_LLAMA_VENV:-${HOME}/.cache/voicerelay/venvs/llama-server}"
PYTHON="${PYTHON:-python3}"
PKG_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.16}"
STAMP="${VENV}/.voicerelay-ok-${PKG_VERSION}"

if [[ -f "${STAMP}" ]] && "${VENV}/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
    echo "${VENV}"
    exit 0
fi

if [[ ! -x "${VENV}/bin/python" ]]; then
    "${PYTHON}" -m venv "${VENV}"
fi
"${VENV}/bin/python" -m pip install --quiet --upgrade pip

# GGML_NATIVE: build for this CPU (AVX2/FMA...), like `-C target-cpu=native` for our crates.
export CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF -DGGML_OPENCL=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
# pip builds in $TMPDIR; /tmp may be a small tmpfs.
export TMPDIR="${TMPDIR:-/var/tmp}"
"${VENV}/bin/python" -m pip install --no-cache-dir "llama-cpp-python[server]==${PKG_VERSION}"
"${VENV}/bin/python" -c "import llama_cpp.server" 
touch "${STAMP}"
echo "${VENV}"
