"""`kubectl dr etcd restore` end to end on the loopback control plane: real etcd members in sandboxes of the
etcd image, kubelets that run the static pods from each node's manifests directory, real kubectl.

Each cluster is shared by the tests of one shape and put back in order between them: a restore, then a
rollback and a finalize, then the injected failures (each must leave the cluster exactly as it was).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import clean_env, dr
from tests.cluster.fixture import Cluster, ClusterFactory
from tests.conformance.kube import manifest, pod, sleep_pids
from tests.e2e.test_etcd_snapshot import etcdctl
from tests.polling import eventually

pytestmark = [pytest.mark.slow]
# Clusters of their own (v5 exec only is what sets them apart): other modules' tests stop and start members on
# the shared shapes and time them; a cluster restored many times over is not what they were written against.
OWN = ("v5",)
MANAGED = "app.kubernetes.io/managed-by=kubectl-dr"
BUMP = 1_000_000_000
DR_DIR = "/var/lib/kubectl-dr/restore"


def run_dr(c: Cluster, repo: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return dr(*args, cluster=c, repo=repo, timeout=timeout, subprocess=True)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def configmaps(c: Cluster, ns: str) -> set[str]:
    out = json.loads(c.kubectl("-n", ns, "get", "configmaps", "-o", "json").stdout)
    return {i["metadata"]["name"] for i in out["items"]} - {"kube-root-ca.crt"}


def leftover_pods(c: Cluster) -> list[str]:
    out = json.loads(c.kubectl("get", "pods", "-A", "-l", MANAGED, "-o", "json").stdout)
    return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in out["items"]]


RESTORE_LEASE = "kubectl-dr-etcd-restore"


@contextmanager
def restore_lease_held(c: Cluster, command: str = "etcd restore --from latest") -> Iterator[str]:
    """The restore Lease as a live run on another machine holds it (just renewed); yields that run's ID."""
    run_id = "20261201T000000Z-0a0b0c"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    c.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": RESTORE_LEASE, "namespace": "kube-system",
                     "annotations": {"kubectl-dr.io/command": command}},
        "spec": {"holderIdentity": f"elsewhere/4242/{run_id}", "leaseDurationSeconds": 600, "acquireTime": now,
                 "renewTime": now}}))
    try:
        yield run_id
    finally:
        c.kubectl("delete", "lease", "-n", "kube-system", RESTORE_LEASE, "--ignore-not-found")


def runbooks(repo: Path) -> list[Path]:
    return sorted(repo.rglob("etcd-restore-runbook-*"))


def repo_files(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))


# What a dry run may say on stderr: what it read and checked, never what it did.
READ_ONLY = ("snapshot backup ", "etcd members: ", "API servers on ", "etcd at ")


def dry_run_says_would(result: subprocess.CompletedProcess[str]) -> None:
    """Every line of a table dry run: the plan's lines say "would" (or are its steps), the runbook is announced
    as the one a run would write, and stderr only reports what was read."""
    plan, _, book = result.stdout.partition(" before anything changes:\n")
    assert book.startswith("\n# Break-glass runbook for etcd restore "), result.stdout
    for line in plan.splitlines():
        assert line.startswith(("(dry run) would ", "  ")), line
    for line in result.stderr.splitlines():
        assert line.startswith(READ_ONLY), line


def sleeping(c: Cluster, arg: str) -> bool:
    """A `sleep ARG` process of this cluster's pods: another run of these tests on the machine has its own."""
    return bool(sleep_pids(arg, of=c))


def all_healthy(c: Cluster) -> None:
    """Every control plane's member listed and answering a health check, asked with the real etcdctl from this
    machine (the oracle `etcd status` itself is checked against in test_etcd_status): no CLI process and no pod
    per look, where a look through `kubectl dr etcd status` cost both."""
    def healthy() -> list[dict[str, Any]] | None:
        listed = etcdctl(c, "member", "list", "-w", "json", check=False)
        if listed.returncode != 0:
            return None
        members = json.loads(listed.stdout).get("members") or []
        urls = [u for m in members for u in m.get("clientURLs") or []]
        if len(members) != len(c.control_planes) or len(urls) != len(members):
            return None
        rows: list[dict[str, Any]] = json.loads(
            etcdctl(c, "endpoint", "health", "-w", "json", endpoints=urls, check=False).stdout or b"[]")
        return rows if len(rows) == len(members) and all(r.get("health") for r in rows) else None

    eventually(healthy, what="every etcd member healthy", timeout=120)


