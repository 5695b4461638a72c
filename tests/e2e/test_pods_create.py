"""Creating a helper pod when the API server refuses the connection: nothing to clean up afterwards."""

from __future__ import annotations

import pytest

from kubectl_dr import cleanup
from kubectl_dr.errors import ServerUnreachable
from kubectl_dr.kube import pods
from tests.cluster.fixture import Cluster
from tests.e2e.test_exec_layer import busybox_pod, kube_for
from tests.polling import eventually


def _answers(cluster: Cluster) -> bool:
    return cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode == 0


def test_a_refused_connection_registers_no_deletion(cluster: Cluster) -> None:
    kube = kube_for(cluster)
    node = cluster.control_planes[0]
    stack = cleanup.current()
    before = list(stack.steps)
    cluster.park_manifest(node, "kube-apiserver.yaml")
    try:
        eventually(lambda: not _answers(cluster), what="the API server stopped")
        with pytest.raises(ServerUnreachable):
            pods.create(kube, busybox_pod("default"), what="test")
        # The request never reached a server: no pod exists, so no "delete it yourself" at exit.
        assert stack.steps == before
    finally:
        cluster.unpark_manifest(node, "kube-apiserver.yaml")
        eventually(lambda: _answers(cluster), what="the API server back", timeout=120)
