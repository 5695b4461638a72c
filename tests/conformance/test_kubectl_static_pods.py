"""The kubelet's static pods, as real kubectl and the node's files show them: every file of a control-plane
node's etc/kubernetes/manifests/ whose name does not start with a dot is a pod; adding, changing and
removing files starts, restarts and stops pods; the mirror pod follows. Any image kind runs, with
hostNetwork and read-write hostPath mounts of the node's directories, also while no API server runs (how
the product's etcd restore will work: it writes its own static pod through a pod, then the kubelet runs it
without the API)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.fixture import Cluster, ClusterFactory
from tests.conformance.kube import get_json, manifest, pod, sleep_pids
from tests.polling import eventually

pytestmark = [pytest.mark.slow]
VERSION = "1.33"


@pytest.fixture(scope="module", params=["3.4", "3.5"])
def cp(request: pytest.FixtureRequest, cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    c = cluster_factory(control_planes=1, workers=1, etcd_version=str(request.param))
    yield c
    # Leave the shared cluster as it was found, also after a failure.
    for name in ("kube-apiserver.yaml", "kube-scheduler.yaml", "kube-controller-manager.yaml"):
        if (c.parked("cp-1") / name).exists():
            c.unpark_manifest("cp-1", name)


def static_pod(name: str, image: str, script: str, *, volumes: dict[str, str], restart: str = "Always",
               namespace: str = "kube-system") -> dict[str, Any]:
    """A static pod as a tool would write it: hostNetwork, hostPath volumes (host path → mount path)."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hostNetwork": True, "restartPolicy": restart, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": ["sh", "-c", script],
                            "volumeMounts": [{"name": f"v{i}", "mountPath": mount}
                                             for i, mount in enumerate(volumes.values())]}],
            "volumes": [{"name": f"v{i}", "hostPath": {"path": host, "type": "DirectoryOrCreate"}}
                        for i, host in enumerate(volumes)],
        },
    }


def write(c: Cluster, node: str, file: str, doc: dict[str, Any]) -> Path:
    path = c.layout.manifests(node) / file
    tmp = path.with_name(f".{file}.tmp")  # a dot file: the kubelet skips it until the rename
    tmp.write_text(yaml.safe_dump(doc))
    tmp.replace(path)
    return path


