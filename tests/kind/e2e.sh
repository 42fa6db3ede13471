#!/usr/bin/env bash
# End to end on a throwaway kind cluster, following docs/ragflow.md step by step: build and load the images,
# install the operator chart, create the namespace and the API key Secret, install the first-run reranker with
# the guide's no-GPU variant (the GPU example's shape on the CPU: per-pod model cache, API key, one replica), wait
# for Ready, read the settings, then run the guide's "Check it without RAGFlow" commands and check the ranking.
# Every guide command below is typed as the guide shows it, with only the kind-specific additions appended
# (locally built images); tests/guide/test_kind_follows_the_guide.py fails when the two drift apart.
#
# Exits 0 with "SKIPPED: ..." when docker (with a running daemon), kind, kubectl or helm is missing.
# Environment: KIND_CLUSTER (default reranker-e2e), KEEP_CLUSTER=1 keeps it for debugging,
# READY_TIMEOUT (default 1200s; the first start downloads Qwen3-Reranker-0.6B from the Hugging Face hub).
set -euo pipefail

# Only shell builtins until the tool check, so the skip path works with an empty PATH.
for tool in docker kind kubectl helm curl openssl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "SKIPPED: kind e2e needs docker, kind, kubectl, helm, curl, openssl and python3; $tool is not available"
    exit 0
  fi
done
if ! docker info >/dev/null 2>&1; then
  echo "SKIPPED: kind e2e needs a running Docker daemon; 'docker info' failed"
  exit 0
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CLUSTER="${KIND_CLUSTER:-reranker-e2e}"
READY_TIMEOUT="${READY_TIMEOUT:-1200s}"
# A kubeconfig of its own: the guide's plain kubectl/helm commands reach only this kind cluster, never the
# context the user's shell points at.
KUBECONFIG="$(mktemp)"
export KUBECONFIG
PORT_FORWARD_PID=""

log() { printf '\n=== %s\n' "$*"; }

diagnose() {
  log "diagnostics"
  kubectl get rrd -A -o yaml || true
  kubectl get all,cm,pvc,jobs -A -l app.kubernetes.io/managed-by=reranker-operator || true
  kubectl describe pods -A -l app.kubernetes.io/managed-by=reranker-operator || true
  kubectl logs -A -l app.kubernetes.io/managed-by=reranker-operator --tail=100 --all-containers || true
  kubectl -n reranker-system logs deployment/reranker-operator --tail=200 || true
  kubectl get events -A --sort-by=.lastTimestamp | tail -40 || true
}

cleanup() {
  local rc=$?
  [[ -n "$PORT_FORWARD_PID" ]] && kill "$PORT_FORWARD_PID" 2>/dev/null || true
  [[ $rc -ne 0 ]] && diagnose
  if [[ "${KEEP_CLUSTER:-0}" == "1" ]]; then
    echo "KEEP_CLUSTER=1: cluster kind-$CLUSTER left running (KUBECONFIG=$KUBECONFIG; kind delete cluster --name $CLUSTER)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    rm -f "$KUBECONFIG"
  fi
  exit $rc
}
trap cleanup EXIT

log "kind cluster $CLUSTER"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s

log "images"
docker build -f operator/Dockerfile -t reranker-operator:dev .
docker build -f server/Dockerfile.cpu -t reranker-server-cpu:dev .
docker build -f router/Dockerfile -t reranker-router:dev .
kind load docker-image --name "$CLUSTER" reranker-operator:dev reranker-server-cpu:dev reranker-router:dev

log "guide step 1: the operator (kind-values.yaml: the locally loaded image, never pulled)"
helm install reranker-operator charts/reranker-operator -n reranker-system --create-namespace \
  -f charts/reranker-operator/ci/kind-values.yaml --wait --timeout 180s
kubectl get crd rerankerdeployments.reranker.dev

log "guide step 1: namespace and API key"
kubectl create namespace ragflow
kubectl -n ragflow create secret generic reranker-api-key --from-literal=api-key="$(openssl rand -hex 24)"

