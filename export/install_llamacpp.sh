#!/usr/bin/env bash
# Installs llama-cpp-python, the llama.cpp that tests/test_gguf.py and bench/llamacpp.py check against.
#   bash export/install_llamacpp.sh
# The registry has no prebuilt CPU wheel of it, only its sdist (which bundles llama.cpp), and a build takes many
# minutes on two cores: the first run builds the wheel at low priority, one job, CPU only, and caches it; every
# later run installs the cached wheel in seconds. The cache is keyed by the CPU's flags, since llama.cpp is
# built for the CPU it is built on (-march=native: its kernels pick AVX2/AVX-512 at compile time).
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
FLAGS_KEY="$(grep -m1 '^flags' /proc/cpuinfo | md5sum | cut -c1-12)"
CACHE="${SEEDGPT_WHEEL_CACHE:-$HOME/.cache/seedgpt/wheels}/$FLAGS_KEY"
# its wheel is tagged py3-none (ctypes loads the built library, no Python ABI): one per CPU, any Python 3
wheel() { ls "$CACHE"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -n1; }
if [ -z "$(wheel)" ]; then
    mkdir -p "$CACHE"
    echo "building llama-cpp-python $VERSION into $CACHE (once; many minutes)"
    # no GPU backend, no curl (models are local files), one compile job so the machine stays usable (LLAMACPP_JOBS=2
    # on a machine that does nothing else, as CI)
    CMAKE_ARGS="-DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_HIP=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="${LLAMACPP_JOBS:-1}" MAKEFLAGS="-j${LLAMACPP_JOBS:-1}" \
        nice -n 19 pip wheel --no-deps --no-binary llama-cpp-python -w "$CACHE" "llama-cpp-python==$VERSION"
fi
pip install -q "$(wheel)"
python -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__)'
