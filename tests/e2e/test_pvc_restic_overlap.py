"""The restic backup and restore do their repository side (key, lock, snapshot list, trees) in a thread while
the cluster side (lease, consumers, rescue pod, listing) goes on. A failure on either side must leave what
any failure before the first byte leaves: no pod, the consumers running at their replicas with no records,
the claim's lease released, no restic lock of ours, the repository as it was (`restic check`). Against the
loopback cluster and the real restic CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from kubectl_dr.repo.restic import archiver, nodes
from kubectl_dr.repo.restic.backend import LOCKS
from kubectl_dr.repo.restic.location import open_repository
from kubectl_dr.repo.restic.locks import Lock
from tests.cli_runner import clean_env, dr, executable
from tests.datasets import make_claim, managed_pods, new_namespace, volume_dir
from tests.e2e.test_pvc_restic_restore import deployment, replicas
from tests.polling import eventually
from tests.restic.oracle import PASSWORD, restic

ENV = {"RESTIC_PASSWORD": PASSWORD, "KUBECTL_DR_PROGRESS_INTERVAL": "1"}
BAD_IMAGE = "registry.invalid/nothing:1"


def filled_claim(cluster: Any, prefix: str) -> tuple[str, Path]:
    ns = new_namespace(cluster, prefix)
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    for d in range(20):
        (vol / f"d{d:02d}").mkdir()
        for i in range(50):
            (vol / f"d{d:02d}" / f"f{i:02d}").write_bytes(os.urandom(512))
    return ns, vol


def backed_up(cluster: Any, ns: str, repo: Path) -> str:
    backup = dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "-o", "json",
                cluster=cluster, extra_env=ENV, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    return str(json.loads(backup.stdout)["id"])


def app_running(cluster: Any, ns: str) -> None:
    """The claim's consumer, a Deployment at one replica: what a restore must stop and start again."""
    cluster.kubectl("apply", "-f", "-", input=deployment(ns))
    eventually(lambda: replicas(cluster, ns) == (1, {}), what="the app at one replica")


def backed_up_app(cluster: Any, tmp_path: Path, prefix: str) -> tuple[str, Path, str]:
    """A filled claim backed up into a new restic repository, then its app started: (namespace, repository,
    snapshot ID)."""
    ns, _ = filled_claim(cluster, prefix)
    repo = tmp_path / "repo"
    snap = backed_up(cluster, ns, repo)
    app_running(cluster, ns)
    return ns, repo, snap


def restore_from(cluster: Any, ns: str, repo: Path, snap: str, *args: str,
                 env: dict[str, str] | None = None) -> Any:
    return dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap, *args,
              cluster=cluster, extra_env={**ENV, **(env or {})}, subprocess=True)


def leases(cluster: Any, ns: str) -> str:
    return str(cluster.kubectl("get", "leases", "-n", ns, "-o", "name").stdout.strip())


def untouched(cluster: Any, ns: str, repo: Path, snapshots: int) -> None:
    """Nothing of the failed run is left: pods, lease, restic locks; the repository checks out."""
    assert managed_pods(cluster, ns) == []
    assert leases(cluster, ns) == ""
    assert not list((repo / LOCKS).glob("*"))
    restic(repo, "check")
    assert len(json.loads(restic(repo, "snapshots", "--json").stdout)) == snapshots


def test_a_pod_that_cannot_start_ends_the_backups_wait_for_the_restic_lock(cluster: Any, tmp_path: Path) -> None:
    ns, _ = filled_claim(cluster, "olock")
    repo = tmp_path / "repo"
    backed_up(cluster, ns, repo)
    held = open_repository(f"restic:{repo}", {"RESTIC_PASSWORD": PASSWORD})
    start = time.monotonic()
    # Another live client (this test) holds restic's exclusive lock, as a prune does: the backup's repository
    # side waits for it (up to five minutes) while the pod is started, which fails: the wait ends with it.
    with Lock(held, exclusive=True):
        failed = dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "--image", BAD_IMAGE,
                    cluster=cluster, extra_env=ENV, subprocess=True, timeout=240)
    assert failed.returncode == 1, failed.stderr
    assert "cannot be pulled" in failed.stderr and BAD_IMAGE in failed.stderr, failed.stderr
    assert time.monotonic() - start < 120, "the lock's wait did not end with the failure"
    untouched(cluster, ns, repo, 1)


