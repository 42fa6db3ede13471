"""docs/ragflow.md, walked as a newcomer types it: every name, namespace, Secret, port, URL and label a step
uses must exist in what the earlier steps create. The commands are parsed from the Markdown and the charts are
rendered with exactly the values and --set lines the guide shows (real Helm library), so a doc edit that breaks
the chain fails here."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from walker import ROOT, Cluster, commands, comment_commands, walk  # noqa: E402

GUIDE = ROOT / "docs" / "ragflow.md"
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text()


@pytest.fixture(scope="module")
def walked(guide: str) -> Cluster:
    return walk(guide)


def test_the_guide_has_the_steps_this_test_walks(guide):
    argvs = [" ".join(c.argv) for c in commands(guide)]
    for needed in ("helm install reranker-operator", "create secret generic", "helm install qwen3-reranker"):
        assert any(needed in a for a in argvs), f"the guide no longer has a step with {needed!r}"
    assert any(a.startswith("kubectl -n ragflow port-forward") for a in argvs)
    assert sum(a.startswith("curl") for a in argvs) >= 2


def test_every_step_uses_only_what_earlier_steps_created(walked):
    assert walked.problems == [], "\n".join(walked.problems)
    assert walked.rerankers, "no step created a reranker"


def test_the_first_run_needs_one_gpu_no_label_and_no_add_ons(walked):
    first = walked.first_reranker
    assert first is not None
    spec = first.spec
    assert spec.gpus <= 1, "a first run should need one GPU"
    assert spec.replicas == 1 and not spec.autoscaling_enabled, "autoscaling needs Prometheus + adapter"
    scheduling = spec.scheduling_or_default
    assert not scheduling.node_selector and not scheduling.affinity, (
        "labels exist only with GPU Feature Discovery"
    )
    kinds = {c["kind"] for c in first.children}
    assert "HorizontalPodAutoscaler" not in kinds
    # Storage: nothing a default StorageClass cannot provide (no PVC at all on the first run).
    assert "PersistentVolumeClaim" not in kinds
    # Network: policy off, or rules that admit the namespace the guide runs RAGFlow in.
    for policy in (c for c in first.children if c["kind"] == "NetworkPolicy"):
        peers = [p for rule in policy["spec"]["ingress"] for p in rule.get("from", [])]
        assert any(
            (p.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            == "ragflow"
            for p in peers
        ), "the starter NetworkPolicy would block RAGFlow"


def test_the_guides_urls_are_the_ones_status_reports(guide, walked):
    first = walked.first_reranker
    from reranker_operator.render import client_settings

    settings = client_settings(first.name, first.namespace, first.spec)
    service = first.child("Service", first.name)
    port = service["spec"]["ports"][0]["port"]
    assert settings.endpoint == f"http://{first.name}.{first.namespace}.svc:{port}"
    for url in set(re.findall(r"http://[\w.-]+\.svc:\d+[\w/]*", guide)):
        assert url.startswith(settings.endpoint), f"{url} does not point at {settings.endpoint}"
    assert f'"model": "{settings.model}"' in guide


def test_autoscaling_is_a_next_step_with_its_helm_repo():
    for doc in (GUIDE, ROOT / "docs" / "autoscaling.md"):
        text = doc.read_text()
        repos: set[str] = set()
        for cmd in commands(text):
            argv = cmd.argv
            if argv[:3] == ("helm", "repo", "add"):
                repos.add(argv[3])
            elif argv[:2] in (("helm", "install"), ("helm", "upgrade")):
                chart = [a for a in argv[2:] if not a.startswith("-")][1]
                repo = chart.split("/", 1)[0]
                if "/" in chart and not chart.startswith(("charts/", "oci://", "./")):
                    assert repo in repos, (
                        f"{doc.name}: {chart} is installed before `helm repo add {repo} ...`"
                    )
    assert "helm repo add prometheus-community https://prometheus-community.github.io/helm-charts" in (
        GUIDE.read_text()
    )


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_each_example_follows_its_own_header_commands(path):
    """An example's header says how to create what it needs; walking those lines must satisfy it."""
    text = path.read_text()
    example = yaml.safe_load(text)
    cluster = Cluster(watched=set())
    namespace = example["metadata"].get("namespace")
    if namespace in (None, "default"):
        cluster.namespaces.add("default")
    walk("```bash\n" + "\n".join(" ".join(c.argv) for c in comment_commands(text)) + "\n```\n", cluster)
    if not any(c.argv[:2] == ("kubectl", "apply") for c in comment_commands(text)):
        # No apply line in the header: apply it as the guide would, into its own namespace.
        cluster.namespaces.add(namespace or "default")
        walk(f"```bash\nkubectl apply -f {path.relative_to(ROOT)}\n```\n", cluster)
    # (A pvc source reads a claim the user prepared beforehand; the walk checks Secrets and namespaces.)
    assert cluster.problems == [], "\n".join(cluster.problems)


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            "create secret generic reranker-api-key",
            "create secret generic reranker-key",
            "Secret ragflow/reranker-api-key",
        ),
        ('--from-literal=api-key="$(openssl', '--from-literal=key="$(openssl', "not 'api-key'"),
        (
            "kubectl create namespace ragflow\n",
            "kubectl create namespace rag\n",
            "namespace 'ragflow' is used before",
        ),
        (
            "port-forward svc/qwen3-reranker 8000:8000",
            "port-forward svc/qwen3 8000:8000",
            "no Service ragflow/qwen3",
        ),
        (
            "port-forward svc/qwen3-reranker 8000:8000",
            "port-forward svc/qwen3-reranker 8000:8080",
            "no port 8080",
        ),
        ('"model": "qwen3-reranker", "query"', '"model": "qwen3", "query"', "names model 'qwen3'"),
        ('-H "Authorization: Bearer $KEY" -d', "-H 'Authorization: Bearer x' -d", "requires the key"),
        ("localhost:8000/v1/rerank", "localhost:8001/v1/rerank", "nothing forwards localhost:8001"),
        (
            "get configmap qwen3-reranker-clients",
            "get configmap qwen3-clients",
            "no ConfigMap ragflow/qwen3-clients",
        ),
    ],
    ids=[
        "secret-name",
        "secret-key",
        "namespace",
        "service",
        "port",
        "model",
        "api-key",
        "local-port",
        "configmap",
    ],
)
def test_a_doc_edit_that_breaks_the_chain_fails(guide, old, new, expected):
    assert old in guide, f"the guide changed: update this case ({old!r})"
    problems = walk(guide.replace(old, new, 1)).problems
    assert any(expected in p for p in problems), problems


