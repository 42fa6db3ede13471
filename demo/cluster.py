"""The opt-in cluster half of `make demo-cluster`: install the operator and the CPU example, rerank through it.

It changes the cluster of the current kubectl context, so it first says exactly what it will install and where,
and asks (unless `--yes`). The operator is installed with the `helm` CLI, as docs/ragflow.md does, so the
release stays Helm's to upgrade or uninstall; the example is applied with kubectl. The images must be pullable
by the cluster (published ones, or `make images` and e.g. `kind load docker-image`).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import yaml

from demo.local import EXAMPLE, REPO, post_rerank, print_ranking

RELEASE = "reranker-operator"
OPERATOR_NAMESPACE = "reranker-system"
OPERATOR_CHART = REPO / "charts" / "reranker-operator"


def _run(*args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
    exe = shutil.which(args[0])
    if exe is None:
        raise SystemExit(f"{args[0]} is not installed; the cluster demo needs kubectl and helm")
    done = subprocess.run([exe, *args[1:]], input=input, text=True, capture_output=True, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout


def cluster_reachable() -> bool:
    """True when kubectl exists, a context is set and the API server answers within a few seconds."""
    if shutil.which("kubectl") is None:
        return False
    try:
        out = _run("kubectl", "version", "-o", "json", "--request-timeout=5s", check=False, timeout=15)
        return "serverVersion" in json.loads(out or "{}")
    except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError):
        return False


def current_context() -> str:
    """The kubectl context the demo would change."""
    return _run("kubectl", "config", "current-context", check=False).strip() or "(none)"


def install_plan(context: str) -> str:
    """What the cluster demo installs, and where, in words a person can check before saying yes."""
    example = yaml.safe_load(EXAMPLE.read_text())
    meta = example["metadata"]
    return "\n".join(
        [
            f"The cluster demo will change the cluster of kubectl context {context!r}:",
            f"  1. helm upgrade --install {RELEASE} {OPERATOR_CHART.relative_to(REPO)} "
            f"-n {OPERATOR_NAMESPACE} --create-namespace",
            "     (the RerankerDeployment CRD, cluster-wide RBAC and the operator Deployment)",
            f"  2. kubectl apply -n {meta.get('namespace', 'default')} -f {EXAMPLE.relative_to(REPO)}  "
            f"(RerankerDeployment {meta['name']} in namespace {meta.get('namespace', 'default')}: one CPU pod)",
            "Remove it all with:",
            f"  kubectl delete -n {meta.get('namespace', 'default')} -f {EXAMPLE.relative_to(REPO)}; helm uninstall {RELEASE} -n {OPERATOR_NAMESPACE}",
        ]
    )


def run_cluster(*, assume_yes: bool = False) -> None:
    """Install the operator (Helm) and the CPU example; wait for Ready; rerank through the Service."""
    if not cluster_reachable():
        raise SystemExit("no reachable Kubernetes cluster (kubectl); `make demo` runs everything locally")
    print(install_plan(current_context()))
    if not assume_yes and input("Proceed? [y/N] ").strip().lower() not in ("y", "yes"):
        raise SystemExit("nothing was installed")
    example = yaml.safe_load(EXAMPLE.read_text())
    name = example["metadata"]["name"]
    namespace = example["metadata"].get("namespace", "default")
    _run(
        "helm", "upgrade", "--install", RELEASE, str(OPERATOR_CHART),
        "-n", OPERATOR_NAMESPACE, "--create-namespace", "--wait", "--timeout", "300s",
        timeout=330,
    )  # fmt: skip
    _run("kubectl", "apply", "-n", namespace, "-f", str(EXAMPLE))
    print(f"waiting for rrd/{name} in {namespace} to be Ready (model download and load can take minutes)")
    _run(
        "kubectl", "wait", f"rrd/{name}", "-n", namespace, "--for=condition=Ready", "--timeout=1200s",
        timeout=1260,
    )  # fmt: skip
    status = json.loads(_run("kubectl", "get", f"rrd/{name}", "-n", namespace, "-o", "json"))["status"]
    print(f"endpoint: {status.get('endpoint')}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service_port = example["spec"].get("service", {}).get("port", 8000)
    forward = subprocess.Popen(
        [shutil.which("kubectl"), "port-forward", "-n", namespace, f"svc/{name}", f"{port}:{service_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        # The operator derives the served name when the spec leaves it out; status says which it chose.
        model = (status.get("clients") or {}).get("model") or example["spec"]["model"].get("servedName", name)
        print_ranking(post_rerank(f"http://127.0.0.1:{port}", model, None))
    finally:
        forward.terminate()
        forward.wait(timeout=10)
