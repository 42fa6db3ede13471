"""`make setup` on a user's machine: torch==2.13.0+cpu from the PyTorch CPU index (overridable), and no extra
index where pip already finds the wheel (this machine's wheelhouse). Runs the real Makefile with a stand-in
Python that records the pip calls, so no network and no install happens."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in *--dry-run*) [ "$WHEEL_IN_WHEELHOUSE" = 1 ] ;; *) exit 0 ;; esac
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def run_setup(tmp_path: Path, *, wheelhouse: bool, **variables: str) -> list[str]:
    venv, log = tmp_path / "venv", tmp_path / "pip-calls.log"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON.format(log=log))
    python.chmod(0o755)
    args = [f"{key}={value}" for key, value in variables.items()]
    env = {"PATH": "/usr/bin:/bin", "WHEEL_IN_WHEELHOUSE": "1" if wheelhouse else "0"}
    done = subprocess.run(
        ["make", "--no-print-directory", "setup", f"VENV={venv}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return log.read_text().splitlines()


def project_install(calls: list[str]) -> str:
    [call] = [c for c in calls if c.startswith("-m pip install -q -e")]
    return call


def test_a_users_machine_gets_torch_from_the_pytorch_cpu_index(tmp_path):
    calls = run_setup(tmp_path, wheelhouse=False)
    assert "--dry-run --no-deps --no-index --ignore-installed torch==2.13.0+cpu" in calls[1]
    assert project_install(calls).endswith("--extra-index-url https://download.pytorch.org/whl/cpu")


def test_the_index_can_be_overridden_or_left_out(tmp_path):
    mirror = run_setup(tmp_path / "a", wheelhouse=False, TORCH_INDEX_URL="https://mirror.example/whl/cpu")
    assert project_install(mirror).endswith("--extra-index-url https://mirror.example/whl/cpu")
    none = run_setup(tmp_path / "b", wheelhouse=False, TORCH_INDEX_URL="")
    assert "--extra-index-url" not in project_install(none)


def test_a_local_wheelhouse_is_used_without_the_extra_index(tmp_path):
    calls = run_setup(tmp_path, wheelhouse=True)
    assert "--extra-index-url" not in project_install(calls)
    assert calls[-1] == "-m pip uninstall -q -y torchvision torchaudio torchcodec"