log "guide step 1: the first-run reranker, no-GPU variant (the loaded server image: never pulled)"
# The server and router images come from kind-values.yaml (the operator-wide defaults).
helm install qwen3-reranker charts/reranker -n ragflow -f charts/reranker/ci/gpu-qwen3-values.yaml \
  --set spec.gpusPerPod=0 --set spec.model.maxModelLen=2048 --set spec.resources.memory=6Gi \
  --set spec.engine.imagePullPolicy=Never
kubectl -n ragflow get rrd
kubectl -n ragflow wait rrd/qwen3-reranker --for=condition=Ready --timeout="$READY_TIMEOUT"
# Clients reach the servers through the router (Service qwen3-reranker); the headless -pods lists the servers.
kubectl -n ragflow rollout status deployment/qwen3-reranker-router --timeout=180s
kubectl -n ragflow get rrd qwen3-reranker

log "guide step 2: the settings"
kubectl -n ragflow get rrd qwen3-reranker -o jsonpath='{.status.clients}'; echo
kubectl -n ragflow get configmap qwen3-reranker-clients -o yaml
BASE_URL="$(kubectl -n ragflow get rrd qwen3-reranker -o jsonpath='{.status.clients.ragflow.vllmBaseUrl}')"
MODEL="$(kubectl -n ragflow get rrd qwen3-reranker -o jsonpath='{.status.clients.model}')"
[[ "$BASE_URL" == "http://qwen3-reranker.ragflow.svc:8000" ]] || { echo "unexpected VLLM base URL: '$BASE_URL'"; exit 1; }
[[ "$MODEL" == "qwen3-reranker" ]] || { echo "unexpected served model name: '$MODEL'"; exit 1; }

log "guide: check it without RAGFlow"
kubectl -n ragflow port-forward svc/qwen3-reranker 8000:8000 >/dev/null 2>&1 &
PORT_FORWARD_PID=$!
for _ in $(seq 30); do curl -fsS localhost:8000/health >/dev/null 2>&1 && break; sleep 1; done
KEY="$(kubectl -n ragflow get secret reranker-api-key -o jsonpath='{.data.api-key}' | base64 -d)"
curl -s localhost:8000/v1/models -H "Authorization: Bearer $KEY" -o /tmp/reranker-e2e-models.json --fail
curl -s localhost:8000/v1/rerank -H 'Content-Type: application/json' -H "Authorization: Bearer $KEY" -d '{
  "model": "qwen3-reranker", "query": "What is the capital of France?",
  "documents": ["Berlin is the capital of Germany.", "Paris is the capital of France."],
  "top_n": 2, "return_documents": false}' -o /tmp/reranker-e2e-rerank.json --fail
# The key is really required: the guide's values turn auth on.
STATUS="$(curl -s -o /dev/null -w '%{http_code}' localhost:8000/v1/rerank -H 'Content-Type: application/json' \
  -H 'Authorization: Bearer x' -d '{"model": "qwen3-reranker", "query": "q", "documents": ["d"]}')"
[[ "$STATUS" == "401" ]] || { echo "a wrong key answered $STATUS, not 401"; exit 1; }
python3 - "$MODEL" <<'PY'
import json, math, sys

model = sys.argv[1]
models = json.load(open("/tmp/reranker-e2e-models.json"))
assert model in [m["id"] for m in models["data"]], f"{model} not in /v1/models: {models}"
results = json.load(open("/tmp/reranker-e2e-rerank.json"))["results"]
assert sorted(r["index"] for r in results) == [0, 1], f"one result per document expected: {results}"
scores = [r["relevance_score"] for r in results]
assert all(isinstance(s, float) and math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores), scores
# What the guide promises: results[0].index == 1 with a score close to 1.
assert results[0]["index"] == 1 and scores[0] > 0.9, f"the Paris/France sentence should rank first: {results}"
print("ranking:", [(r["index"], round(r["relevance_score"], 4)) for r in results])
PY

echo
echo "PASSED: kind e2e (qwen3-reranker Ready on the CPU, the guide's check answered as the guide says)"
