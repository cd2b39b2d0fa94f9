# Two commands: `make demo` and `make test`. Both bootstrap their own virtual environment
# (.venv, with uv installed into it by pip) on a fresh machine; later runs reuse it and only
# reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: demo test lint format install clean default-model vscode vscode-e2e sandbox-deps llamacpp

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv

# torch (CPU) is only for the Hugging Face parity tests. pip, not uv, installs it: this
# machine's CPU wheel of exactly 2.13.0 sits where pip looks; anything else pulls CUDA.
# --compile-bytecode: the sandbox runs pytest with PYTHONDONTWRITEBYTECODE, so without
# .pyc files every sandboxed run would compile pytest anew (0.15 s -> 0.32 s a run).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev,train]'
	touch $(STAMP)

# bubblewrap gives the sandbox its read-only filesystem, hidden home, PID and network
# namespaces (council/sandbox/layers.py). Debian's package, installed as root or with sudo;
# elsewhere install it yourself. Without it the sandbox still runs, with fewer layers and
# a warning (`council sandbox --check`), and the hostile-code tests fail.
sandbox-deps:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then S=; elif command -v sudo >/dev/null; then S=sudo; else \
	    echo "make: please install bubblewrap (the sandbox's OS layers)" >&2; exit 0; fi; \
	  if ! command -v apt-get >/dev/null; then \
	    echo "make: please install bubblewrap with your package manager" >&2; exit 0; fi; \
	  echo "make: installing Debian's bubblewrap for the sandbox"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$S apt-get update -qq && $$S apt-get install -y -qq --no-install-recommends bubblewrap \
	    >/dev/null; }

install: $(STAMP) sandbox-deps

demo: $(STAMP) sandbox-deps
	$(BIN)/council demo

# The VS Code extension: its settings regenerated from providers/settings.py (package.json's
# contributes.configuration and docs/settings.md, scripts/gen_settings.py), npm ci, then
# typecheck + bundle, eslint, unit tests, and the .vsix (rebuilt every run, so the e2e tests
# install what is in the working tree).
VSCODE := editors/vscode
$(VSCODE)/node_modules/.installed: $(VSCODE)/package-lock.json
	cd $(VSCODE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

vscode: $(STAMP) $(VSCODE)/node_modules/.installed
	$(BIN)/python scripts/gen_settings.py
	cd $(VSCODE) && npm run --silent lint && npm run --silent test \
		&& npm run --silent package >/dev/null
	@echo "editors/vscode: lint, unit tests and council.vsix OK"

# What the e2e tests run in: Debian's chromium (apt, as root), Node 24 and code-server,
# cached in ~/.cache/council/vscode-e2e (several minutes the first time, seconds after).
vscode-e2e: vscode
	bash $(VSCODE)/scripts/setup-e2e.sh

# A real model server for tests/test_llamacpp.py: the pinned llama-cpp-python[server],
# built from source once into ~/.cache/council/llamacpp (about 10 minutes on 2 cores, then
# seconds).
llamacpp:
	PYTHON=$(PYTHON) bash scripts/setup-llamacpp.sh >/dev/null

test: $(STAMP) sandbox-deps vscode-e2e llamacpp
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: $(STAMP) $(VSCODE)/node_modules/.installed
	$(BIN)/ruff check .
	cd $(VSCODE) && npm run --silent lint

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(VSCODE)/node_modules $(VSCODE)/out \
		$(VSCODE)/dist $(VSCODE)/council.vsix

# The default specialist shipped in training/default_model (see its README.md, the model
# card). The corpus is this environment's installed packages with five held out for the
# unseen-package evaluation (council.completion.unseen.HELDOUT_PACKAGES); the size was chosen
# by a sweep recorded on the card. The second fit continues the first run with the cosine
# horizon moved from 3,000 to 10,000 steps (how the shipped model was trained: the first
# 3,000 steps were the sweep's winner, then it trained on). About 75 minutes on a 2-core
# CPU; every figure on the card
# comes from this run. Reproducible with the same installed versions (listed in the data's
# manifest).
DM := build/default-model
DEFAULT_MODEL_COMMANDS = \
	council train data --source site-packages --exclude anyio,click,httpx2,jinja2,rich --vocab-size 8192 --seq-len 512 --out $(DM)/data --force; \
	council train fit --data $(DM)/data --out $(DM)/run --preset tiny --steps 3000 --batch-size 8 --eval-every 250 --eval-batches 20 --save-every 100 --log-every 20 --quiet; \
	council train fit --data $(DM)/data --out $(DM)/run --steps 10000 --quiet; \
	council train eval $(DM)/run --data $(DM)/data --loss-batches 100 --no-fim --unseen "" --unseen-cases 200 --json > $(DM)/eval.json; \
	council train export $(DM)/run --out training/default_model --dtype bfloat16 --force

default-model: $(STAMP)
	mkdir -p $(DM)
	echo '$(DEFAULT_MODEL_COMMANDS)' | tr ';' '\n' | sed 's/^ *//' > $(DM)/commands.txt
	PATH=$(abspath $(BIN)):$$PATH; set -e; $(DEFAULT_MODEL_COMMANDS)
	$(BIN)/python -m training.model_card --data $(DM)/data --run $(DM)/run \
		--eval $(DM)/eval.json --commands $(DM)/commands.txt --out training/default_model \
		$$([ -f $(DM)/sweep.json ] && echo --sweep $(DM)/sweep.json)
