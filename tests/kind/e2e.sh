#!/usr/bin/env bash
# End to end on a throwaway kind cluster: build and load the images, install the operator chart, apply the CPU
# example, wait for the RerankerDeployment to be Ready, send the request RAGFlow's VLLM provider sends through
# the Service, check the ranking, tear down.
#
# Exits 0 with "SKIPPED: ..." when docker (with a running daemon), kind, kubectl or helm is missing.
# Environment: KIND_CLUSTER (default reranker-e2e), KEEP_CLUSTER=1 keeps it for debugging,
# READY_TIMEOUT (default 900s; the first start downloads the model from the Hugging Face hub).
set -euo pipefail

# Only shell builtins until the tool check, so the skip path works with an empty PATH.
for tool in docker kind kubectl helm curl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "SKIPPED: kind e2e needs docker, kind, kubectl, helm, curl and python3; $tool is not available"
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
READY_TIMEOUT="${READY_TIMEOUT:-900s}"
OPERATOR_NS=reranker-system
EXAMPLE=examples/cpu-minilm.yaml
KUBECTL=(kubectl --context "kind-$CLUSTER")
PORT_FORWARD_PID=""

log() { printf '\n=== %s\n' "$*"; }

diagnose() {
  log "diagnostics"
  "${KUBECTL[@]}" get rrd -A -o yaml || true
  "${KUBECTL[@]}" get all,cm,pvc,jobs -A -l app.kubernetes.io/managed-by=reranker-operator || true
  "${KUBECTL[@]}" describe pods -A -l app.kubernetes.io/managed-by=reranker-operator || true
  "${KUBECTL[@]}" logs -A -l app.kubernetes.io/managed-by=reranker-operator --tail=100 --all-containers || true
  "${KUBECTL[@]}" -n "$OPERATOR_NS" logs deployment/reranker-operator --tail=200 || true
  "${KUBECTL[@]}" get events -A --sort-by=.lastTimestamp | tail -40 || true
}

cleanup() {
  local rc=$?
  [[ -n "$PORT_FORWARD_PID" ]] && kill "$PORT_FORWARD_PID" 2>/dev/null || true
  [[ $rc -ne 0 ]] && diagnose
  if [[ "${KEEP_CLUSTER:-0}" == "1" ]]; then
    echo "KEEP_CLUSTER=1: cluster kind-$CLUSTER left running (kind delete cluster --name $CLUSTER)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit $rc
}
trap cleanup EXIT

log "kind cluster $CLUSTER"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --wait 180s

log "images"
docker build -f operator/Dockerfile -t reranker-operator:dev .
docker build -f server/Dockerfile.cpu -t reranker-server-cpu:dev .
docker build -f router/Dockerfile -t reranker-router:dev .
kind load docker-image --name "$CLUSTER" reranker-operator:dev reranker-server-cpu:dev reranker-router:dev

log "operator chart"
helm --kube-context "kind-$CLUSTER" install reranker-operator charts/reranker-operator \
  --namespace "$OPERATOR_NS" --create-namespace \
  -f charts/reranker-operator/ci/kind-values.yaml --wait --timeout 180s
"${KUBECTL[@]}" get crd rerankerdeployments.reranker.dev

log "example $EXAMPLE with the locally built server image"
# --local edits the file client-side: the image was loaded into kind, so it must never be pulled.
"${KUBECTL[@]}" patch --local -f "$EXAMPLE" --type merge -o yaml \
  -p '{"spec":{"engine":{"image":"reranker-server-cpu:dev","imagePullPolicy":"Never"}}}' \
  | "${KUBECTL[@]}" apply -f -
NAME="$("${KUBECTL[@]}" get -f "$EXAMPLE" -o jsonpath='{.metadata.name}')"
NS="$("${KUBECTL[@]}" get -f "$EXAMPLE" -o jsonpath='{.metadata.namespace}')"
"${KUBECTL[@]}" -n "$NS" wait "rrd/$NAME" --for=condition=Ready --timeout="$READY_TIMEOUT"
# Clients reach the servers through the router (Service $NAME); the headless $NAME-pods lists the servers.
"${KUBECTL[@]}" -n "$NS" rollout status "deployment/$NAME-router" --timeout=180s
"${KUBECTL[@]}" -n "$NS" get rrd "$NAME"

log "client settings in status and in the $NAME-clients ConfigMap"
BASE_URL="$("${KUBECTL[@]}" -n "$NS" get rrd "$NAME" -o jsonpath='{.status.clients.ragflow.vllmBaseUrl}')"
MODEL="$("${KUBECTL[@]}" -n "$NS" get rrd "$NAME" -o jsonpath='{.status.clients.model}')"
[[ "$BASE_URL" == "http://$NAME.$NS.svc:8000" ]] || { echo "unexpected VLLM base URL: '$BASE_URL'"; exit 1; }
[[ "$MODEL" == *rerank* ]] || { echo "RAGFlow only lists models whose name contains 'rerank': '$MODEL'"; exit 1; }
"${KUBECTL[@]}" -n "$NS" get configmap "$NAME-clients" -o yaml

log "RAGFlow-shaped rerank through the Service"
"${KUBECTL[@]}" -n "$NS" port-forward "svc/$NAME" 18000:8000 >/dev/null 2>&1 &
PORT_FORWARD_PID=$!
for _ in $(seq 30); do curl -fsS http://127.0.0.1:18000/health >/dev/null 2>&1 && break; sleep 1; done
curl -fsS http://127.0.0.1:18000/v1/models | tee /tmp/reranker-e2e-models.json; echo
# The body cohere 5.6.2 sends for RAGFlow's VLLM provider (base URL + /v1 -> POST /v1/rerank).
REQUEST=$(cat <<JSON
{"model": "$MODEL", "query": "What is the capital of France?",
 "documents": ["Berlin is the capital of Germany.", "The Eiffel Tower is in Paris.",
               "Paris is the capital and largest city of France.", ""],
 "top_n": 4, "return_documents": false}
JSON
)
curl -fsS http://127.0.0.1:18000/v1/rerank -H 'Content-Type: application/json' -H 'Authorization: Bearer x' \
  -H 'X-Fern-SDK-Name: cohere' -d "$REQUEST" | tee /tmp/reranker-e2e-rerank.json; echo
python3 - "$MODEL" <<'PY'
import json, math, sys

model = sys.argv[1]
models = json.load(open("/tmp/reranker-e2e-models.json"))
assert model in [m["id"] for m in models["data"]], f"{model} not in /v1/models: {models}"
reply = json.load(open("/tmp/reranker-e2e-rerank.json"))
results = reply["results"]
assert sorted(r["index"] for r in results) == [0, 1, 2, 3], f"one result per document expected: {results}"
scores = [r["relevance_score"] for r in results]
assert all(isinstance(s, float) and math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores), scores
assert scores == sorted(scores, reverse=True), f"results not sorted by score: {scores}"
assert results[0]["index"] == 2, f"the Paris/France sentence should rank first: {results}"
print("ranking:", [(r["index"], round(r["relevance_score"], 4)) for r in results])
PY

echo
echo "PASSED: kind e2e ($NAME Ready, RAGFlow-shaped rerank ranked the right document first)"
