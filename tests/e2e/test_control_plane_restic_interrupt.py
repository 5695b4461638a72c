"""`control-plane backup|restore --repo restic:REPO` stopped at each of their steps (a real SIGKILL: nothing of ours
can clean up; a real SIGINT: exit 130, its cleanup runs), then run again, the real restic as the judge.

Backup: `restic check --read-data` passes after every cut (after `restic unlock` for a killed run's lock, as a
restic user does; our next run keeps such a lock and says so); no snapshot is listed for a run cut before it
stored its files (one cut later may have written it, and then it is whole); the private staging copy (the
cluster's keys) is gone after SIGINT at once and after SIGKILL with the next run; the rerun stores a whole
snapshot that restic restores byte for byte.
Restore: whatever a cut leaves on the node under a file's own name is the verified file (content, mode, owner);
the rerun finishes the node. No pod of ours is left behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_runner import clean_env, dr, run_until
from tests.cluster.fixture import Cluster, ClusterFactory
from tests.e2e.test_control_plane_files import SHARED, kubeadm_modes, ok, state, write_pki
from tests.e2e.test_etcd_snapshot import leftover_pods
from tests.polling import eventually
from tests.restic.oracle import PASSWORD, restic, restic_json

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def nodes(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    c = cluster_factory(control_planes=1, workers=1, private="control-plane-restic-interrupt")
    write_pki(c.layout.host_path(c.control_planes[0], "/etc/kubernetes/pki"))
    yield c


def _env(c: Cluster, tmp: Path) -> dict[str, str]:
    """Every run here is a real process, reruns too: each starts node pods, and a run finds the staging copies
    it must sweep by its TMPDIR, which an interpreter reads once (tempfile caches it)."""
    tmp.mkdir(exist_ok=True)
    return clean_env({"KUBECONFIG": str(c.kubeconfig), "RESTIC_PASSWORD": PASSWORD, "TMPDIR": str(tmp),
                      "KUBECTL_DR_POD_GRACE_SECONDS": "10"})


def _running_pods(c: Cluster) -> list[str]:
    out = c.kubectl("get", "pods", "-A", "-l", "app.kubernetes.io/managed-by=kubectl-dr", "-o", "json").stdout
    return [p["metadata"]["name"] for p in json.loads(out)["items"]
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def _no_pods(c: Cluster) -> None:
    """A killed run's pods end by themselves (their dead-man check) once it stops touching them."""
    eventually(lambda: _running_pods(c) == [], 90, "the interrupted run's pods to end",
               explain=lambda: c.kubectl("get", "pods", "-A", "-o", "wide").stdout)


def _staged(tmp: Path) -> list[Path]:
    return list(tmp.glob("kubectl-dr-control-plane-*"))


BACKUP_CUTS = {
    "pod-under-way": ("reading /etc/kubernetes of node", signal.SIGKILL),
    "pod-under-way-ctrl-c": ("reading /etc/kubernetes of node", signal.SIGINT),
    "files-staged": ("storing the files in the restic repository", signal.SIGKILL),
    "packs-and-index-written": ("reading them back", signal.SIGKILL),
    "reading-back-ctrl-c": ("reading them back", signal.SIGINT),
    "about-to-write-the-snapshot": ("writing the snapshot", signal.SIGKILL),
}


@pytest.mark.parametrize("cut", list(BACKUP_CUTS))
def test_backup_cut_at_each_step_leaves_a_valid_repository_and_a_rerun_is_whole(nodes: Cluster, tmp_path: Path,
                                                                                 cut: str) -> None:
    line, sig = BACKUP_CUTS[cut]
    repo, tmp = tmp_path / "restic", tmp_path / "tmp"
    env = _env(nodes, tmp)
    restic(repo, "init")
    code, said = run_until(["control-plane", "backup", "--repo", f"restic:{repo}", "--yes"], env, line, sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130), said

    # A run killed while it held its lock leaves it, as restic itself does, and restic's own locking does not skip
    # it: a restic user runs `restic unlock`. For one cut the next run of ours meets it first: it keeps it (its
    # pid might be a live process of another container with this hostname) and says what it is.
    left = restic(repo, "list", "locks", "--no-lock").stdout.split()
    unlock_later = cut == "packs-and-index-written"
    if sig == signal.SIGKILL and not unlock_later:
        restic(repo, "unlock")
    restic(repo, "check", "--read-data", *(["--no-lock"] if unlock_later else []))
    snaps = restic_json(repo, "snapshots", "--no-lock")
    if cut in ("pod-under-way", "pod-under-way-ctrl-c", "files-staged"):
        assert snaps == [], said
    # Cut as it said it reads back or writes the snapshot: the signal may land after the snapshot is written, so
    # at most one, and whole (restored byte for byte below).
    assert len(snaps) <= 1, snaps
    if sig == signal.SIGINT:
        assert _staged(tmp) == [], "the staged keys outlived the run's own cleanup"
        assert left == []
        assert leftover_pods(nodes) == []
    _no_pods(nodes)

    rerun = dr("control-plane", "backup", "--repo", f"restic:{repo}", "--yes", "-o", "json", env=env, timeout=300,
               subprocess=True)
    again = ok(rerun)
    assert _staged(tmp) == [], "the killed run's staged keys were not removed by the next run"
    if unlock_later:
        assert left, "the run killed while storing left no lock"
        assert restic(repo, "list", "locks", "--no-lock").stdout.split() == left  # kept: only restic unlock removes it
        assert "no longer runs" in rerun.stderr and f"`restic -r {repo} unlock`" in rerun.stderr, rerun.stderr
        restic(repo, "unlock")
    assert restic(repo, "list", "locks", "--no-lock").stdout.strip() == ""
    restic(repo, "check", "--read-data")
    restic(repo, "prune", "--dry-run")  # restic's exclusive lock is not blocked
    listed = {s["id"] for s in restic_json(repo, "snapshots")}
    assert again["id"] in listed and len(listed) == len(snaps) + 1
    out = tmp_path / "out"
    for snap_id in listed:
        shutil.rmtree(out, ignore_errors=True)
        restic(repo, "restore", snap_id, "--target", str(out))
        assert state(out / "etc" / "kubernetes" / "pki") == state(
            nodes.layout.host_path(nodes.control_planes[0], "/etc/kubernetes/pki"))
    assert leftover_pods(nodes) == []


