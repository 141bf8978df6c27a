# The two commands of the README: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint types crds docs bench install node-packages controlplane stackbinaries images clean

# The local node's parts from Debian: containerd 1.6, runc and the CNI plugins; buildah and debootstrap build
# Ferry's image; iptables routes the `kubernetes` Service. Installed with apt-get when one is missing (as root,
# or through sudo).
NODE_PACKAGES := buildah containerd runc containernetworking-plugins debootstrap iptables
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(VENV)/.installed: pyproject.toml dev/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./dev
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed node-packages

node-packages:
	@missing=$$(for p in $(NODE_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian:" $$missing; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# kube-apiserver, kube-controller-manager, kube-scheduler, the kubelet and etcd, built from Go modules (hack/kube)
# on the first run (about 8 minutes on 2 cores) and cached in ~/.cache/ferry/kube. Also Helm (hack/helm, about
# 2 minutes), the pod sandbox's pause (hack/pause) and FerretDB (hack/ferretdb, about 1 minute), cached in
# ~/.cache/ferry/tools; `controlplane` also builds the Go tools the tests run (kstatus, promtool: about 5
# minutes), `stackbinaries` (the demo's) does not.
controlplane: $(VENV)/.installed
	$(BIN)/python -m ferry_dev.binaries

stackbinaries: $(VENV)/.installed
	$(BIN)/python -m ferry_dev.binaries --stack-only

# Ferry's image from operator/Dockerfile (buildah, on a debootstrap base built once: about 2 minutes cold; after
# a change to Ferry's code only the wheel layer is built again), cached in ~/.cache/ferry/images.
images: $(VENV)/.installed node-packages stackbinaries
	$(BIN)/python -m ferry_dev.images

demo: install stackbinaries images
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

test: install controlplane images lint types
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/blobcopy_stream.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache  # the control plane stays cached