def test_a_pod_that_cannot_start_while_the_snapshot_is_read_stops_nothing_for_good(cluster: Any,
                                                                                   tmp_path: Path) -> None:
    ns, repo, snap = backed_up_app(cluster, tmp_path, "opod")
    failed = restore_from(cluster, ns, repo, snap, "--image", BAD_IMAGE)
    assert failed.returncode == 1, failed.stderr
    assert "cannot be pulled" in failed.stderr, failed.stderr
    assert "stopping Deployment/app" in failed.stderr  # stopped once the snapshot was found, before the pod
    assert "partly restored" not in failed.stderr
    assert replicas(cluster, ns) == (1, {})  # started again, its records gone
    untouched(cluster, ns, repo, 1)


def test_a_wrong_password_stops_no_app_and_starts_no_pod(cluster: Any, tmp_path: Path) -> None:
    ns, repo, snap = backed_up_app(cluster, tmp_path, "opw")
    generation = json.loads(cluster.kubectl("get", "deployment/app", "-n", ns, "-o", "json").stdout)["metadata"][
        "generation"]
    failed = restore_from(cluster, ns, repo, snap, env={"RESTIC_PASSWORD": "wrong"})
    assert failed.returncode == 1 and "wrong password" in failed.stderr, failed.stderr
    assert "stopping" not in failed.stderr and "starting rescue pod" not in failed.stderr, failed.stderr
    after = json.loads(cluster.kubectl("get", "deployment/app", "-n", ns, "-o", "json").stdout)["metadata"]
    assert after["generation"] == generation  # never scaled
    untouched(cluster, ns, repo, 1)


def test_a_damaged_tree_found_while_the_pod_starts_undoes_the_pod_and_the_scaling(cluster: Any,
                                                                                 tmp_path: Path) -> None:
    ns, vol = filled_claim(cluster, "otree")
    repo = tmp_path / "repo"
    snap = backed_up(cluster, ns, repo)
    # One directory's tree damaged in its pack: the snapshot is found (so the app is stopped and the pod
    # started), then the walk of its trees fails on that directory's MAC.
    opened = open_repository(f"restic:{repo}", {"RESTIC_PASSWORD": PASSWORD})
    snapshot = opened.find_snapshot(snap)
    root = archiver.volume_root(opened, snapshot.tree, snapshot.paths)
    child = next(n for n in opened.load_tree(root.subtree) if n.type == nodes.DIR and n.name == "d13")
    where = opened.index.blobs[child.subtree]
    pack = repo / "data" / where.pack[:2] / where.pack
    raw = bytearray(pack.read_bytes())
    raw[where.offset + where.length // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(raw))
    app_running(cluster, ns)
    (vol / "d00" / "f00").write_bytes(b"changed")
    failed = restore_from(cluster, ns, repo, snap)
    assert failed.returncode == 1, failed.stderr
    assert "partly restored" not in failed.stderr, failed.stderr
    assert (vol / "d00" / "f00").read_bytes() == b"changed"  # nothing written
    assert replicas(cluster, ns) == (1, {})
    assert managed_pods(cluster, ns) == [] and leases(cluster, ns) == ""
    assert not list((repo / LOCKS).glob("*"))


def test_a_quiesced_backup_stops_no_app_for_a_wrong_password_or_a_held_lock(cluster: Any, tmp_path: Path) -> None:
    """--quiesce stops the app only once the repository is open and locked: a wrong password, or another
    client's exclusive lock (a prune's) held until the run gives up, costs the app no stop."""
    ns, repo, _ = backed_up_app(cluster, tmp_path, "oquiet")
    generation = json.loads(cluster.kubectl("get", "deployment/app", "-n", ns, "-o", "json").stdout)["metadata"][
        "generation"]

    def backup(env: dict[str, str]) -> Any:
        return dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "--quiesce",
                  cluster=cluster, extra_env={**ENV, **env}, subprocess=True, timeout=120)

    wrong = backup({"RESTIC_PASSWORD": "wrong"})
    assert wrong.returncode == 1 and "wrong password" in wrong.stderr, wrong.stderr
    assert "stopping" not in wrong.stderr, wrong.stderr
    # Waiting for a prune's lock (up to five minutes), then Ctrl-C: the app was never stopped meanwhile.
    held = open_repository(f"restic:{repo}", {"RESTIC_PASSWORD": PASSWORD})
    env = {**clean_env(), "KUBECONFIG": str(cluster.kubeconfig), **ENV}
    with Lock(held, exclusive=True):
        proc = subprocess.Popen([executable(), "--yes", "pvc", "backup", "data", "-n", ns, "--repo",
                                 f"restic:{repo}", "--quiesce"], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(8)
        assert proc.poll() is None, proc.communicate()
        assert replicas(cluster, ns) == (1, {})  # still serving while the backup waits for the lock
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "stopping" not in err, err
    after = json.loads(cluster.kubectl("get", "deployment/app", "-n", ns, "-o", "json").stdout)["metadata"]
    assert after["generation"] == generation  # never scaled
    untouched(cluster, ns, repo, 1)