def _every_rendered_example():
    """(label, children) of every example and every reranker-chart values file, as users apply them."""
    from reranker_operator.render import load_spec, render_all
    from walker import RERANKER_CHART, helm_values, render_chart

    for path in sorted(EXAMPLES.glob("*.yaml")):
        resource = yaml.safe_load(path.read_text())
        meta = resource["metadata"]
        yield (
            path.name,
            render_all(meta["name"], meta.get("namespace", "default"), load_spec(resource["spec"])),
        )
    for path in sorted((ROOT / RERANKER_CHART / "ci").glob("*.yaml")):
        values = helm_values(("-f", str(path.relative_to(ROOT))))
        [rrd] = [
            o
            for o in render_chart(RERANKER_CHART, values, release="r", namespace="ns")
            if o["kind"] == "RerankerDeployment"
        ]
        yield path.name, render_all("r", "ns", load_spec(rrd["spec"]))


def test_no_example_needs_more_than_a_default_storage_class():
    """On kind, GKE or EKS with only their default (ReadWriteOnce) class no example leaves a PVC Pending: a claim,
    if any, is ReadWriteOnce on the default class; the shared ReadWriteMany cache stays an opt-in."""
    for label, children in _every_rendered_example():
        for claim in (c for c in children if c["kind"] == "PersistentVolumeClaim"):
            assert claim["spec"]["accessModes"] == ["ReadWriteOnce"], label
            assert "storageClassName" not in claim["spec"], label


def test_the_plain_manifest_alternative_installs_the_same_reranker(guide):
    """Step 1 offers `kubectl apply -f examples/...` (in a comment) instead of the chart: it must create the same
    reranker, or every later step of the guide breaks for those who take it."""
    step_one = guide.split("\n## 2. ", 1)[0]
    alternatives = re.findall(r"^#\s+(kubectl apply -f examples/\S+\.yaml)", step_one, flags=re.M)
    assert alternatives, "step 1 no longer offers a plain manifest"
    for line in alternatives:
        cluster = walk(step_one)
        before = dict(cluster.rerankers)
        walk(f"```bash\n{line}\n```\n", cluster)
        assert cluster.problems == [], "\n".join(cluster.problems)
        assert cluster.rerankers.keys() == before.keys(), f"{line} creates a different reranker"
