# The two commands of the README: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint types crds docs bench install controlplane clean

$(VENV)/.installed: pyproject.toml dev/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./dev
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed

# kube-apiserver, kube-controller-manager and etcd, built from Go modules (hack/kube) on the first run
# (about 10 minutes on 2 cores) and cached in ~/.cache/ferry/kube; KUBEBUILDER_ASSETS points elsewhere.
# Also the kstatus checker the tests run (hack/kstatus, about a minute), cached in ~/.cache/ferry/tools.
controlplane: $(VENV)/.installed
	$(BIN)/python -m ferry_dev.binaries

demo: install controlplane
	$(BIN)/ferry-dev demo

lint: $(VENV)/.installed
	$(BIN)/ruff check operator dev tests bench
	$(BIN)/ruff format --check operator dev tests bench

types: $(VENV)/.installed
	$(BIN)/mypy

crds: $(VENV)/.installed
	$(BIN)/ferry-dev crds --out crds
	cp crds/*.yaml charts/ferry/crds/

docs: $(VENV)/.installed
	$(BIN)/ferry-dev docs --dir docs

test: install controlplane lint types
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/blobcopy_stream.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache  # the control plane stays cached
