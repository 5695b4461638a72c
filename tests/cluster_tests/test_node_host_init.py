"""A loopback node's init system, reached the way tools reach a real one: a privileged pod with the node's root
at /host runs `chroot /host systemctl …`. A kubelet restart keeps the node's pods running and is announced by
a "Starting kubelet." event; other units and verbs fail as systemctl fails."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.cluster.fixture import Cluster
from tests.conformance.kube import manifest, pod, sleep_pids
from tests.polling import eventually

pytestmark = [pytest.mark.slow]


def _host_pod(name: str, node: str, command: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "kube-system"},
            "spec": {"nodeName": node, "restartPolicy": "Never", "hostPID": True,
                     "terminationGracePeriodSeconds": 1, "tolerations": [{"operator": "Exists"}],
                     "volumes": [{"name": "host", "hostPath": {"path": "/", "type": "Directory"}}],
                     "containers": [{"name": "c", "image": "busybox", "command": command,
                                     "securityContext": {"privileged": True},
                                     "volumeMounts": [{"name": "host", "mountPath": "/host"}]}]}}


def _finished(cluster: Cluster, name: str) -> tuple[str, int, str]:
    """(phase, exit code, log) once the pod has ended."""
    def ended() -> dict[str, Any] | None:
        obj = json.loads(cluster.kubectl("-n", "kube-system", "get", "pod", name, "-o", "json").stdout)
        return obj if obj["status"].get("phase") in ("Succeeded", "Failed") else None

    obj = eventually(ended, what=f"pod {name} to end", timeout=120)
    code = obj["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
    logs = cluster.kubectl("-n", "kube-system", "logs", name).stdout
    cluster.kubectl("-n", "kube-system", "delete", "pod", name, "--wait=false")
    return obj["status"]["phase"], int(code), logs


def _starts(cluster: Cluster, node: str) -> int:
    out = json.loads(cluster.kubectl("get", "events", "-n", "default", "--field-selector",
                                     f"involvedObject.kind=Node,involvedObject.name={node},reason=Starting",
                                     "-o", "json").stdout)
    return sum(int(e.get("count") or 1) for e in out["items"] if e.get("message") == "Starting kubelet.")


def test_systemctl_restart_kubelet_keeps_the_pods_and_announces_the_new_kubelet(cluster: Cluster) -> None:
    node = cluster.workers[0]
    eventually(lambda: _starts(cluster, node) >= 1, what="the first kubelet's Starting event")
    starts = _starts(cluster, node)
    ns = f"init-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "-f", "-", input=manifest(pod("keeps", ns, command=["sleep", "7401"], nodeName=node)))
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/keeps", "--timeout=60s")
    pid = eventually(lambda: sleep_pids("7401"), what="the pod's process")

    restart = ["chroot", "/host", "systemctl", "restart", "kubelet"]
    cluster.kubectl("create", "-f", "-", input=manifest(_host_pod("restart-kubelet", node, restart)))
    assert _finished(cluster, "restart-kubelet")[:2] == ("Succeeded", 0)
    eventually(lambda: _starts(cluster, node) > starts, what="a new Starting kubelet. event")
    assert sleep_pids("7401") == pid  # the runtime's pod outlived its kubelet
    phase = cluster.kubectl("-n", ns, "get", "pod", "keeps", "-o", "jsonpath={.status.phase}").stdout
    assert phase == "Running"
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


@pytest.mark.parametrize(("command", "code", "text"), [
    (["systemctl", "restart", "containerd"], 5, "Failed to restart containerd.service: Unit containerd.service "
                                                "not found."),
    (["systemctl", "frobnicate", "kubelet"], 1, "Unknown command verb 'frobnicate'."),
    (["systemctl", "is-active", "kubelet"], 0, "active"),
])
def test_systemctl_answers_as_systemctl(cluster: Cluster, command: list[str], code: int, text: str) -> None:
    name = f"systemctl-{uuid.uuid4().hex[:6]}"
    node = cluster.workers[0]
    script = ["sh", "-c", f"chroot /host {' '.join(command)} 2>&1"]
    cluster.kubectl("create", "-f", "-", input=manifest(_host_pod(name, node, script)))
    phase, exit_code, logs = _finished(cluster, name)
    assert (exit_code, logs.strip()) == (code, text)
    assert phase == ("Succeeded" if code == 0 else "Failed")
