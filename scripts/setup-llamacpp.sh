#!/usr/bin/env bash
# A real llama.cpp model server for the test suite (tests/test_llamacpp.py): the pinned
# llama-cpp-python[server], built from source once into a virtualenv outside the clone, in
# ~/.cache/council/llamacpp (COUNCIL_LLAMACPP_CACHE). About 10 minutes on 2 cores the first
# time, seconds after. Prints the server's python on its last line.
set -euo pipefail

VERSION="${LLAMACPP_PYTHON_VERSION:-0.3.36}"
CACHE="${COUNCIL_LLAMACPP_CACHE:-$HOME/.cache/council/llamacpp}"
VENV="$CACHE/venv-$VERSION"
PYTHON="${PYTHON:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  echo "$VENV/bin/python"
  exit 0
fi

mkdir -p "$CACHE"
rm -rf "$VENV.partial"
"$PYTHON" -m venv "$VENV.partial"
"$VENV.partial/bin/pip" install --quiet --upgrade pip >&2
echo "setup-llamacpp: building llama-cpp-python[server]==$VERSION (about 10 minutes once)" >&2
started=$(date +%s)
# CPU build; the machine's own instruction set (the cache is per machine).
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$VENV.partial/bin/pip" install --quiet --no-cache-dir "llama-cpp-python[server]==$VERSION" >&2
# The venv's scripts hard-code its path: rebuild the link farm under the final name.
mv "$VENV.partial" "$VENV"
sed -i "s#$VENV.partial#$VENV#g" "$VENV"/bin/* 2>/dev/null || true
echo "setup-llamacpp: built in $(( $(date +%s) - started )) s" >&2
"$VENV/bin/python" -c "import llama_cpp.server" >&2
echo "$VENV/bin/python"
