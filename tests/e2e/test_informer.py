"""The operator's own list + watch of its children (`informer.py`) against the emulator's watch semantics:
resourceVersion resumption, 410 Gone, dropped streams, label and namespace filtering, slimmed bodies."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kubernetes.config
import pytest
from reranker_operator.informer import Informers, Scope
from reranker_operator.render.labels import INSTANCE_LABEL, label_selector, owned_labels

from .conftest import eventually
from .emulator import Fault, StampingEmulator

CONFIGMAPS = "v1/configmaps"
DEPLOYMENTS = "apps/v1/deployments"
SELECTOR = label_selector(owned_labels())


def configmap(name: str, namespace: str = "team", owner: str = "demo", **data: str) -> dict[str, Any]:
    labels = {**owned_labels(), INSTANCE_LABEL: owner} if owner else {}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": data or {"k": "v"},
    }


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def __call__(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        self.events.append((kind, event_type, obj["metadata"]["name"]))


@pytest.fixture()
async def informers(emulator: StampingEmulator, kubeconfig: Path):
    kubernetes.config.load_kube_config(config_file=str(kubeconfig))
    made: list[Informers] = []

    def make(kinds=("ConfigMap",), scope: Scope | None = None) -> tuple[Informers, Recorder]:
        recorder = Recorder()
        informer = Informers(kinds, SELECTOR, recorder, scope=scope, server_timeout=60)
        informer.start()
        made.append(informer)
        return informer, recorder

    yield make
    for informer in made:
        await informer.stop()


def names(informer: Informers, kind: str = "ConfigMap", owner=("team", "demo")) -> list[str]:
    return sorted(obj["metadata"]["name"] for obj in informer.stores[kind].get(owner, ()))


def calls(emulator: StampingEmulator, verb: str, resource: str = "configmaps") -> int:
    return sum(1 for v, r, _ in emulator.request_log if v == verb and r == resource)


async def test_lists_the_labelled_children_then_follows_their_watch(emulator, informers) -> None:
    await emulator.put_object(CONFIGMAPS, configmap("demo-a"))
    await emulator.put_object(CONFIGMAPS, configmap("stranger", owner=""))  # not the operator's
    informer, recorder = informers()
    assert await asyncio.to_thread(informer.wait_synced, 10)
    assert names(informer) == ["demo-a"]
    assert recorder.events == [("ConfigMap", "ADDED", "demo-a")]

    # A watch event far longer than aiohttp's 64 KiB line limit.
    await emulator.put_object(CONFIGMAPS, configmap("demo-b", big="x" * 300_000))
    await emulator.edit_object(CONFIGMAPS, "team", "demo-a", {"data": {"k": "changed"}})
    await eventually(lambda: ("ConfigMap", "MODIFIED", "demo-a") in recorder.events)
    assert names(informer) == ["demo-a", "demo-b"]
    (cached,) = [
        o for o in informer.stores["ConfigMap"][("team", "demo")] if o["metadata"]["name"] == "demo-a"
    ]
    assert cached["data"] == {"k": "changed"} and cached["kind"] == "ConfigMap"

    await emulator.remove_object(CONFIGMAPS, "team", "demo-b")
    await eventually(lambda: names(informer) == ["demo-a"])
    assert recorder.events[-1] == ("ConfigMap", "DELETED", "demo-b")
    await emulator.remove_object(CONFIGMAPS, "team", "demo-a")
    await eventually(lambda: ("team", "demo") not in informer.stores["ConfigMap"])
    assert calls(emulator, "list") == 1  # one list, then the watch carried everything


async def test_a_dropped_watch_resumes_from_its_resource_version_without_listing_again(
    emulator, informers
) -> None:
    informer, recorder = informers()
    assert await asyncio.to_thread(informer.wait_synced, 10)
    await emulator.drop_watches()
    await emulator.put_object(CONFIGMAPS, configmap("demo-a"))  # while no watch may be open
    await eventually(lambda: names(informer) == ["demo-a"])
    await emulator.drop_watches()
    await emulator.remove_object(CONFIGMAPS, "team", "demo-a")
    await eventually(lambda: names(informer) == [])
    assert calls(emulator, "list") == 1
    assert calls(emulator, "watch") >= 2
    assert recorder.events == [("ConfigMap", "ADDED", "demo-a"), ("ConfigMap", "DELETED", "demo-a")]


async def test_gone_or_failing_watches_list_again_and_report_what_changed_meanwhile(
    emulator, informers
) -> None:
    await emulator.put_object(CONFIGMAPS, configmap("demo-a"))
    await emulator.put_object(CONFIGMAPS, configmap("demo-b"))
    informer, recorder = informers()
    assert await asyncio.to_thread(informer.wait_synced, 10)
    # The watch breaks (410, then a 500) while demo-a is deleted and demo-b changed: the list after the
    # back-off finds both, and the handler hears of each change once.
    emulator.faults.append(Fault(verb="watch", plural="configmaps", status=410, times=1))
    emulator.faults.append(Fault(verb="watch", plural="configmaps", status=500, times=1))
    emulator.faults.append(Fault(verb="list", plural="configmaps", status=503, times=1))
    await emulator.drop_watches()
    await emulator.remove_object(CONFIGMAPS, "team", "demo-a")
    await emulator.edit_object(CONFIGMAPS, "team", "demo-b", {"data": {"k": "new"}})
    await eventually(lambda: names(informer) == ["demo-b"], timeout=20)
    await eventually(lambda: ("ConfigMap", "MODIFIED", "demo-b") in recorder.events, timeout=20)
    assert recorder.events.count(("ConfigMap", "DELETED", "demo-a")) == 1
    # The watch after that list gets the 500: listed again after the back-off, and still following.
    await eventually(lambda: all(fault.times == 0 for fault in emulator.faults), timeout=20)
    await emulator.edit_object(CONFIGMAPS, "team", "demo-b", {"data": {"k": "newer"}})
    await eventually(
        lambda: [o["data"] for o in informer.stores["ConfigMap"][("team", "demo")]] == [{"k": "newer"}],
        timeout=20,
    )
    assert calls(emulator, "list") >= 3
    assert recorder.events.count(("ConfigMap", "DELETED", "demo-a")) == 1


async def test_an_expired_version_in_the_stream_lists_again(emulator, informers, monkeypatch) -> None:
    """kube-apiserver reports a compacted resourceVersion as an ERROR event with code 410 on the stream."""
    from . import emulator as emulator_module

    informer, recorder = informers()
    assert await asyncio.to_thread(informer.wait_synced, 10)
    await emulator.put_object(CONFIGMAPS, configmap("demo-a"))
    await eventually(lambda: names(informer) == ["demo-a"])
    # A log of two events: the watch resumed after these writes finds its version compacted.
    monkeypatch.setattr(emulator_module, "EVENT_LOG_SIZE", 2)
    emulator._log.clear()
    await emulator.drop_watches()
    for i in range(3):
        await emulator.edit_object(CONFIGMAPS, "team", "demo-a", {"data": {"k": str(i)}})
    await eventually(
        lambda: [o["data"] for o in informer.stores["ConfigMap"].get(("team", "demo"), ())] == [{"k": "2"}]
    )
    assert calls(emulator, "list") >= 1


async def test_cached_children_are_slim(emulator, informers) -> None:
    """A Deployment is cached without its managedFields' field sets (most of its size): only who owns
    spec.replicas is kept, all the replicas hand-over reads."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "demo",
            "namespace": "team",
            "labels": {**owned_labels(), INSTANCE_LABEL: "demo"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {
                "metadata": {"labels": {"app": "demo"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    await emulator.put_object(DEPLOYMENTS, deployment)
    assert emulator.read(DEPLOYMENTS, "team", "demo")["metadata"]["managedFields"]
    informer, _ = informers(kinds=("Deployment",))
    assert await asyncio.to_thread(informer.wait_synced, 10)
    (cached,) = informer.stores["Deployment"][("team", "demo")]
    for entry in cached["metadata"]["managedFields"]:
        assert entry["fieldsV1"] in ({}, {"f:spec": {"f:replicas": {}}}), entry
    assert cached["spec"]["replicas"] == 2 and cached["kind"] == "Deployment"


async def test_listed_namespaces_are_watched_one_each_and_globs_filter_a_cluster_watch(
    emulator, informers
) -> None:
    for ns in ("team", "team-b", "other"):
        await emulator.put_object(CONFIGMAPS, configmap("demo-a", namespace=ns))
    named, _ = informers(scope=Scope(["team", "other"]))
    globbed, _ = informers(scope=Scope(["team*", "!team-b"]))
    assert await asyncio.to_thread(named.wait_synced, 10)
    assert await asyncio.to_thread(globbed.wait_synced, 10)
    assert sorted(named.stores["ConfigMap"]) == [("other", "demo"), ("team", "demo")]
    # Listed names: each read is of one namespace (a namespaced Role suffices); globs: of all namespaces.
    reads = [
        r.namespace
        for r in emulator._requests
        if r.resource is not None and r.resource.plural == "configmaps" and r.action is not None
    ]
    assert set(reads) == {None, "other", "team"}
    assert sorted(globbed.stores["ConfigMap"]) == [("team", "demo")]
    assert Scope(["team", "other"]).watched == ("team", "other")
    assert Scope(["team*"]).watched == (None,)
    assert Scope().watched == (None,)


async def test_a_forbidden_list_holds_the_sync_and_says_which_kind_until_it_is_granted(
    emulator, informers, caplog
) -> None:
    """RBAC missing for one kind: the first pass must not run on a partial cache; the log and the retry
    message name what is missing; once granted (here: the faults run out), the kind is listed."""
    emulator.faults.append(Fault(verb="list", plural="configmaps", status=403, times=2))
    informer, _ = informers(kinds=("ConfigMap", "Service"))
    assert not await asyncio.to_thread(informer.wait_synced, 0.5)
    assert informer.unsynced() == ["ConfigMap in all namespaces"]
    assert "watch of ConfigMap in * failed (RuntimeError: HTTP 403" in caplog.text
    assert await asyncio.to_thread(informer.wait_synced, 10)
    assert informer.unsynced() == []


async def test_lists_are_read_in_pages(emulator, informers, monkeypatch) -> None:
    """`limit`/`continue` chunks: a restart beside thousands of children decodes one page at a time."""
    from reranker_operator import informer as informer_module

    monkeypatch.setattr(informer_module, "LIST_PAGE_SIZE", 2)
    for i in range(5):
        await emulator.put_object(CONFIGMAPS, configmap(f"demo-{i}"))
    informer, recorder = informers()
    assert await asyncio.to_thread(informer.wait_synced, 10)
    assert names(informer) == [f"demo-{i}" for i in range(5)]
    assert calls(emulator, "list") == 3
    assert len(recorder.events) == 5
    await emulator.edit_object(CONFIGMAPS, "team", "demo-0", {"data": {"k": "after"}})
    await eventually(lambda: ("ConfigMap", "MODIFIED", "demo-0") in recorder.events)
