"""`kubectl dr etcd restore` on three control-plane nodes end to end: real etcd members (3.5 and 3.4) in
sandboxes of the etcd image, kubelets that run the static pods from each node's manifests directory, real kubectl.

Apart from the one-member tests (test_etcd_restore) so that test workers can run the two shapes side by side:
each module holds its clusters for all of its tests, and the three-member restores are the longer half.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from tests.cluster.fixture import Cluster, ClusterFactory
from tests.e2e.test_etcd_restore import (
    BUMP,
    DR_DIR,
    OWN,
    all_healthy,
    check_restored,
    configmaps,
    leftover_pods,
    ok,
    restore,
    run_dr,
    sleeping,
    snapshot_with_changes,
    when_step,
)
from tests.polling import eventually

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module", params=["3.5", "3.4"])
def ha(request: pytest.FixtureRequest, cluster_factory: ClusterFactory) -> Cluster:
    return cluster_factory(control_planes=3, workers=1, etcd_version=str(request.param), exec_protocols=OWN)


def test_restore_three_members(ha: Cluster, tmp_path: Path) -> None:
    c, repo = ha, tmp_path / "repo"
    bump = c.etcd.etcdutl is not None  # the 3.5 image's etcdctl has the bump, the 3.4 one none
    snap = snapshot_with_changes(c, repo, "three", sleep_arg="3704")
    if not bump:
        refused = run_dr(c, repo, "etcd", "restore", "--from", snap, "--yes")
        assert refused.returncode == 1 and "no restore tool with --bump-revision" in refused.stderr
        assert "--no-bump-revision" in refused.stderr and "informers" in refused.stderr
        assert not leftover_pods(c) and configmaps(c, "three") == {"before", "after"}
    # With the bump (3.5), also the kubelet restarts the kubernetes.io procedure asks for (once is enough: they
    # do not depend on the etcd version).
    restarts = ["--restart-kubelets"] if bump else ["--no-bump-revision"]
    result = json.loads(ok(restore(c, repo, snap, *restarts)).stdout)
    check_restored(c, repo, "three", "3704", result, bump=bump)
    if bump:  # every kubelet restarted, each confirmed by its new Starting event
        assert [(r["node"], r["result"]) for r in result["kubeletRestarts"]] == [
            (n, "restarted") for n in sorted([*c.control_planes, *c.workers])]
        assert not leftover_pods(c)
    # The rollback on every member: with the bump (3.5) from one node's old database; with 3.4 refused, with the
    # reason, unless the user accepts putting the old data back as it was.
    if not bump:
        refused = run_dr(c, repo, "etcd", "restore", "rollback", "--yes")
        assert refused.returncode == 1 and "no rollback tool with --bump-revision" in refused.stderr, refused.stderr
        assert "--no-bump-revision" in refused.stderr and configmaps(c, "three") == {"before", "deleted-later"}
    rolled = json.loads(ok(run_dr(c, repo, "etcd", "restore", "rollback", "--yes", "-o", "json",
                                  *([] if bump else ["--no-bump-revision"]))).stdout)
    assert configmaps(c, "three") == {"before", "after"}
    if bump:
        assert rolled["revisionAfter"] > rolled["revisionBefore"] > BUMP
    all_healthy(c)
    ok(run_dr(c, repo, "etcd", "restore", "finalize", "--yes"))
    for node in c.control_planes:
        assert sorted(p.name for p in c.layout.etcd_data(node).parent.iterdir() if p.name.startswith("etcd")) == \
            ["etcd"]
    c.kubectl("delete", "namespace", "three", "--wait=false")


@pytest.fixture(scope="module")
def ha35(cluster_factory: ClusterFactory) -> Cluster:
    """The 3.5 cluster of `ha`, for what does not depend on the etcd version."""
    return cluster_factory(control_planes=3, workers=1, etcd_version="3.5", exec_protocols=OWN)


def _mirror(c: Cluster, name: str) -> bool:
    out = c.kubectl("get", "pod", "-n", "kube-system", name, "--ignore-not-found", "-o", "name")
    return bool(out.stdout.strip())


def test_member_down_is_refused(ha35: Cluster, tmp_path: Path) -> None:
    """One etcd static pod stopped: the restore names it and refuses before anything changes, from the API
    servers' side (its node still runs one) and, with that stopped too, from etcd's own member list."""
    c, repo = ha35, tmp_path / "repo"
    snap = json.loads(ok(run_dr(c, repo, "etcd", "snapshot", "-o", "json")).stdout)["id"]
    last = c.control_planes[-1]
    records = {n: sorted(c.layout.host_path(n, DR_DIR).glob("*")) for n in c.control_planes}
    parked = []
    try:
        for name in ("etcd.yaml", "kube-apiserver.yaml"):
            c.park_manifest(last, name)
            parked.append(name)
            pod_name = f"{name.removesuffix('.yaml')}-{last}"
            eventually(lambda pod_name=pod_name: not _mirror(c, pod_name), what=f"{pod_name} to stop")  # type: ignore[misc]
            for dry in (("--dry-run=client",), ()) if name == "etcd.yaml" else ((),):
                refused = run_dr(c, repo, "etcd", "restore", "--from", snap, "--yes", "--node-timeout", "10", *dry)
                assert refused.returncode == 1, refused.stdout + refused.stderr
                why = (f"node {last} runs a kube-apiserver static pod but no etcd static pod"
                       if name == "etcd.yaml" else f"etcd member {last} (")
                assert why in refused.stderr and f"kubectl dr etcd member replace {last}" in refused.stderr, \
                    refused.stderr
    finally:
        for name in reversed(parked):
            c.unpark_manifest(last, name)
    # Nothing changed: no record of a run on any node, no pod of ours.
    assert {n: sorted(c.layout.host_path(n, DR_DIR).glob("*")) for n in c.control_planes} == records
    assert not leftover_pods(c)
    all_healthy(c)


def test_early_failure_calls_the_run_off_everywhere(ha35: Cluster, tmp_path: Path) -> None:
    """One node's script refuses at its first checks: every node ends at once, before any API server stopped,
    and the final message gives that node's reason; the earlier restore stays the last one."""
    c, repo = ha35, tmp_path / "repo"
    snap = snapshot_with_changes(c, repo, "early", sleep_arg="3708")
    last = c.control_planes[-1]
    parent = c.layout.host_path(last, "/var/lib")
    staged_before = set(parent.glob("etcd.restored-*"))
    status_before = json.loads(ok(run_dr(c, repo, "etcd", "restore", "status", "-o", "json")).stdout)
    injected: list[Path] = []
    stop = threading.Event()

    def block_the_swap() -> None:  # once the node's restored dir is complete, its aside name is taken
        while not stop.is_set() and not injected:
            for staged in set(parent.glob("etcd.restored-*")) - staged_before:
                if (staged / "member" / "snap" / "db").exists():
                    aside = parent / staged.name.replace(".restored-", ".before-")
                    aside.mkdir()
                    injected.append(aside)
            time.sleep(0.05)

    watcher = threading.Thread(target=block_the_swap, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        result = restore(c, repo, snap, "--node-timeout", "120")
    finally:
        stop.set()
        watcher.join(10)
    took = time.monotonic() - started
    try:
        assert injected, "the failure was never injected"
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"{last}: " in result.stderr and "already exists: nothing was changed" in result.stderr, result.stderr
        assert took < 100, f"the run took {took:.0f}s: the other nodes waited for their timeouts"
        run_id = injected[0].name.rsplit("before-", 1)[-1]
        for node in c.control_planes:
            [status] = c.layout.host_path(node, DR_DIR).glob(f"{run_id}/status-restore")
            steps = [line.split(" ")[1] for line in status.read_text().splitlines()]
            assert "stopped-control-plane" not in steps and steps[-1] == "failed", (node, steps)
            assert not list(c.layout.host_path(node, "/var/lib").glob(f"etcd.restored-{run_id}"))
        assert configmaps(c, "early") == {"before", "after"} and sleeping(c, "3708")
        status = json.loads(ok(run_dr(c, repo, "etcd", "restore", "status", "-o", "json")).stdout)
        assert [n["runID"] for n in status["nodes"]] == [n["runID"] for n in status_before["nodes"]]

        # A client killed between two nodes' go leaves them naming different last restores: each node is shown,
        # with the command that settles it (the newest run that changed the data; this one changed nothing).
        pointer = c.layout.host_path(last, f"{DR_DIR}/LAST")
        saved = pointer.read_text() if pointer.exists() else None
        pointer.write_text(run_id + "\n")
        shown = ok(run_dr(c, repo, "etcd", "restore", "status"))
        assert "the nodes disagree about their last restore" in shown.stderr and run_id in shown.stdout
        refused = run_dr(c, repo, "etcd", "restore", "rollback", "--yes")
        assert refused.returncode == 1 and f"{last}: {run_id} (restore: failed)" in refused.stderr, refused.stderr
        settle = re.search(r"`kubectl dr etcd restore finalize --run (\S+)`", refused.stderr)
        assert settle or "no restore finished on every node" in refused.stderr, refused.stderr
        assert not settle or settle.group(1) != run_id
        if settle:  # followed, it makes every node agree
            ok(run_dr(c, repo, "etcd", "restore", "finalize", "--run", settle.group(1), "--yes"))
            agreed = json.loads(ok(run_dr(c, repo, "etcd", "restore", "status", "-o", "json")).stdout)
            assert {n["runID"] for n in agreed["nodes"]} == {settle.group(1)} and agreed["settle"] is None
        elif saved is None:
            pointer.unlink()
        else:
            pointer.write_text(saved)
    finally:
        for aside in injected:
            aside.rmdir()
    all_healthy(c)
    eventually(lambda: not leftover_pods(c), what="no kubectl dr pod left")
    c.kubectl("delete", "namespace", "early", "--wait=false")


def test_member_never_healthy_rolls_back_every_node(ha: Cluster, tmp_path: Path) -> None:
    """One node's restored member cannot start: the other two form a quorum but never see all their peers, so
    every node times out and goes back; the old cluster returns whole with everything written before."""
    c, repo = ha, tmp_path / "repo"
    snap = snapshot_with_changes(c, repo, "unhealthy", sleep_arg="3705")
    last = c.control_planes[-1]

    def break_member(run_dir: Path) -> None:
        db = c.layout.host_path(last, f"/var/lib/etcd.restored-{run_dir.name}/member/snap/db")
        db.write_bytes(b"not a bbolt database")

    with when_step(c, last, "start", break_member) as injected:
        result = restore(c, repo, snap, "--node-timeout", "10", *([] if c.etcd.etcdutl else ["--no-bump-revision"]))
    assert injected
    assert result.returncode == 1 and "rolled back" in result.stderr, result.stderr
    assert "was not healthy with all 2 peers" in result.stderr
    assert configmaps(c, "unhealthy") == {"before", "after"}
    for node in c.control_planes:
        assert not list(c.layout.etcd_data(node).parent.glob(f"etcd.restored-{injected[0]}"))
    assert sleeping(c, "3705")
    all_healthy(c)
    eventually(lambda: not leftover_pods(c), what="no kubectl dr pod left")
    c.kubectl("delete", "namespace", "unhealthy", "--wait=false")
