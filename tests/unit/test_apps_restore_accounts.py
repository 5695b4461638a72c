"""Which pods of a namespace restore wait for a service account the same restore creates."""

from __future__ import annotations

from typing import Any

from kubectl_dr.apps.resources import ResourceType
from kubectl_dr.apps.restore import Step, _accounts_pods_need, _checkable_now

POD = ResourceType("", "v1", "pods", "Pod", True, frozenset({"create", "list"}))
SA = ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, frozenset({"create", "list"}))


def pod(name: str, account: str | None, action: str = "create") -> Step:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if account:
        spec["serviceAccountName"] = account
    return Step({"kind": "Pod", "metadata": {"name": name, "namespace": "shop"}, "spec": spec}, POD, action)


def account(name: str, action: str = "create") -> Step:
    return Step({"kind": "ServiceAccount", "metadata": {"name": name, "namespace": "shop"}}, SA, action)


def test_only_accounts_created_by_the_restore_and_run_as_by_its_pods_are_needed() -> None:
    steps = [account("runner"), account("idle"), account("kept", "skip"), pod("a", "runner"), pod("b", "kept"),
             pod("c", None)]
    assert _accounts_pods_need(steps) == {("shop", "runner")}


def test_a_pod_waits_for_its_account_and_others_do_not() -> None:
    pending = {("shop", "runner")}
    assert not _checkable_now(pod("a", "runner"), set(), set(), pending)
    assert _checkable_now(pod("c", None), set(), set(), pending)
    assert _checkable_now(account("runner"), set(), set(), pending)