def snapshot_with_changes(c: Cluster, repo: Path, ns: str, *, sleep_arg: str) -> str:
    """Objects before a snapshot, the snapshot, then changes: a ConfigMap and a pod created, one ConfigMap deleted."""
    c.kubectl("create", "namespace", ns)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns}}
    c.kubectl("create", "-f", "-", input=manifest(
        {**cm, "metadata": {**cm["metadata"], "name": "before"}, "data": {"k": "1"}},
        {**cm, "metadata": {**cm["metadata"], "name": "deleted-later"}, "data": {"k": "2"}}))
    snap = json.loads(ok(run_dr(c, repo, "etcd", "snapshot", "-o", "json")).stdout)
    c.kubectl("create", "-f", "-", input=manifest(
        {**cm, "metadata": {**cm["metadata"], "name": "after"}, "data": {"k": "3"}},
        pod("new", ns, command=["sleep", sleep_arg])))
    c.kubectl("-n", ns, "delete", "configmap", "deleted-later")
    c.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/new", "--timeout=60s")
    eventually(lambda: sleeping(c, sleep_arg), what=f"the process of pod {ns}/new")
    return str(snap["id"])


def status_files(c: Cluster, node: str, mode: str = "restore") -> list[Path]:
    return sorted(c.layout.host_path(node, DR_DIR).glob(f"*/status-{mode}"))


@contextmanager
def when_step(c: Cluster, node: str, step: str, action: Callable[[Path], None]) -> Iterator[list[str]]:
    """Run `action(run_dir)` as soon as the node's newest status file shows `step` (the injected failure)."""
    before = set(status_files(c, node))
    done: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for path in set(status_files(c, node)) - before:
                if any(line.split(" ")[1:2] == [step] for line in path.read_text().splitlines()):
                    action(path.parent)
                    done.append(path.parent.name)
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join(10)


