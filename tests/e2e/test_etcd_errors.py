"""Each failure of `kubectl dr etcd status|snapshot`: a clear message, exit 1, no pod left behind.

They change the shared one-control-plane cluster (certificates, labels, policy, manifests) and put it
back in `finally`."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cli_runner import clean_env, dr
from tests.cluster.control.pki import issue, new_ca, write_pair
from tests.cluster.fixture import Cluster
from tests.e2e.test_etcd_snapshot import leftover_pods, member_endpoints, run_dr
from tests.polling import eventually


def failed(result: object, *needles: str) -> str:
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    for needle in needles:
        assert needle in stderr, stderr
    return stderr


@pytest.fixture
def no_leftovers(cluster: Cluster) -> Iterator[None]:
    yield
    assert leftover_pods(cluster) == []


def test_member_refuses_client_certificate(cluster: Cluster, tmp_path: Path, no_leftovers: None) -> None:
    pki = cluster.layout.etcd_pki("cp-1")
    saved = tmp_path / "saved"
    saved.mkdir()
    for name in ("healthcheck-client.crt", "healthcheck-client.key"):
        shutil.copy2(pki / name, saved / name)
    write_pair(pki, "healthcheck-client", issue(new_ca("someone-else"), "kube-etcd-healthcheck-client", client=True))
    try:
        failed(run_dr(cluster, tmp_path, "etcd", "snapshot"),
               "error: the etcd member on node cp-1", "refused the client certificate")
        failed(run_dr(cluster, tmp_path, "etcd", "status"), "refused the client certificate")
        # Direct mode says so too, from gRPC's words.
        failed(run_dr(cluster, tmp_path, "etcd", "status", "--endpoints", member_endpoints(cluster)[0],
                      "--cacert", str(pki / "ca.crt"), "--cert", str(pki / "healthcheck-client.crt"),
                      "--key", str(pki / "healthcheck-client.key"), subprocess=False),
               "no etcd endpoint answered", "refused the client certificate")
    finally:
        for name in ("healthcheck-client.crt", "healthcheck-client.key"):
            shutil.copy2(saved / name, pki / name)
    assert not list(tmp_path.glob("20*")), "nothing may be committed"


def test_missing_certificate_on_only_member(cluster: Cluster, tmp_path: Path, no_leftovers: None) -> None:
    key = cluster.layout.etcd_pki("cp-1") / "healthcheck-client.key"
    key.rename(key.with_suffix(".hidden"))
    try:
        failed(run_dr(cluster, tmp_path, "etcd", "snapshot"),
               "error: certificate file /etc/kubernetes/pki/etcd/healthcheck-client.key is missing on node cp-1",
               'hostPath volume "etcd-certs"')
    finally:
        key.with_suffix(".hidden").rename(key)


def test_helper_image_that_cannot_start(cluster: Cluster, tmp_path: Path, no_leftovers: None) -> None:
    failed(run_dr(cluster, tmp_path, "etcd", "snapshot", "--helper-image", "registry.invalid/nope:1"),
           'image "registry.invalid/nope:1" cannot be pulled')


def test_pod_security_forbids_the_pod(cluster: Cluster, tmp_path: Path, no_leftovers: None) -> None:
    label = "pod-security.kubernetes.io/enforce"
    cluster.kubectl("label", "namespace", "kube-system", f"{label}=baseline", "--overwrite")
    try:
        failed(run_dr(cluster, tmp_path, "etcd", "snapshot"),
               "Error from server (Forbidden)", "violates PodSecurity", 'enforces the Pod Security level "baseline"')
        failed(run_dr(cluster, tmp_path, "etcd", "status"), "violates PodSecurity")
    finally:
        cluster.kubectl("label", "namespace", "kube-system", f"{label}-")


def test_rbac_forbidden(cluster: Cluster, tmp_path: Path, no_leftovers: None) -> None:
    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_REPO": str(tmp_path)})
    limited = ["--context", "loopback-limited"]
    # Refused before anything is made (no lease, no pod): in-process; the last run below takes the lease first.
    failed(dr(*limited, "etcd", "snapshot", env=env),
           "Error from server (Forbidden)", "needs to list pods in kube-system")
    original = yaml.safe_load(cluster.layout.rbac_policy.read_text())
    policy = json.loads(json.dumps(original))
    policy["users"]["dr-limited"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"],
                                          "namespaces": ["kube-system"]})
    cluster.write_policy(policy)
    try:
        failed(dr(*limited, "etcd", "snapshot", env=env),
               "Error from server (Forbidden)", 'cannot get resource "leases"',
               "it needs get, create, update and delete on leases (coordination.k8s.io) there")
        policy["users"]["dr-limited"].append({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                              "verbs": ["*"], "namespaces": ["kube-system"]})
        cluster.write_policy(policy)
        failed(dr(*limited, "etcd", "snapshot", env=env, subprocess=True),
               "Error from server (Forbidden)",
               "kubectl dr needs to create pods (and pods/exec) in namespace kube-system")
    finally:
        cluster.write_policy(original)


def test_no_etcd_static_pods_then_no_control_plane(cluster: Cluster, tmp_path: Path, no_leftovers: None) -> None:
    manifest = cluster.layout.manifests("cp-1") / "etcd.yaml"
    original = manifest.read_text()
    role = "node-role.kubernetes.io/control-plane"
    # The only member keeps running (the API needs it), but no longer as a kubeadm etcd static pod: the
    # kubelet restarts it under another name and deletes the etcd-cp-1 mirror pod, as for external etcd.
    doc = yaml.safe_load(original)
    doc["metadata"]["name"], doc["metadata"]["labels"] = "external-etcd", {"app": "external-etcd"}
    manifest.write_text(yaml.safe_dump(doc))
    try:
        eventually(lambda: cluster.kubectl("-n", "kube-system", "get", "pod", "external-etcd-cp-1",
                                           check=False).returncode == 0, what="the relabelled etcd to come back")
        failed(run_dr(cluster, tmp_path, "etcd", "snapshot"),
               "control-plane nodes cp-1 exist but no etcd static pods in kube-system", "external etcd",
               "--endpoints https://ETCD_HOST:2379")
        cluster.kubectl("label", "node", "cp-1", f"{role}-")
        try:
            failed(run_dr(cluster, tmp_path, "etcd", "status", subprocess=False),
                   "no control-plane nodes are visible", "managed Kubernetes service", "--endpoints")
        finally:
            cluster.kubectl("label", "node", "cp-1", f"{role}=")
    finally:
        manifest.write_text(original)
        eventually(lambda: cluster.kubectl("-n", "kube-system", "get", "pod", "etcd-cp-1",
                                           check=False).returncode == 0, what="mirror pod etcd-cp-1 to come back")


def test_flags_and_files(tmp_path: Path) -> None:
    env = clean_env({"KUBECTL_DR_REPO": str(tmp_path)})
    usage = dr("etcd", "snapshot", "--endpoints", "https://127.0.0.1:1", "--cert", "x.crt", env=env)
    assert usage.returncode == 2 and "--cert and --key go together" in usage.stderr
    down = dr("etcd", "snapshot", "--endpoints", "http://127.0.0.1:1", env=env)
    failed(down, "etcd at http://127.0.0.1:1: UNAVAILABLE")
    junk = tmp_path / "junk.db"
    junk.write_bytes(secrets.token_bytes(4096 + 32))
    failed(dr("etcd", "verify", str(junk), env=env), "not an etcd snapshot")
    assert os.listdir(tmp_path) == ["junk.db"]


def _save_of(cluster: Cluster) -> tuple[int, int] | None:
    """The pid of this cluster's `etcdctl snapshot save` (a pod process: it descends from the cluster's server
    process) and the size of the part file it is writing, once it has one."""
    server = int(cluster.state["server"]["pid"])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not cmd[0].endswith(b"etcdctl") or b"snapshot" not in cmd or b"save" not in cmd:
            continue
        ancestor, depth = int(pid), 0
        while ancestor not in (server, 0, 1) and depth < 64:
            try:
                parent = Path(f"/proc/{ancestor}/stat").read_text().rsplit(")", 1)[1].split()[1]
                ancestor, depth = int(parent), depth + 1
            except (OSError, ValueError, IndexError):
                break
        if ancestor != server:
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("etcd.db.part"):
                    return int(pid), os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            continue
    return None


def test_a_save_that_dies_midway_keeps_nothing(cluster: Cluster, tmp_path: Path, no_leftovers: None) -> None:
    """etcdctl killed while it writes the part file the pod is already streaming (an OOM kill, say): the client
    sees the save container fail in the pod's status, stops the stream, keeps no backup and says why. (The pod
    could not tell: the part file stays and no final file comes.)"""
    import signal
    import subprocess

    from tests.cli_runner import executable
    from tests.e2e.test_etcd_snapshot import certs, env_for, etcdctl
    from tests.unit.etcd_scratch import ETCDCTL

    prefix = f"/dr-test/midway-{secrets.token_hex(4)}/"
    ca, cert, key = certs(cluster, cluster.control_planes[0])
    put = [ETCDCTL, f"--endpoints={member_endpoints(cluster)[0]}", f"--cacert={ca}", f"--cert={cert}", f"--key={key}",
           "put"]
    for i in range(24):  # ~24 MiB: the save takes long enough to be caught writing (values on stdin: 1 MiB each)
        subprocess.run([*put, f"{prefix}{i:03d}"], input=secrets.token_hex(512 * 1024).encode(), check=True,
                       capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=60)
    repo = tmp_path / "repo"
    try:
        proc = subprocess.Popen([executable(), "etcd", "snapshot"], env=env_for(cluster, repo),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            def writing() -> tuple[int, int] | None:
                found = _save_of(cluster)
                return found if found is not None and found[1] > 0 else None

            pid, _ = eventually(writing, 60, "etcdctl to write the snapshot's part file", interval=0.005)
            os.kill(pid, signal.SIGKILL)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 1, stderr
        assert stdout == ""
        assert 'container "snapshot" failed with exit code' in stderr, stderr
        assert not list(repo.glob("20*")), "nothing may be committed"
    finally:
        etcdctl(cluster, "del", "--prefix", prefix)
        revision = json.loads(etcdctl(cluster, "endpoint", "status", "-w", "json").stdout)[0]["Status"]["header"][
            "revision"]
        etcdctl(cluster, "compact", str(revision))
        etcdctl(cluster, "defrag", "--command-timeout=60s")
