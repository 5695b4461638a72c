"""The etcd restore's node pods on a three-control-plane loopback cluster: created on every node before the
first is waited for, and gone again when one of them cannot start."""

from __future__ import annotations

import dataclasses

import pytest

from kubectl_dr import cleanup
from kubectl_dr.errors import DrError
from kubectl_dr.etcd.restore import targets
from kubectl_dr.etcd.restore.nodepod import NodePods, delete_all
from kubectl_dr.kube import kubeconfig
from kubectl_dr.kube.client import Kube, connect
from kubectl_dr.runs.run import RUN_ID_LABEL, Run
from kubectl_dr.ui.console import TerminalConsole
from tests.cluster.fixture import Cluster, ClusterFactory

NAMESPACE = "kube-system"


@pytest.fixture(scope="module")
def three(cluster_factory: ClusterFactory) -> Cluster:
    return cluster_factory(control_planes=3)


def _kube(cluster: Cluster) -> Kube:
    return connect(kubeconfig.resolve(kubeconfig.Overrides(kubeconfig=str(cluster.kubeconfig))))


def _pods_of(kube: Kube, run: Run) -> list[str]:
    listed = kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=f"{RUN_ID_LABEL}={run.id}")
    return sorted(p["metadata"]["name"] for p in listed.get("items") or [])


def test_every_node_gets_its_pod_and_they_go_together(three: Cluster) -> None:
    kube = _kube(three)
    found = targets.targets(kube)
    run = Run("test node pods")
    with cleanup.scope(lambda _m: None, lambda _f: None) as stack:
        started = NodePods(kube, NAMESPACE, "busybox", TerminalConsole(yes=True)).start(found, run, "test")
        assert [n.target.node for n in started] == [t.node for t in found]
        for n in started:  # each pod runs on its own target's node
            assert n.pod.get()["spec"]["nodeName"] == n.target.node
            assert n.sh("echo ok").strip() == "ok"
        delete_all(started)
        assert _pods_of(kube, run) == []
        assert stack.steps == []  # each pod's cleanup step went with it


def test_a_pod_that_cannot_start_takes_the_others_with_it(three: Cluster) -> None:
    """The last node's pod cannot mount its data dir's parent (missing there): the error names that node, and
    the pods already running on the other nodes are gone when the error arrives, not only at the command's exit."""
    kube = _kube(three)
    found = targets.targets(kube)
    assert len(found) == 3
    broken = dataclasses.replace(found[-1], data_dir="/no-such-parent/etcd")
    run = Run("test node pods")
    with cleanup.scope(lambda _m: None, lambda _f: None) as stack:
        with pytest.raises(DrError) as failed:
            NodePods(kube, NAMESPACE, "busybox", TerminalConsole(yes=True)).start([*found[:-1], broken], run, "test")
        assert broken.node in str(failed.value), failed.value
        assert _pods_of(kube, run) == []
        assert stack.steps == []