def restore(c: Cluster, repo: Path, ref: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_dr(c, repo, "etcd", "restore", "--from", ref, "--yes", "-o", "json", *args)


def check_restored(c: Cluster, repo: Path, ns: str, sleep_arg: str, result: dict[str, Any], *, bump: bool) -> None:
    assert result["succeeded"] is True
    # Objects created after the snapshot are gone, the deleted one is back; real kubectl works.
    assert configmaps(c, ns) == {"before", "deleted-later"}
    gone = c.kubectl("-n", ns, "get", "pod", "new", check=False)
    assert gone.returncode == 1 and 'pods "new" not found' in gone.stderr
    eventually(lambda: not sleeping(c, sleep_arg), what="the kubelet to stop the pod created after the snapshot")
    assert f"{ns}/new" in result["podsGone"]
    if bump:
        assert result["revisionAfter"] > BUMP + result["revisionBefore"] // 2
        assert result["revisionAfter"] > BUMP
    all_healthy(c)
    assert len(result["members"]) == len(c.control_planes)
    eventually(lambda: not leftover_pods(c), what="no kubectl dr pod left")
    for node in c.control_planes:
        manifests = sorted(p.name for p in c.layout.manifests(node).iterdir())
        assert manifests == ["etcd.yaml", "kube-apiserver.yaml", "kube-controller-manager.yaml",
                             "kube-scheduler.yaml"], manifests
        assert not list(c.layout.host_path(node, DR_DIR).glob("*/snapshot.db"))


# ------------------------------------------------------------------------------------------ one member
@pytest.fixture(scope="module")
def single(cluster_factory: ClusterFactory) -> Cluster:
    return cluster_factory(control_planes=1, workers=1, etcd_version="3.5", exec_protocols=OWN)


def test_restore_rollback_finalize_one_member(single: Cluster, tmp_path: Path) -> None:
    c, repo = single, tmp_path / "repo"
    snap = snapshot_with_changes(c, repo, "one", sleep_arg="3701")
    files = repo_files(repo)
    dry = run_dr(c, repo, "etcd", "restore", "--from", snap, "--dry-run=client")
    ok(dry)
    assert "would restore etcd on 1 control-plane node from" in dry.stdout
    assert "--bump-revision=1000000000" in dry.stdout
    dry_run_says_would(dry)
    assert repo_files(repo) == files  # not even the record of the backup's verification
    assert not leftover_pods(c) and configmaps(c, "one") == {"before", "after"}

    result = json.loads(ok(restore(c, repo, snap)).stdout)
    check_restored(c, repo, "one", "3701", result, bump=True)
    # The snapshot held its member's lease while it ran: it came back with the data, and went with the pod.
    member_lease = c.kubectl("-n", "kube-system", "get", "lease", f"kubectl-dr-etcd-{c.control_planes[0]}", check=False)
    assert member_lease.returncode == 1 and "NotFound" in member_lease.stderr, member_lease.stdout
    runbook = next((repo / snap).glob("etcd-restore-runbook-*.sh")).read_text()
    assert f"--initial-cluster-token kubectl-dr-{result['runID'].lower()}-" in runbook
    assert "--bump-revision 1000000000 --mark-compacted" in runbook
    assert "mv /etc/kubernetes/manifests/etcd.yaml" in runbook

    status = json.loads(ok(run_dr(c, repo, "etcd", "restore", "status", "-o", "json")).stdout)
    [node] = status["nodes"]
    assert node["state"] == "restore: done" and node["oldDataDirPresent"] is True
    assert [r["step"] for r in node["restore"]][-3:] == ["committed", "started-control-plane", "done"]

    # A rollback puts the data from before the restore back: "after" is there again, "deleted-later" gone.
    c.kubectl("-n", "one", "create", "configmap", "made-after-restore")
    # It moves the revision past the restored cluster's, as the restore did (the clients saw those revisions),
    # and restarts the kubelets when asked to.
    dry = ok(run_dr(c, repo, "etcd", "restore", "rollback", "--dry-run=client")).stdout
    assert f"/var/lib/etcd.rollback-{result['runID']}, revision moved forward by at least 1,000,000,000" in dry
    table = ok(run_dr(c, repo, "etcd", "restore", "rollback", "--yes", "--restart-kubelets")).stdout
    assert f"etcd rollback {result['runID']} completed on every node" in table and "None" not in table, table
    before, after = map(int, re.search(r"revision: (\d+) before, (\d+) after", table).groups())  # type: ignore[union-attr]
    assert after > before + BUMP // 2 and before > BUMP, table
    assert "kubelet on cp-1: restarted" in table, table
    assert configmaps(c, "one") == {"before", "after"}
    all_healthy(c)
    eventually(lambda: not leftover_pods(c), what="no kubectl dr pod left after the rollback")

    # finalize removes what the rollback set aside; then nothing can be rolled back any more.
    data = c.layout.etcd_data(c.control_planes[0])
    assert (data.parent / f"etcd.restored-{result['runID']}").is_dir()
    ok(run_dr(c, repo, "etcd", "restore", "finalize", "--yes"))
    assert sorted(p.name for p in data.parent.iterdir() if p.name.startswith("etcd")) == ["etcd"]
    again = run_dr(c, repo, "etcd", "restore", "rollback", "--yes")
    assert again.returncode == 1 and "cannot be rolled back" in again.stderr
    assert not leftover_pods(c)
    c.kubectl("delete", "namespace", "one", "--wait=false")


def test_a_refused_run_writes_no_runbook(single: Cluster, tmp_path: Path) -> None:
    """Refused before it held the lease (no confirmation, another run's lease): no runbook of a restore that never
    ran, nothing else either."""
    c, repo = single, tmp_path / "repo"
    snap = json.loads(ok(run_dr(c, repo, "etcd", "snapshot", "-o", "json")).stdout)["id"]
    unconfirmed = run_dr(c, repo, "etcd", "restore", "--from", snap)  # no --yes and no terminal
    assert unconfirmed.returncode != 0 and "--yes" in unconfirmed.stderr, unconfirmed.stderr
    with restore_lease_held(c) as other:
        held = run_dr(c, repo, "etcd", "restore", "--from", snap, "--yes")
    assert held.returncode == 1 and f"run {other} on host elsewhere" in held.stderr, held.stderr
    assert runbooks(repo) == [] and "runbook" not in held.stderr + unconfirmed.stderr
    assert not leftover_pods(c)


def test_unwritable_data_dir_rolls_back(single: Cluster, tmp_path: Path) -> None:
    """The data dir's parent turns immutable after staging: the swap fails, the node puts everything back."""
    c, repo = single, tmp_path / "repo"
    snap = snapshot_with_changes(c, repo, "locked", sleep_arg="3702")
    node = c.control_planes[0]
    parent = c.layout.etcd_data(node).parent
    lock = lambda _run: subprocess.run(["chattr", "+i", str(parent)], check=True)  # noqa: E731
    try:
        with when_step(c, node, "stopped-control-plane", lock) as injected:
            result = restore(c, repo, snap, "--node-timeout", "30")
        assert injected, "the failure was never injected"
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=True)
    assert result.returncode == 1, result.stderr
    assert "rolled back" in result.stderr and "cannot move" in result.stderr
    # Nothing lost: the data written after the snapshot is all there, the pod ran through, etcd is healthy.
    assert configmaps(c, "locked") == {"before", "after"}
    assert sleeping(c, "3702")
    all_healthy(c)
    eventually(lambda: not leftover_pods(c), what="no kubectl dr pod left")
    assert sorted(p.name for p in c.layout.manifests(node).iterdir()) == [
        "etcd.yaml", "kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml"]
    c.kubectl("delete", "namespace", "locked", "--wait=false")


