#!/usr/bin/env bash
# Builds llama.cpp's llama-server (the peer in bench/batching.py) from the llama.cpp vendored in the
# llama-cpp-python sdist we pin, with the Makefile's portable flags. ~25 minutes on 2 cores; the binary is cached.
# Usage: bench/build_llama_server.sh [CACHE_DIR]   (default: instance/bench); prints the binary's path.
set -euo pipefail
cache=${1:-instance/bench}
binary=$cache/llama-server
if [[ -x $binary ]]; then echo "$binary"; exit 0; fi
version=$(sed -n 's/^llama-cpp-python==//p' requirements.txt)
mkdir -p "$cache/src"
[[ -f $cache/src/llama_cpp_python-$version.tar.gz ]] ||
  .venv/bin/pip download --quiet --no-binary :all: --no-deps -d "$cache/src" "llama-cpp-python==$version"
tar -xzf "$cache/src/llama_cpp_python-$version.tar.gz" -C "$cache/src"
cd "$cache/src/llama_cpp_python-$version/vendor/llama.cpp"
# Static: the binary is copied out of the source tree, and a shared build would load its libggml*.so from there.
# No web UI: the llama.cpp release assets it embeds are not in the sdist (the benchmark only uses the HTTP API).
# shellcheck disable=SC2086  # CMAKE_ARGS is a list of flags (the Makefile exports it)
cmake -B build ${CMAKE_ARGS:-} -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target llama-server -j2 >/dev/null
cd - >/dev/null
cp "$cache/src/llama_cpp_python-$version/vendor/llama.cpp/build/bin/llama-server" "$binary"
echo "$binary"