RESTORE_CUTS = {
    "reading-the-snapshot": ("reading and checking restic snapshot", signal.SIGKILL),
    "reading-the-snapshot-ctrl-c": ("reading and checking restic snapshot", signal.SIGINT),
    "first-key-under-way": ("writing /etc/kubernetes/pki/ca.key", signal.SIGKILL),
    "keys-under-way-ctrl-c": ("writing /etc/kubernetes/pki/sa.key", signal.SIGINT),
    "last-file-under-way": ("writing /etc/kubernetes/pki/etcd/ca.key", signal.SIGKILL),
}


@pytest.fixture(scope="module")
def taken(nodes: Cluster, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, dict[str, tuple[str, int, int, int]]]:
    base = tmp_path_factory.mktemp("cp-restic")
    repo = base / "restic"
    ok(dr("control-plane", "backup", "--repo", f"restic:{repo}", "--yes", "-o", "json", env=_env(nodes, base / "tmp"),
          timeout=300, subprocess=True))
    return repo, kubeadm_modes(state(nodes.layout.host_path(nodes.control_planes[0], "/etc/kubernetes/pki")))


@pytest.mark.parametrize("cut", list(RESTORE_CUTS))
def test_restore_cut_at_each_step_writes_only_verified_files_and_a_rerun_finishes(
        nodes: Cluster, taken: tuple[Path, dict[str, tuple[str, int, int, int]]], tmp_path: Path, cut: str) -> None:
    line, sig = RESTORE_CUTS[cut]
    repo, expected = taken
    target = nodes.workers[0]
    kube_dir = nodes.layout.host_path(target, "/etc/kubernetes")
    shutil.rmtree(kube_dir, ignore_errors=True)  # a rebuilt node
    tmp = tmp_path / "tmp"
    env = _env(nodes, tmp)
    args = ["control-plane", "restore", "--from", "latest", "--node", target, "--repo", f"restic:{repo}", "--yes"]
    code, said = run_until(args, env, line, sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130), said

    pki = kube_dir / "pki"
    present = sorted(str(p.relative_to(pki)) for p in pki.rglob("*") if p.is_file()) if pki.is_dir() else []
    named = [p for p in present if not p.rsplit("/", 1)[-1].startswith(".kubectl-dr-")]
    assert set(named) <= set(SHARED), present
    for name in named:  # under its own name only ever the verified file, with kubeadm's mode and owner
        p = pki / name
        st = p.stat()
        assert (state(pki)[name] if set(named) == set(SHARED) else
                (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode & 0o7777, st.st_uid,
                 st.st_gid)) == expected[name], name
    if line.startswith("reading"):
        assert present == [], "the node was written before the snapshot was read and checked"
    if sig == signal.SIGINT:
        assert present == named, f"a half-written file outlived the run's cleanup: {present}"
        assert _staged(tmp) == []
    _no_pods(nodes)

    done = ok(dr(*args, "-o", "json", env=env, timeout=300, subprocess=True))
    assert state(pki) == expected
    assert sorted(str(p.relative_to(pki)) for p in pki.rglob("*") if p.is_file()) == sorted(SHARED)
    assert {w["path"].removeprefix("/etc/kubernetes/pki/") for w in done["written"]} == set(SHARED) - set(named)
    assert _staged(tmp) == []
    assert leftover_pods(nodes) == [], nodes.kubectl("get", "pods", "-A").stdout
