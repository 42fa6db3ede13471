"""The kind e2e (tests/kind/e2e.sh) types the guide's commands: every kubectl/helm/curl command of the first
run and of "Check it without RAGFlow" in docs/ragflow.md appears in the script with only arguments appended
(the locally built images, output files). Interactive watches (`-w`) are replaced by `kubectl wait`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from walker import ROOT, commands, local_chart  # noqa: E402

GUIDE = ROOT / "docs" / "ragflow.md"
SCRIPT = ROOT / "tests" / "kind" / "e2e.sh"
SECTIONS = ("## 1. ", "## 2. ", "## Check it without RAGFlow")


def guide_steps() -> list[tuple[str, ...]]:
    text = GUIDE.read_text()
    parts = re.split(r"^(?=## )", text, flags=re.M)
    chosen = "".join(part for part in parts if part.startswith(SECTIONS))
    # The guide installs the published operator chart; the e2e the same chart from the checkout (local images).
    return [
        local_chart(c.argv)
        for c in commands(chosen)
        if c.argv[0] in ("kubectl", "helm", "curl")
        and "-w" not in c.argv
        and "$RAGFLOW" not in " ".join(c.argv)
    ]


def script_steps() -> list[tuple[str, ...]]:
    script = re.sub(r"<<'PY'\n.*?^PY\n", "\n", SCRIPT.read_text(), flags=re.S | re.M)  # the Python checks
    return [c.argv for c in commands(f"```bash\n{script}\n```\n")]


def test_the_kind_e2e_runs_every_guide_step_as_written():
    steps = guide_steps()
    assert len(steps) >= 8, steps
    script = script_steps()
    missing = [" ".join(step) for step in steps if not any(argv[: len(step)] == step for argv in script)]
    assert missing == [], "tests/kind/e2e.sh does not run these guide steps as written:\n" + "\n".join(
        missing
    )


def test_the_e2e_installs_the_reranker_with_the_guides_no_gpu_variant():
    installs = [argv for argv in script_steps() if argv[:3] == ("helm", "install", "qwen3-reranker")]
    assert len(installs) == 1
    assert "spec.gpusPerPod=0" in installs[0]
    assert "charts/reranker/ci/gpu-qwen3-values.yaml" in installs[0], "the GPU example's shape, on the CPU"
