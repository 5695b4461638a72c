"""Failures of the cluster and of this machine: a node that is not ready, Pod Security, a full local disk,
and kubectl dr's own pods left by a killed run. Each ends clearly (exit 1) or adapts, and leaves nothing
behind: no pod, no partial backup, the workloads as they were."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli_runner import clean_env, dr, executable
from tests.datasets import make_claim, managed_pods, new_namespace, snapshot, volume_dir
from tests.e2e.test_pvc_consumers import deployment, replicas_and_records, running_pods
from tests.e2e.test_pvc_security_protocols import RESTRICTED_APP, RESTRICTED_CONTAINER, _traversable
from tests.polling import eventually


def app_running(cluster: Any, ns: str, security: dict[str, Any] | None = None,
                container: dict[str, Any] | None = None) -> str:
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, security or {}, container))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    return running_pods(cluster, ns, "app=app")[0]


def repo_entries(repo: Path) -> list[str]:
    return sorted(p.name for p in repo.iterdir()) if repo.exists() else []


# --------------------------------------------------------------------------- node not ready

def _ready(cluster: Any, node: str) -> str:
    return str(cluster.kubectl("get", "node", node, "-o",
                               'jsonpath={.status.conditions[?(@.type=="Ready")].status}').stdout)


def _heartbeat(cluster: Any, node: str) -> str:
    return str(cluster.kubectl("get", "node", node, "-o",
                               'jsonpath={.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}').stdout)


@contextmanager
def node_not_ready(cluster: Any, node: str) -> Iterator[None]:
    """Ready=Unknown, as the node lifecycle controller sets it when a kubelet stops posting its status.

    The loopback kubelet keeps posting Ready=True every 10 s, so right after one of its heartbeats we
    patch the condition through the status subresource, and keep patching it while the block runs.
    """
    patch = json.dumps({"status": {"conditions": [{
        "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status."}]}})
    first = _heartbeat(cluster, node)
    eventually(lambda: _heartbeat(cluster, node) != first, timeout=30, what="a kubelet heartbeat")
    stop = threading.Event()

    def keep_down() -> None:
        while not stop.is_set():
            cluster.kubectl("patch", "node", node, "--subresource=status", "-p", patch, check=False)
            stop.wait(0.2)

    cluster.kubectl("patch", "node", node, "--subresource=status", "-p", patch)
    keeper = threading.Thread(target=keep_down, daemon=True)
    keeper.start()
    try:
        assert _ready(cluster, node) == "Unknown"
        yield
    finally:
        stop.set()
        keeper.join()
        eventually(lambda: _ready(cluster, node) == "True", timeout=60, what=f"node {node} ready again")


def test_node_not_ready(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "nrdy")
    make_claim(cluster, ns)
    app_pod = app_running(cluster, ns)
    node = cluster.kubectl("get", "pod", "-n", ns, app_pod, "-o", "jsonpath={.spec.nodeName}").stdout
    vol = volume_dir(cluster, ns)
    (vol / "file").write_text("data")
    repo = tmp_path / "repo"
    good = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster, subprocess=True)
    assert good.returncode == 0, good.stderr
    (vol / "file").write_text("changed")
    before = snapshot(vol)

    with node_not_ready(cluster, node):
        # The RWO backup must read on the consumer's node; the restore must stop a pod there.
        backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), cluster=cluster, subprocess=True)
        restore = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", "--yes",
                     cluster=cluster, subprocess=True)
        quiesced = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "--quiesce", cluster=cluster,
                      subprocess=True)
    for result in (backup, restore, quiesced):
        assert result.returncode == 1, result.stderr
        assert f"node {node} is not ready (Ready=Unknown: Kubelet stopped posting node status.)" in result.stderr
        assert "Deployment/app runs there" in result.stderr and "Nothing was changed" in result.stderr
        assert "Traceback" not in result.stderr
    assert "cannot back up" in backup.stderr and "cannot restore" in restore.stderr
    assert managed_pods(cluster, ns) == []
    assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
    assert running_pods(cluster, ns, "app=app") == [app_pod]
    assert snapshot(vol) == before
    assert repo_entries(repo) == [json.loads(good.stdout)["id"]]


# --------------------------------------------------------------------------- Pod Security

def test_invalid_enforce_level_is_restricted_and_the_pod_complies(cluster: Any, tmp_path: Path) -> None:
    """Admission enforces "restricted" for a level it does not know ("Restricted" is not "restricted")."""
    _traversable(cluster.dir)
    ns = new_namespace(cluster, "psainv", {"pod-security.kubernetes.io/enforce": "Restricted"})
    make_claim(cluster, ns)
    app_running(cluster, ns, RESTRICTED_APP, RESTRICTED_CONTAINER)
    vol = volume_dir(cluster, ns)
    (vol / "state").write_text("s")
    os.chown(vol / "state", 1000, 2000)
    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(tmp_path / "repo"), "-o", "json", cluster=cluster,
                subprocess=True)
    assert backup.returncode == 0, backup.stderr
    used = json.loads(backup.stdout)["details"]["rescuePod"]["securityContext"]
    assert used["root"] is False and used["podSecurityLevel"] == "restricted" and used["pod"]["runAsUser"] == 1000
    assert "rejected" not in backup.stderr  # planned right the first time, not by trial and error
    assert managed_pods(cluster, ns) == []


@contextmanager
def limited_user_in(cluster: Any, ns: str) -> Iterator[None]:
    """The limited user may do the job in `ns` but may not read the Namespace object (nor nodes)."""
    original = cluster.layout.rbac_policy.read_text()
    policy = yaml.safe_load(original) or {}
    users = policy.setdefault("users", {})
    user = next(iter(users)) if users else "dr-limited"
    users[user] = [
        *(users.get(user) or []),
        {"apiGroups": [""], "namespaces": [ns], "verbs": ["*"],
         "resources": ["pods", "pods/exec", "pods/log", "persistentvolumeclaims", "events", "replicationcontrollers"]},
        {"apiGroups": ["apps", "batch", "autoscaling"], "namespaces": [ns], "verbs": ["*"], "resources": ["*"]},
        {"apiGroups": ["coordination.k8s.io"], "namespaces": [ns], "verbs": ["*"], "resources": ["leases"]},
    ]
    cluster.write_policy(policy)
    try:
        yield
    finally:
        cluster.write_policy(yaml.safe_load(original))


def test_unreadable_restricted_namespace_rejection_then_compliant_pod(cluster: Any, tmp_path: Path) -> None:
    """Not knowing the level (no RBAC on namespaces), the first root pod is rejected; the retry meets
    "restricted" and says what that costs. Nothing of the rejected attempt remains."""
    _traversable(cluster.dir)
    ns = new_namespace(cluster, "psaunk", {"pod-security.kubernetes.io/enforce": "restricted"})
    make_claim(cluster, ns)
    app_running(cluster, ns, RESTRICTED_APP, RESTRICTED_CONTAINER)
    vol = volume_dir(cluster, ns)
    (vol / "state").write_bytes(b"v1")
    os.chown(vol / "state", 1000, 2000)
    repo = tmp_path / "repo"
    with limited_user_in(cluster, ns):
        ns_read = cluster.kubectl("get", "namespace", ns, limited=True, check=False)
        assert ns_read.returncode != 0 and "Forbidden" in ns_read.stderr
        backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json",
                    context="loopback-limited", cluster=cluster, subprocess=True)
        assert backup.returncode == 0, backup.stderr
        assert f'namespace {ns} enforces Pod Security "restricted"' in backup.stderr
        assert "trying again with one that meets" in backup.stderr and "uid 1000" in backup.stderr
        used = json.loads(backup.stdout)["details"]["rescuePod"]["securityContext"]
        assert used["root"] is False and used["podSecurityLevel"] == "restricted"
        assert managed_pods(cluster, ns) == []

        (vol / "state").write_bytes(b"v2")
        restore = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", "--yes",
                     context="loopback-limited", cluster=cluster, subprocess=True)
        assert restore.returncode == 0, restore.stderr
        assert "instead of their archived owners" in restore.stderr  # the cost of the non-root restore, said
        # kube-system is not readable either: the backup records no cluster, and `latest` says what it took.
        assert "this backup records no cluster" in backup.stderr
        assert "`latest` is the newest backup taken through https://127.0.0.1:" in restore.stderr
    assert (vol / "state").read_bytes() == b"v1"
    assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
    assert managed_pods(cluster, ns) == []


# --------------------------------------------------------------------------- local disk full

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    # CI runs as root, as the project's tests require: a tmpfs that cannot be mounted is a failure.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_local_disk_fills_up_during_the_backup(cluster: Any, small_disk: Path) -> None:
    """The repository had room when the backup began (the check passes), and something else takes it
    while the archive streams in: the backup fails saying so, keeps nothing, and starts the app again."""
    from tests.e2e.test_pvc_consumers import _wait_mid_transfer

    ns = new_namespace(cluster, "full")
    make_claim(cluster, ns)
    app_running(cluster, ns)
    vol = volume_dir(cluster, ns)
    (vol / "big").write_bytes(os.urandom(96 << 20))
    repo = small_disk / "repo"
    filler = small_disk / "filler"
    for extra in ([], ["--quiesce"]):
        env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_PROGRESS_INTERVAL": "0"})
        proc = subprocess.Popen([executable(), "pvc", "backup", "data", "-n", ns, "--repo", str(repo), *extra],
                                env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        seen = _wait_mid_transfer(proc, ns, "backup")
        with open(filler, "wb", buffering=0) as f:  # another writer takes what is left
            block = b"\0" * (1 << 20)
            try:
                while True:
                    f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        _, rest = proc.communicate(timeout=180)
        stderr = "".join(seen) + rest
        assert proc.returncode == 1, stderr
        assert f"no space left on the device holding {repo}" in stderr, stderr
        assert "the incomplete backup was removed" in stderr and "Traceback" not in stderr
        assert repo_entries(repo) == []  # no .tmp-… directory, no backup
        assert managed_pods(cluster, ns) == []
        assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
        filler.unlink()
    assert os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize > 180 << 20  # the space came back


# --------------------------------------------------------------------------- our own pods are not consumers

def _leave_rescue_pod(cluster: Any, ns: str, *, kill: bool) -> tuple[subprocess.Popen[str], str]:
    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig)})
    proc = subprocess.Popen([executable(), "pvc", "rescue", "data", "-n", ns, "--read-only", "--", "sleep", "600"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    eventually(lambda: managed_pods(cluster, ns) != [] and cluster.kubectl(
        "get", "pod", "-n", ns, managed_pods(cluster, ns)[0], "-o", "jsonpath={.status.phase}").stdout == "Running",
        timeout=120, what="the rescue pod running")
    pod = managed_pods(cluster, ns)[0]
    time.sleep(1)  # the exec has started
    if kill:
        proc.send_signal(signal.SIGKILL)  # no cleanup runs: the pod stays
        proc.wait(30)
    return proc, pod


def test_leftover_rescue_pod_of_a_killed_run_is_removed_never_a_consumer(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "left")
    make_claim(cluster, ns)
    app_running(cluster, ns)
    (volume_dir(cluster, ns) / "file").write_text("data")
    _, leftover = _leave_rescue_pod(cluster, ns, kill=True)
    assert managed_pods(cluster, ns) == [leftover]
    repo = tmp_path / "repo"

    # The killed run's lease is dead (its process is gone), so its pod is a leftover: removed, never
    # taken for a consumer to stop, and the app keeps running.
    start = time.monotonic()
    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    assert time.monotonic() - start < 120
    assert json.loads(backup.stdout)["source"]["consumers"] == ["Deployment/app"]
    assert f"deleting pod {ns}/{leftover} left behind by run " in backup.stderr
    assert "whose lease expired" in backup.stderr
    assert managed_pods(cluster, ns) == []
    assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})


def test_rescue_pod_of_a_live_run_is_not_taken_away(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "live")
    make_claim(cluster, ns)
    app_running(cluster, ns)
    proc, live = _leave_rescue_pod(cluster, ns, kill=False)
    try:
        result = dr("pvc", "backup", "data", "-n", ns, "--repo", str(tmp_path / "repo"), "--quiesce", cluster=cluster,
                    subprocess=True)
        assert result.returncode == 1, result.stderr
        assert f"another kubectl dr run is working on claim {ns}/data: run " in result.stderr
        # The holder's command is the other run's own, as typed: what its user would recognise.
        assert (f"(pid {proc.pid}) (pvc rescue data -n {ns} --read-only -- sleep 600)" in result.stderr
                and "Nothing was changed" in result.stderr)
        assert managed_pods(cluster, ns) == [live]
        assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert managed_pods(cluster, ns) == []
