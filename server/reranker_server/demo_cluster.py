"""The cluster half of `make demo`: install the operator and the CPU example, rerank through the Service.

Uses the real Helm library (helm-python-sdk) to render the operator chart and kubectl to apply it, so the only
things a user needs are a kubectl context and the images (`make images`, then e.g. `kind load docker-image`).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import yaml

from reranker_server.demo import EXAMPLE, REPO, _print_ranking, post_rerank

RELEASE = "reranker-operator"
OPERATOR_NAMESPACE = "reranker-system"


def _kubectl(*args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        raise FileNotFoundError("kubectl")
    done = subprocess.run([exe, *args], input=input, text=True, capture_output=True, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout


def cluster_reachable() -> bool:
    """True when kubectl exists, a context is set and the API server answers within a few seconds."""
    if shutil.which("kubectl") is None:
        return False
    try:
        out = _kubectl("version", "-o", "json", "--request-timeout=5s", check=False, timeout=15)
        return "serverVersion" in json.loads(out or "{}")
    except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError):
        return False


def _render_chart() -> str:
    import helm_python as helm

    with helm.Chart.load(REPO / "charts" / "reranker-operator") as chart:
        rendered = chart.render({}, name=RELEASE, namespace=OPERATOR_NAMESPACE, is_install=True)
    return "\n---\n".join(
        text for path, text in sorted(rendered.items()) if path.endswith((".yaml", ".yml")) and text.strip()
    )


def run_cluster() -> None:
    """Install CRD, operator and the CPU example; wait for Ready; rerank through the Service."""
    example = yaml.safe_load(EXAMPLE.read_text())
    name = example["metadata"]["name"]
    namespace = example["metadata"].get("namespace", "default")
    print(f"cluster reachable: installing the CRD, the operator ({OPERATOR_NAMESPACE}) and {EXAMPLE.name}")
    print(
        "(the operator and server images must be pullable by the cluster: `make images`, then load or push them)"
    )
    _kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    _kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    _kubectl("apply", "-n", OPERATOR_NAMESPACE, "-f", "-", input=_render_chart())
    _kubectl("create", "namespace", namespace, check=False)
    _kubectl("apply", "-f", str(EXAMPLE))
    print(f"waiting for rrd/{name} in {namespace} to be Ready (model download and load can take minutes)")
    _kubectl("wait", f"rrd/{name}", "-n", namespace, "--for=condition=Ready", "--timeout=1200s", timeout=1260)
    status = json.loads(_kubectl("get", f"rrd/{name}", "-n", namespace, "-o", "json"))["status"]
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
        _print_ranking(post_rerank(f"http://127.0.0.1:{port}", model, None))
    finally:
        forward.terminate()
