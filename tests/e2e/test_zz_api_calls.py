"""The operator's API calls across the e2e session match tests/data/operator-api-calls.json (RBAC reads it).

Runs last (file name). Regenerate with UPDATE_GOLDEN=1 after a deliberate change and review the diff.
"""

from __future__ import annotations

import json
import os

import pytest

from .conftest import GOLDEN, recorded_calls

pytestmark = pytest.mark.e2e


def test_api_calls_match_golden(request):
    calls = recorded_calls()
    if not calls:
        pytest.skip("no e2e test ran in this session")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(calls, indent=2) + "\n")
    golden = json.loads(GOLDEN.read_text())
    unexpected = [c for c in calls if c not in golden]
    assert not unexpected, f"calls missing from {GOLDEN.name} (and so from RBAC): {unexpected}"
    ran_everything = (
        request.session.testscollected == request.session.testscollected - request.session.testsfailed
    )
    if ran_everything and len(request.session.items) == len(
        [i for i in request.session.items if "e2e" in str(i.fspath)]
    ):
        assert calls == golden, (
            "an API call in the golden file is no longer made: regenerate with UPDATE_GOLDEN=1"
        )
