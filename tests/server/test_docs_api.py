"""The curl examples in docs/api.md, run with the real curl against a real server.

Each ```bash block of the page runs as written (with `S` set to the server's URL, `KEY` to a key it accepts and
the page's example served name replaced by the fixture's); every curl must succeed (HTTP 2xx), answer JSON, and
the reply must have the shape the block's `# ...` comment shows (list or object, and the keys it names).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
DOC_MODEL = "ms-marco-reranker"
END = "@@curl-exit "
# Every curl in a block reports its exit code after its body; --fail-with-body turns HTTP errors into failures.
CURL_WRAPPER = f"curl() {{ command curl -sS --fail-with-body \"$@\"; printf '\\n{END}%d\\n' $?; }}\n"


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)


def curl_blocks() -> list[str]:
    return [b for b in bash_blocks() if "curl " in b]


def test_the_page_has_curl_examples():
    assert len(curl_blocks()) >= 4, "docs/api.md lost its curl examples"


@pytest.mark.vllm
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("block", curl_blocks(), ids=lambda b: b.split()[2].removeprefix("$S"))
def test_curl_example_works_as_documented(block, ce_server):
    script = CURL_WRAPPER + block.replace(DOC_MODEL, ce_server.served_name)
    done = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": "/usr/bin:/bin", "S": ce_server.url, "KEY": ce_server.api_key or "x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    parts = done.stdout.split(END)
    codes = [int(p.split("\n", 1)[0]) for p in parts[1:]]
    bodies = [parts[0]] + [p.split("\n", 1)[1] for p in parts[1:-1]]
    assert len(codes) == block.count("curl ") and codes == [0] * len(codes), done.stdout + done.stderr
    replies = [json.loads(b) for b in bodies]
    comments = "\n".join(
        line for line in block.splitlines() if line.lstrip().startswith("#") or " # " in line
    )
    for comment in re.findall(r"#\s*([\[{].*)", comments):
        assert any(isinstance(r, list if comment.startswith("[") else dict) for r in replies), comment
    text = json.dumps(replies)
    for key in set(re.findall(r'"(\w+)":', comments)):
        assert f'"{key}":' in text, f"the documented key {key!r} is missing from {text[:500]}"