def _kill_node_script(run_dir: Path) -> None:
    """SIGKILL the static pod's shell (its command line holds the script): the kubelet starts it again."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"sh\0-c\0") and f"RUN={run_dir.name}".encode() in cmd:
            os.kill(int(pid), signal.SIGKILL)


def test_killed_node_pod_rolls_back(single: Cluster, tmp_path: Path) -> None:
    """The self-driving pod dies right after etcd stopped: restarted by its kubelet, it puts the node back."""
    c, repo = single, tmp_path / "repo"
    snap = snapshot_with_changes(c, repo, "killed", sleep_arg="3703")
    node = c.control_planes[0]
    with when_step(c, node, "stopped-etcd", _kill_node_script) as injected:
        result = restore(c, repo, snap)
    assert injected
    assert result.returncode == 1 and "this pod restarted before the commit" in result.stderr, result.stderr
    assert configmaps(c, "killed") == {"before", "after"}
    # Every node went back, so the restored dir is of no use: removed (with what earlier failed runs left).
    assert not list(c.layout.etcd_data(node).parent.glob("etcd.restored-*"))
    assert not list(c.layout.host_path(node, DR_DIR).glob("*/snapshot.db*"))
    all_healthy(c)
    eventually(lambda: not leftover_pods(c), what="no kubectl dr pod left")
    c.kubectl("delete", "namespace", "killed", "--wait=false")


def _stop_while_staging(c: Cluster, repo: Path, snap: str, sig: signal.Signals) -> str:
    """A restore stopped by `sig` while the snapshot is restored on the node (after its record was written)."""
    from tests.cli_runner import executable

    env = clean_env({"KUBECONFIG": str(c.kubeconfig), "KUBECTL_DR_REPO": str(repo)})
    proc = subprocess.Popen([executable(), "etcd", "restore", "--from", snap, "--yes"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("restoring the snapshot into"):
            proc.send_signal(sig)
            break
    rest = proc.communicate(timeout=180)[1]
    assert proc.returncode == 130 and "handed over" not in rest, "".join(seen) + rest
    return "".join(seen) + rest


def test_aborted_restore_keeps_the_last_one(single: Cluster, tmp_path: Path) -> None:
    """A restore stopped during staging does not become the node's last restore: the finished one before it can
    still be rolled back; a later restore leaves the first one's old data dir, and finalize removes both."""
    c, repo = single, tmp_path / "repo"
    snap = snapshot_with_changes(c, repo, "orders", sleep_arg="3707")
    node = c.control_planes[0]
    parent = c.layout.etcd_data(node).parent
    first = json.loads(ok(restore(c, repo, snap)).stdout)["runID"]
    _stop_while_staging(c, repo, snap, signal.SIGTERM)
    assert not leftover_pods(c)  # a SIGTERM while the etcdctl pod was being created left it once

    status = json.loads(ok(run_dr(c, repo, "etcd", "restore", "status", "-o", "json")).stdout)
    [row] = status["nodes"]
    assert (row["runID"], row["state"], row["oldDataDirPresent"]) == (first, "restore: done", True), row
    assert [(a["path"].rsplit("/", 1)[-1], a["finalizeRemoves"]) for a in row["setAside"]] == [
        (f"etcd.before-{first}", True)]
    assert "the last restore: `rollback` puts it back" in row["setAside"][0]["what"]
    dry = ok(run_dr(c, repo, "etcd", "restore", "rollback", "--dry-run=client"))
    assert f"would put /var/lib/etcd.before-{first} back on node {node}" in dry.stdout
    # Where an earlier version already pointed LAST at the stopped run, the node still reads the finished one.
    aborted = next(d.name for d in c.layout.host_path(node, DR_DIR).iterdir() if d.is_dir() and d.name > first)
    (c.layout.host_path(node, DR_DIR) / "LAST").write_text(aborted + "\n")
    status = json.loads(ok(run_dr(c, repo, "etcd", "restore", "status", "-o", "json")).stdout)
    assert (status["nodes"][0]["runID"], status["nodes"][0]["state"]) == (first, "restore: done")

    # A second finished restore: the first one's old data dir is now of an earlier restore, still named.
    second = json.loads(ok(restore(c, repo, snap)).stdout)["runID"]
    table = ok(run_dr(c, repo, "etcd", "restore", "status")).stdout
    assert f"etcd.before-{first}: the data from before restore {first}, an earlier restore" in table, table
    assert f"etcd.before-{second}: the data from before restore {second}, the last restore" in table, table
    done = ok(run_dr(c, repo, "etcd", "restore", "finalize", "--yes"))
    assert f"removed /var/lib/etcd.before-{first} on node {node}" in done.stdout, done.stdout
    # What was removed cannot be rolled back any more: the result does not say that `rollback` puts it back.
    assert "rollback" not in done.stdout, done.stdout
    assert sorted(p.name for p in parent.iterdir() if p.name.startswith("etcd")) == ["etcd"]
    assert not leftover_pods(c)
    c.kubectl("delete", "namespace", "orders", "--wait=false")