def mirror(c: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    result = c.kubectl("-n", ns, "get", "pod", name, "-o", "json", check=False, version=VERSION)
    return json.loads(result.stdout) if result.returncode == 0 else None


def api_refused(c: Cluster) -> bool:
    result = c.kubectl("get", "nodes", check=False, version=VERSION)
    return result.returncode == 1 and (f"The connection to the server 127.0.0.1:{c.state['server']['port']} was "
                                       "refused - did you specify the right host or port?") in result.stderr


def test_file_rules_and_the_mirror_pod(cp: Cluster) -> None:
    node = "cp-1"
    out = cp.layout.host_path(node, "/var/lib/dr-probe")
    path = write(cp, node, "dr-probe.yaml", static_pod(
        "dr-probe", "busybox:1.36", "echo one > /data/run-$(date +%s%N); echo started; sleep 3600",
        volumes={"/var/lib/dr-probe": "/data"}))
    write(cp, node, ".hidden.yaml", static_pod("hidden", "busybox", "sleep 3600", volumes={}))
    first = eventually(lambda: (m := mirror(cp, "kube-system", "dr-probe-cp-1")) and
                       m["status"].get("phase") == "Running" and m, what="the mirror pod Running")
    annotations = first["metadata"]["annotations"]
    assert annotations["kubernetes.io/config.source"] == "file"
    assert annotations["kubernetes.io/config.mirror"] == annotations["kubernetes.io/config.hash"]
    assert first["metadata"]["ownerReferences"][0]["kind"] == "Node"
    assert first["spec"]["nodeName"] == node and first["spec"]["hostNetwork"] is True
    assert mirror(cp, "kube-system", "hidden-cp-1") is None
    eventually(lambda: len(list(out.glob("run-*"))) == 1, what="the container's write on the node")
    assert cp.kubectl("-n", "kube-system", "logs", "dr-probe-cp-1", version=VERSION).stdout == "started\n"
    assert cp.kubectl("-n", "kube-system", "exec", "dr-probe-cp-1", "--", "sh", "-c", "cat /data/run-*; hostname",
                      version=VERSION).stdout == "one\ncp-1\n"  # hostNetwork: the node's hostname too

    # A deleted mirror pod comes back (the static pod never stopped).
    cp.kubectl("-n", "kube-system", "delete", "pod", "dr-probe-cp-1", "--wait=false", version=VERSION)
    back = eventually(lambda: (m := mirror(cp, "kube-system", "dr-probe-cp-1")) and
                      m["metadata"]["uid"] != first["metadata"]["uid"] and m, what="the mirror pod recreated")
    assert back["metadata"]["annotations"]["kubernetes.io/config.hash"] == annotations["kubernetes.io/config.hash"]
    assert len(list(out.glob("run-*"))) == 1

    # A changed file is a new pod: stopped, started again, a new config hash.
    write(cp, node, "dr-probe.yaml", static_pod(
        "dr-probe", "busybox:1.36", "echo two > /data/run-$(date +%s%N); echo again; sleep 3600",
        volumes={"/var/lib/dr-probe": "/data"}))
    changed = eventually(lambda: (m := mirror(cp, "kube-system", "dr-probe-cp-1")) and
                         m["metadata"]["annotations"]["kubernetes.io/config.hash"]
                         != annotations["kubernetes.io/config.hash"] and m["status"].get("phase") == "Running"
                         and m, what="the mirror pod of the changed file")
    assert changed["spec"]["containers"][0]["command"][2].startswith("echo two")
    eventually(lambda: len(list(out.glob("run-*"))) == 2, what="the second run")

    # A removed file stops the pod and takes the mirror pod away.
    path.unlink()
    (cp.layout.manifests(node) / ".hidden.yaml").unlink()
    eventually(lambda: mirror(cp, "kube-system", "dr-probe-cp-1") is None, what="the mirror pod to go")


def test_any_image_while_the_api_server_is_down(cp: Cluster) -> None:
    """What the product's restore relies on: with every API server stopped, a static pod written into the
    manifests directory still runs, with the node's directories mounted read-write."""
    node = "cp-1"
    cp.kubectl("create", "-f", "-", version=VERSION, input=manifest(pod("survivor", "default",
                                                                        command=["sleep", "3600"])))
    cp.kubectl("wait", "--for=condition=Ready", "pod/survivor", "--timeout=60s", version=VERSION)
    cp.park_manifest(node, "kube-apiserver.yaml")
    eventually(lambda: api_refused(cp), what="connections to the API endpoint to be refused")
    try:
        work = cp.layout.host_path(node, "/var/lib/dr-restore")
        # A debian pod moves the scheduler's manifest aside through its /etc/kubernetes mount.
        write(cp, node, "dr-restore.yaml", static_pod(
            "dr-restore", "debian:12",
            "mkdir -p /host-k8s/dr-stopped && mv /host-k8s/manifests/kube-scheduler.yaml /host-k8s/dr-stopped/ "
            "&& ls /var/lib/etcd > /work/etcd-dir && echo done > /work/status",
            volumes={"/etc/kubernetes": "/host-k8s", "/var/lib/etcd": "/var/lib/etcd",
                     "/var/lib/dr-restore": "/work"}, restart="Never"))
        # The etcd image (bash-static as /bin/sh, etcdctl) runs as well.
        write(cp, node, "dr-etcdctl.yaml", static_pod(
            "dr-etcdctl", cp.etcd.image, "etcdctl version > /work/etcdctl-version",
            volumes={"/var/lib/dr-restore": "/work"}, restart="Never"))
        eventually(lambda: (work / "status").exists() and (work / "etcdctl-version").exists(),
                   what="both static pods to run without an API server")
        assert (work / "status").read_text() == "done\n"
        assert (work / "etcd-dir").read_text() == "member\n"
        assert f"etcdctl version: {cp.etcd.version}" in (work / "etcdctl-version").read_text()
        assert (cp.layout.host_path(node, "/etc/kubernetes/dr-stopped/kube-scheduler.yaml")).exists()
        assert not (cp.layout.manifests(node) / "kube-scheduler.yaml").exists()
    finally:
        cp.unpark_manifest(node, "kube-apiserver.yaml")
    eventually(lambda: not api_refused(cp), what="the API server to serve again")
    # The mirror pods show what ran meanwhile; the pod from before the outage ran through it.
    done = eventually(lambda: (m := mirror(cp, "kube-system", "dr-restore-cp-1")) and
                      m["status"].get("phase") == "Succeeded" and m, what="the restore pod's mirror Succeeded")
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert eventually(lambda: (m := mirror(cp, "kube-system", "dr-etcdctl-cp-1")) and
                      m["status"].get("phase") == "Succeeded", what="the etcdctl pod's mirror Succeeded")
    assert mirror(cp, "kube-system", "kube-scheduler-cp-1") is None  # its manifest is gone
    survivor = get_json(cp, "pod", "survivor", version=VERSION)
    assert survivor["status"]["phase"] == "Running"
    assert survivor["status"]["containerStatuses"][0]["restartCount"] == 0
    # Clean up: the scheduler's manifest back, our static pods away.
    cp.layout.host_path(node, "/etc/kubernetes/dr-stopped/kube-scheduler.yaml").replace(
        cp.layout.manifests(node) / "kube-scheduler.yaml")
    for file in ("dr-restore.yaml", "dr-etcdctl.yaml"):
        (cp.layout.manifests(node) / file).unlink()
    eventually(lambda: mirror(cp, "kube-system", "kube-scheduler-cp-1") is not None, what="the scheduler back")
    cp.kubectl("delete", "pod", "survivor", "--wait=false", version=VERSION)


def test_scheduler_and_controllers_pause_without_their_manifests(cp: Cluster) -> None:
    cp.park_manifest("cp-1", "kube-scheduler.yaml")
    cp.park_manifest("cp-1", "kube-controller-manager.yaml")
    try:
        # The kubelet stops a static pod and deletes its mirror pod in one pass: once both mirror pods are
        # gone, the scheduler and the controllers have stopped.
        eventually(lambda: mirror(cp, "kube-system", "kube-scheduler-cp-1") is None
                   and mirror(cp, "kube-system", "kube-controller-manager-cp-1") is None,
                   what="the scheduler's and controller-manager's mirror pods to go")
        cp.kubectl("create", "-f", "-", version=VERSION, input=manifest(
            pod("unscheduled", "default", command=["sleep", "3600"]),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "paused", "namespace": "default"},
             "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "paused"}},
                      "template": {"metadata": {"labels": {"app": "paused"}}, "spec": {
                          "terminationGracePeriodSeconds": 1,
                          "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}}}}))
        time.sleep(3)  # nothing may happen meanwhile: no binding, no ReplicaSet
        assert "nodeName" not in get_json(cp, "pod", "unscheduled", version=VERSION)["spec"]
        assert get_json(cp, "replicasets", "-l", "app=paused", version=VERSION)["items"] == []
    finally:
        cp.unpark_manifest("cp-1", "kube-scheduler.yaml")
        cp.unpark_manifest("cp-1", "kube-controller-manager.yaml")
    cp.kubectl("wait", "--for=condition=Ready", "pod/unscheduled", "--timeout=60s", version=VERSION)
    cp.kubectl("rollout", "status", "deployment/paused", "--timeout=60s", version=VERSION)
    cp.kubectl("delete", "pod/unscheduled", "deployment/paused", "--wait=false", version=VERSION)


def test_etcd_down_under_a_serving_api(cp: Cluster) -> None:
    cp.park_manifest("cp-1", "etcd.yaml")
    try:
        eventually(lambda: cp.kubectl("get", "--raw", "/readyz", check=False, version=VERSION).returncode != 0,
                   what="/readyz to fail")
        verbose = cp.kubectl("get", "--raw", "/readyz?verbose", check=False, version=VERSION)
        assert "[-]etcd failed: reason withheld" in verbose.stdout + verbose.stderr
        assert "[+]ping ok" in verbose.stdout + verbose.stderr
        result = cp.kubectl("get", "pods", check=False, version=VERSION)
        assert result.returncode == 1
        assert result.stderr.startswith("Error from server (Timeout):"), result.stderr
    finally:
        cp.unpark_manifest("cp-1", "etcd.yaml")
    eventually(lambda: cp.kubectl("get", "--raw", "/readyz", check=False, version=VERSION).returncode == 0,
               what="/readyz to pass again")
    assert cp.kubectl("get", "pods", version=VERSION).returncode == 0


def test_relist_after_the_api_returns(cp: Cluster) -> None:
    """What the API lost while it was away (here: removed from etcd directly, as a restore would) is
    settled by the kubelets' relist: the pod they still run is killed, the lost Node is registered again."""
    cp.kubectl("create", "-f", "-", version=VERSION, input=manifest(pod("forgotten", "default",
                                                                        command=["sleep", "3603"])))
    cp.kubectl("wait", "--for=condition=Ready", "pod/forgotten", "--timeout=60s", version=VERSION)
    # The loopback kubelet reports Ready once it started the sandbox, a moment before the sandbox runs
    # `sleep`: wait for the process itself.
    eventually(lambda: sleep_pids("3603", of=cp), timeout=30, what="the pod's process to run")
    cp.park_manifest("cp-1", "kube-apiserver.yaml")
    try:
        eventually(lambda: api_refused(cp), what="the API to go away")
        for key in ("/registry/pods/default/forgotten", "/registry/minions/worker-1"):
            _etcdctl(cp, "del", key)
        assert sleep_pids("3603", of=cp)  # no API: nobody tells the kubelet
    finally:
        cp.unpark_manifest("cp-1", "kube-apiserver.yaml")
    eventually(lambda: not sleep_pids("3603", of=cp), what="the kubelet to kill the pod the API no longer has",
               explain=lambda: _server_log(cp, ("kube-apiserver:", "node worker-1:")))
    node = eventually(lambda: (r := cp.kubectl("get", "node", "worker-1", "-o", "json", check=False,
                                               version=VERSION)).returncode == 0 and json.loads(r.stdout),
                      what="worker-1 registered again")
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "worker-1"
    cp.kubectl("wait", "--for=condition=Ready", "node/cp-1", "--timeout=30s", version=VERSION)


def _server_log(c: Cluster, markers: tuple[str, ...], lines: int = 40) -> str:
    """The server log's last lines about the API server's comings and goings and the kubelet's relists: what
    to read first when a relist did not kill the pod in time."""
    text = (c.layout.logs / "server.log").read_text(errors="replace").splitlines()
    return "\n".join([line for line in text if any(m in line for m in markers)][-lines:])


def _etcdctl(c: Cluster, *args: str) -> str:
    import os
    import subprocess

    pki = c.layout.etcd_pki("cp-1")
    result = subprocess.run([str(c.etcd.etcdctl), f"--endpoints={c.members[0].client_url}",
                             f"--cacert={pki / 'ca.crt'}", f"--cert={pki / 'healthcheck-client.crt'}",
                             f"--key={pki / 'healthcheck-client.key'}", *args],
                            capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout
