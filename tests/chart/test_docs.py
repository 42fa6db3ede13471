"""The user guides quote names that come from code; fail when the code renames them so the docs get fixed."""

from __future__ import annotations

import re

import pytest

from .helpers import RERANKER_CHART, ROOT, load_values, one, render

RAGFLOW_DOC = (ROOT / "docs" / "ragflow.md").read_text()
AUTOSCALING_DOC = (ROOT / "docs" / "autoscaling.md").read_text()


def test_ragflow_guide_uses_the_status_client_field_names():
    api = pytest.importorskip("reranker_operator.api", reason="operator API not built yet")
    for field in api.RagflowSettings.model_fields.values():
        assert field.alias in RAGFLOW_DOC, (
            f"docs/ragflow.md does not mention status.clients.ragflow.{field.alias}"
        )
    quoted = set(re.findall(r"\bragflow\.([a-z]+[A-Z]\w*)", RAGFLOW_DOC))  # camelCase: not ragflow.svc
    aliases = {f.alias for f in api.RagflowSettings.model_fields.values()}
    assert quoted <= aliases, f"docs/ragflow.md quotes unknown fields: {quoted - aliases}"


def test_ragflow_guide_config_map_keys_exist():
    render_pkg = pytest.importorskip("reranker_operator.render", reason="operator renderers not built yet")
    rrd = one(
        render(RERANKER_CHART, load_values(RERANKER_CHART / "ci" / "gpu-qwen3-values.yaml")),
        "RerankerDeployment",
    )
    spec = render_pkg.load_spec(rrd["spec"])
    config_map = render_pkg.render_client_config("qwen3-reranker", "ragflow", spec)
    for key in set(re.findall(r"\b(?:RAGFLOW_[A-Z_]+_URL|RERANKER_[A-Z_]+)\b", RAGFLOW_DOC)):
        assert key in config_map["data"], (
            f"docs/ragflow.md mentions {key}, which <name>-clients does not have"
        )


def test_ragflow_guide_example_status_matches_what_the_operator_reports():
    render_pkg = pytest.importorskip("reranker_operator.render", reason="operator renderers not built yet")
    rrd = one(
        render(RERANKER_CHART, load_values(RERANKER_CHART / "ci" / "gpu-qwen3-values.yaml")),
        "RerankerDeployment",
    )
    settings = render_pkg.client_settings("qwen3-reranker", "ragflow", render_pkg.load_spec(rrd["spec"]))
    for value in (settings.endpoint, settings.rerank_url, settings.ragflow.openai_compatible_base_url):
        assert f'"{value}"' in RAGFLOW_DOC
    assert f'"model": "{settings.model}"' in RAGFLOW_DOC


def test_autoscaling_guide_names_the_metrics_the_hpa_uses():
    scaling = pytest.importorskip(
        "reranker_operator.render.scaling", reason="operator renderers not built yet"
    )
    for option, metric in scaling.METRICS.items():
        assert f"`{option}`" in AUTOSCALING_DOC and f"`{metric}`" in AUTOSCALING_DOC
    for option, target in scaling.DEFAULT_TARGETS.items():
        assert re.search(rf"`{option}`[^\n]*\| {target} \|", AUTOSCALING_DOC), (
            f"default target of {option} changed"
        )