def test_restore_from_a_restic_snapshot(single: Cluster, tmp_path: Path) -> None:
    """`etcd snapshot --repo restic:REPO` through the pod, then `etcd restore --from latest --repo restic:REPO`:
    the one-file snapshot is found by this cluster's tag, read and checked, and restored like any other."""
    from tests.restic.oracle import PASSWORD, restic_json

    c, repo, restic_repo = single, tmp_path / "repo", tmp_path / "restic"
    env = {"RESTIC_PASSWORD": PASSWORD}

    def with_restic(*args: str) -> subprocess.CompletedProcess[str]:
        # The break-glass runbook of a restore from a restic repository is written to the current directory.
        return dr(*args, "--repo", f"restic:{restic_repo}", cluster=c, repo=repo, extra_env=env, timeout=900,
                  cwd=tmp_path, subprocess=True)

    c.kubectl("create", "namespace", "rs")
    c.kubectl("-n", "rs", "create", "configmap", "before")
    taken = json.loads(ok(with_restic("etcd", "snapshot", "--yes", "-o", "json")).stdout)
    assert taken["hostname"] == c.control_planes[0] and "kind=etcd-snapshot" in taken["tags"]
    c.kubectl("-n", "rs", "create", "configmap", "after")
    assert [s["id"] for s in restic_json(restic_repo, "snapshots")] == [taken["id"]]

    dry = ok(with_restic("etcd", "restore", "--from", "latest", "--dry-run=client"))
    assert "would restore etcd on 1 control-plane node from" in dry.stdout, dry.stdout
    assert f"restic snapshot {taken['shortId']}" in dry.stderr and configmaps(c, "rs") == {"after", "before"}
    result = json.loads(ok(with_restic("etcd", "restore", "--from", "latest", "--yes", "-o", "json")).stdout)
    assert result["succeeded"] is True
    assert configmaps(c, "rs") == {"before"}
    [book] = tmp_path.glob("etcd-restore-runbook-*.sh")
    assert f"--initial-cluster-token kubectl-dr-{result['runID'].lower()}-" in book.read_text()
    all_healthy(c)
    ok(run_dr(c, repo, "etcd", "restore", "finalize", "--yes"))
    assert not leftover_pods(c)
    c.kubectl("delete", "namespace", "rs", "--wait=false")


