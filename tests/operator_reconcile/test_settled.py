"""A pass counts as settled only on the children it saw: one that changes while it runs is not skipped later."""

from __future__ import annotations

from typing import Any

import pytest
from reranker_operator import handlers
from reranker_operator.handlers import Controller, OperatorOptions
from reranker_operator.reconcile import Outcome

KEY = ("team", "demo")
BODY = {"metadata": {"namespace": "team", "name": "demo", "generation": 1, "uid": "u"}, "spec": {}}


class FakeCache:
    """Only what a pass asks the cache for its settled bookkeeping: the children's resourceVersions."""

    def __init__(self) -> None:
        self.children = {("Deployment", "demo", "1")}

    def versions(self, namespace: str, name: str, *, written: bool = False) -> frozenset:
        return frozenset(self.children)


def controller(monkeypatch: pytest.MonkeyPatch, during_pass) -> Controller:
    ctl = Controller(OperatorOptions(), kube=None)  # type: ignore[arg-type]
    ctl._cache = FakeCache()  # type: ignore[assignment]
    ctl._handled[KEY] = 1

    def fake_reconcile(*_: Any, **__: Any) -> Outcome:
        during_pass(ctl._cache)
        return Outcome(status={})

    monkeypatch.setattr(handlers, "reconcile", fake_reconcile)
    monkeypatch.setattr(handlers, "announce", lambda *_, **__: None)
    monkeypatch.setattr(ctl, "cluster_version", lambda: "1.31")
    return ctl


def test_a_pass_over_unchanged_children_is_settled(monkeypatch: pytest.MonkeyPatch) -> None:
    ctl = controller(monkeypatch, lambda cache: None)
    ctl.run_pass(BODY, resync=True, children_only=True)
    assert ctl._is_settled(KEY, 1, None)


def test_a_child_that_appears_during_the_pass_is_not_counted_as_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    # The e2e race this pins: a download Pod put while the first pass ran; its event's pass was then skipped as
    # "settled", and Ready kept the pass's old reason until the next resync.
    ctl = controller(monkeypatch, lambda cache: cache.children.add(("Pod", "demo-download-x7k2p", "7")))
    ctl.run_pass(BODY, resync=True, children_only=True)
    assert not ctl._is_settled(KEY, 1, None)


def test_a_status_read_from_warning_events_is_never_settled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Events are not watched: a ProvisioningFailed posted after the pass listed them changes nothing the
    # watches see, so only the resync sweep's next pass can report it (seen in CI: test_pending_cache_pvc).
    ctl = controller(monkeypatch, lambda cache: None)
    monkeypatch.setattr(handlers, "reconcile", lambda *_, **__: Outcome(status={}, reads_events=True))
    ctl.run_pass(BODY, resync=True, children_only=True)
    assert not ctl._is_settled(KEY, 1, None)
