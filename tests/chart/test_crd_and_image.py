"""The chart ships the generated CRD unchanged, and the operator image matches what the chart expects."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import tomllib
import yaml

from .helpers import KUBE_VERSIONS, OPERATOR_CHART, ROOT, one, render

CRD_NAME = "reranker.dev_rerankerdeployments.yaml"
GENERATED = ROOT / "crds" / CRD_NAME
CHART_COPY = OPERATOR_CHART / "crds" / CRD_NAME
DOCKERFILE = ROOT / "operator" / "Dockerfile"

needs_generated_crd = pytest.mark.skipif(
    not GENERATED.exists(), reason=f"{GENERATED.relative_to(ROOT)} not generated yet (make crds)"
)


@needs_generated_crd
def test_chart_crd_is_the_committed_generated_file():
    assert CHART_COPY.exists(), "run `make crds`: the chart has no copy of the generated CRD"
    assert CHART_COPY.read_text() == GENERATED.read_text(), "the chart's CRD drifted: run `make crds`"


@needs_generated_crd
def test_chart_crd_is_what_the_operator_generates_now():
    crd = pytest.importorskip("reranker_operator.crd", reason="reranker_operator.crd not built yet")
    assert CHART_COPY.read_text() == crd.crd_yaml(), (
        "the CRD is stale against the spec model: run `make crds`"
    )


@needs_generated_crd
def test_helm_installs_the_crd_and_it_validates_strictly():
    with helm.Chart.load(str(OPERATOR_CHART)) as chart:
        crds = chart.crds
    assert [c["filename"].rpartition("/")[2] for c in crds] == [CRD_NAME]
    crd = yaml.safe_load(crds[0]["data"])
    assert crd["metadata"]["name"] == "rerankerdeployments.reranker.dev"
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate.validate(crd, kube_version, strict=True)


def _dockerfile_lines() -> list[str]:
    """Dockerfile instructions, one logical line each (continuations joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _dockerfile_final_stage() -> list[str]:
    """Instructions of the last build stage."""
    lines = _dockerfile_lines()
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def _instruction(stage: list[str], name: str) -> str:
    (line,) = [line for line in stage if line.upper().startswith(name + " ")]
    return line[len(name) + 1 :].strip()


def test_operator_image_runs_as_the_user_the_chart_expects():
    stage = _dockerfile_final_stage()
    uid, _, gid = _instruction(stage, "USER").partition(":")
    pod_security = one(render(OPERATOR_CHART), "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert int(uid) == pod_security["runAsUser"] and int(uid) != 0
    assert int(gid) == pod_security["runAsGroup"]


def test_operator_image_entrypoint_is_the_operator_cli_running_run():
    stage = _dockerfile_final_stage()
    assert _instruction(stage, "ENTRYPOINT") == '["reranker-operator"]'
    assert _instruction(stage, "CMD") == '["run"]'
    container = one(render(OPERATOR_CHART), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container, "the chart keeps the image's ENTRYPOINT"
    assert container["args"][0] == "run"


def test_operator_image_installs_no_server_extras():
    installs = [line for line in _dockerfile_lines() if "pip install" in line or "pip wheel" in line]
    assert installs, "the Dockerfile installs nothing"
    for line in installs:
        assert not re.search(r"\.\[|vllm|torch", line), (
            f"the operator image must not pull vLLM or torch: {line}"
        )


def _requirement_closure(requirements: list[str]) -> set[str]:
    """Distributions installed by `pip install` of `requirements` (no extras): names normalised, transitively."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        seen.add(name)
        todo += metadata.requires(req.name) or []
    return seen


def _import_nodes(node: ast.AST, *, lazy: bool):
    """Import statements under `node`; inside functions only if `lazy` (another package's module runs only
    its module-level imports when the operator imports it, e.g. not the server's download of the model)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif lazy or not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _import_nodes(child, lazy=lazy)


def _third_party_imports(package: str) -> dict[str, set[str]]:
    """Top-level modules imported by `package` (reranker_operator, reranker_router) and by the first-party
    modules it pulls in (the server's contract modules, the router's config), each with the files importing it."""
    first_party = {"reranker_operator", "reranker_server", "reranker_router"}
    found: dict[str, set[str]] = {}
    own = ROOT / package.removeprefix("reranker_") / package
    todo = list(own.rglob("*.py"))
    done: set = set()
    while todo:
        path = todo.pop()
        if path in done:
            continue
        done.add(path)
        for node in _import_nodes(ast.parse(path.read_text()), lazy=path.is_relative_to(own)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top in first_party and top != package:
                    base = ROOT / top.removeprefix("reranker_") / Path(*name.split("."))
                    todo += [p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()]
                    todo += [p for p in [base.parent / "__init__.py"] if p.exists()]
                elif top not in first_party and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize(
    ("package", "requirements"),
    [("reranker_operator", "dependencies"), ("reranker_router", "router")],
    ids=["operator-image", "router-image"],
)
def test_an_image_installs_every_module_its_code_imports(package: str, requirements: str):
    """The operator image installs the project's core `dependencies` (operator/Dockerfile), the router image
    the `router` extra alone (router/Dockerfile): every third-party module the code imports must come with them
    (kubernetes-validate once sat in the `dev` extra: the operator image could not have started)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = (
        project["dependencies"]
        if requirements == "dependencies"
        else project["optional-dependencies"][requirements]
    )
    installed = _requirement_closure(listed)
    providers = metadata.packages_distributions()
    missing = {
        module: sorted(files)
        for module, files in _third_party_imports(package).items()
        if not {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(module, [module])} & installed
    }
    assert not missing, f"imported by {package} but not installed by pyproject's {requirements}: {missing}"
