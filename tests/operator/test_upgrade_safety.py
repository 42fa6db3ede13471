"""An operator upgrade restarts no serving pod unless a pod template changed on purpose.

`golden/pod-template-hashes.json` keeps, per example, a digest of each pod template (server and router
Deployments, download Job; keyed by kind and name) in the form kube-apiserver stores (quantities canonical). A change that moves one restarts every
server pod of that kind in every cluster on upgrade: make it deliberately, say so in the release notes and
regenerate with UPDATE_GOLDEN=1. The e2e test `test_a_restarted_operator_writes_nothing_to_settled_children`
runs the same promise through the real operator.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest
import yaml
from reranker_operator.reconcile import QUANTITY_KEYS, child_key, plan_changes
from reranker_operator.render import load_spec, render_all
from reranker_operator.render.quantity import canonical_quantity
from rrd_helpers import EXAMPLES, GOLDEN_DIR, load_example

HASHES = GOLDEN_DIR / "pod-template-hashes.json"
UID = "3b1f7c52-0000-4000-8000-000000000001"


def as_stored(node: Any, quantity: bool = False) -> Any:
    """`node` as the API server stores it: quantity fields rewritten in canonical form."""
    if isinstance(node, dict):
        return {k: as_stored(v, quantity or k in QUANTITY_KEYS) for k, v in node.items()}
    if isinstance(node, list):
        return [as_stored(item) for item in node]
    return canonical_quantity(node) if quantity else node


def rendered(stem: str) -> list[dict]:
    meta, spec = load_example(stem)["metadata"], load_example(stem)["spec"]
    return render_all(meta["name"], meta.get("namespace", "default"), load_spec(spec), uid=UID, generation=1)


def template_hashes(stem: str) -> dict[str, str]:
    hashes = {}
    for manifest in rendered(stem):
        template = manifest.get("spec", {}).get("template")
        if template is not None:
            text = json.dumps(as_stored(template), sort_keys=True, separators=(",", ":"))
            hashes[f"{manifest['kind']}/{manifest['metadata']['name']}"] = hashlib.sha256(
                text.encode()
            ).hexdigest()[:16]
    return hashes


def test_pod_templates_of_the_examples_are_unchanged():
    current = {stem: template_hashes(stem) for stem in EXAMPLES}
    if os.environ.get("UPDATE_GOLDEN"):
        HASHES.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    golden = json.loads(HASHES.read_text())
    changed = {
        f"{stem}/{key}"
        for stem in current.keys() | golden.keys()
        for key in current.get(stem, {}).keys() | golden.get(stem, {}).keys()
        if current.get(stem, {}).get(key) != golden.get(stem, {}).get(key)
    }
    assert not changed, (
        f"pod templates changed for {sorted(changed)}: upgrading the operator would restart those pods in every "
        "cluster. If that is intended, regenerate with UPDATE_GOLDEN=1 and say so in the release notes."
    )


@pytest.mark.parametrize("stem", EXAMPLES)
def test_first_pass_over_the_children_of_the_previous_version_writes_nothing(stem):
    # The committed golden manifests are what the released operator wrote; the API server stores them with
    # canonical quantities and its defaults added (extra fields never count as drift).
    previous = [as_stored(obj) for obj in yaml.safe_load_all((GOLDEN_DIR / f"{stem}.yaml").read_text())]
    live = {child_key(obj): obj for obj in previous}
    plan = plan_changes(rendered(stem), live)
    assert plan.empty, [child_key(obj) for obj in (*plan.create, *plan.update, *plan.recreate)]