def test_interrupt_before_hand_over_changes_nothing(single: Cluster, tmp_path: Path) -> None:
    """Ctrl-C while the snapshot is being restored on the node: the staging goes, the cluster never stopped."""
    c, repo = single, tmp_path / "repo"
    snap = snapshot_with_changes(c, repo, "interrupted", sleep_arg="3706")
    node = c.control_planes[0]
    parent = c.layout.etcd_data(node).parent
    dirs_before = sorted(p.name for p in parent.iterdir())
    seen = _stop_while_staging(c, repo, snap, signal.SIGINT).splitlines(keepends=True)
    assert configmaps(c, "interrupted") == {"before", "after"} and sleeping(c, "3706")
    # How to go on is the command to paste: the user's own, the snapshot pinned by its ID.
    assert f"etcd was not changed; `kubectl dr etcd restore --yes --from {snap}` starts it again" in "".join(seen)
    assert not leftover_pods(c)
    # Beside the data dir only the run's record may be new (/var/lib/kubectl-dr: `restore status` reads it).
    assert sorted(p.name for p in parent.iterdir() if p.name != "kubectl-dr") == \
        [d for d in dirs_before if d != "kubectl-dr"]
    assert not list(c.layout.host_path(node, DR_DIR).glob("*/snapshot.db*"))
    assert not (c.layout.manifests(node) / "kubectl-dr-etcd-restore.yaml").exists()
    # The aborted run is not the node's last restore; asked for by its ID, it says what happened.
    aborted = next((repo / snap).glob("etcd-restore-runbook-*.sh")).stem.removeprefix("etcd-restore-runbook-")
    status = json.loads(ok(run_dr(c, repo, "etcd", "restore", "status", "-o", "json")).stdout)
    assert status["nodes"][0]["runID"] != aborted
    status = json.loads(ok(run_dr(c, repo, "etcd", "restore", "status", "--run", aborted, "-o", "json")).stdout)
    assert status["nodes"][0]["state"] == "aborted before the hand-over (nothing changed)"
    # Sizes in messages in binary units, as everywhere: not a raw byte count.
    # (KiB or MiB: the snapshot grows with what earlier tests left in this cluster.)
    assert any(re.fullmatch(rf"copying the snapshot \(\d+\.\d [KMG]iB\) to node {node}\n", line) for line in seen), seen
    # The lease is free again: the next restore runs (and is dry here), its plan in plain words.
    dry = ok(run_dr(c, repo, "etcd", "restore", "--from", snap, "--dry-run=client")).stdout
    assert "would restore etcd on 1 control-plane node from" in dry and "node(s)" not in dry.splitlines()[0], dry
    c.kubectl("delete", "namespace", "interrupted", "--wait=false")
