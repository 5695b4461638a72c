"""Which cluster a backup is of: the rules that keep `latest` within one cluster, on a real repository."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kubectl_dr.clusters import ClusterChoiceError, ClusterIdentity, latest_of, pick
from kubectl_dr.errors import DrError
from kubectl_dr.etcd.keyspace import Keyspace, Value, kube_system_uid
from kubectl_dr.repo import BackupNotFoundError, LocalRepository, Policy
from kubectl_dr.repo.choice import choose
from kubectl_dr.repo.copying import copy_backup
from kubectl_dr.repo.manifest import Manifest
from kubectl_dr.repo.retention import series_key

A = ClusterIdentity("uid-a", "https://a:6443", "prod")
B = ClusterIdentity("uid-b", "https://b:6443", "staging")
B2 = ClusterIdentity("uid-b2", "https://b2:6443", "staging")  # another cluster also called "staging"
T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def _backup(repo: LocalRepository, cluster: ClusterIdentity | None, type: str = "pvc", pvc: str = "db") -> str:
    source = {"namespace": "shop", "pvc": pvc} if type == "pvc" else {"node": "cp-1"}
    with repo.create(type, source, pvc, cluster=cluster) as writer:
        with writer.open_part("data.tar") as part:
            part.write(b"x")
        return writer.commit().id


@pytest.fixture()
def repo(tmp_path: Path) -> LocalRepository:
    return LocalRepository(tmp_path / "repo", clock=Clock())


def test_manifest_records_the_cluster_and_older_ones_parse_without(repo: LocalRepository) -> None:
    with_id = _backup(repo, A)
    data = json.loads((repo.path / with_id / "manifest.json").read_text())
    assert data["cluster"] == {"uid": "uid-a", "server": "https://a:6443", "context": "prod"}
    del data["cluster"]
    assert Manifest.from_dict(data, "x").cluster is None
    data["cluster"] = {"server": "https://a:6443"}
    with pytest.raises(DrError, match="cluster is not an object with a uid"):
        Manifest.from_dict(data, "x")


def test_latest_is_per_cluster_and_never_an_unrecorded_backup(repo: LocalRepository) -> None:
    a = _backup(repo, A)
    b = _backup(repo, B)  # newer, of another cluster
    older = _backup(repo, None)  # newest of all, written before backups recorded their cluster
    match = {"namespace": "shop", "pvc": "db"}
    assert repo.resolve("latest", "pvc", match, cluster="uid-a").id == a
    assert repo.resolve("latest", "pvc", match, cluster="uid-b").id == b
    assert repo.resolve("latest", "pvc", match).id == older  # no cluster given: any (backups show/verify)
    # An explicit ID resolves whatever its cluster, and whether it records one.
    assert repo.resolve(b, "pvc").id == b and repo.resolve(older, "pvc").id == older
    with pytest.raises(BackupNotFoundError) as info:
        repo.resolve("latest", "pvc", match, cluster="uid-c")
    assert "of cluster uid uid-c" in info.value.message
    hint = info.value.hint or ""
    assert "uid uid-a (context prod, server https://a:6443)" in hint and "uid uid-b" in hint
    assert "--from-cluster" in hint and f"1 that records no cluster; written by an older kubectl-dr ({older})" in hint


def test_from_cluster_names_a_cluster_by_uid_context_or_server() -> None:
    known = [A, B, B2]
    assert pick("uid-b2", known) == "uid-b2"
    assert pick("prod", known) == "uid-a"
    assert pick("https://b:6443", known) == "uid-b"
    with pytest.raises(ClusterChoiceError) as ambiguous:
        pick("staging", known)
    assert "names 2 clusters" in ambiguous.value.message
    assert "uid uid-b (" in ambiguous.value.message and "uid uid-b2 (" in ambiguous.value.message
    with pytest.raises(ClusterChoiceError) as unknown:
        pick("dev", known)
    assert 'no backup of a cluster "dev"' in unknown.value.message and "uid uid-a" in (unknown.value.hint or "")


def test_latest_of_needs_a_cluster_and_from_cluster_only_with_latest() -> None:
    assert latest_of("latest", A, None, lambda r: "never") == "uid-a"
    assert latest_of("latest", A, "staging", lambda r: "uid-b") == "uid-b"
    assert latest_of("20261201T000000Z-pvc-db", A, None, lambda r: "never") is None
    with pytest.raises(DrError, match="--from-cluster only goes with --from latest"):
        latest_of("20261201T000000Z-pvc-db", A, "staging", lambda r: "uid-b")
    with pytest.raises(DrError, match=r"cannot tell which cluster this is \(forbidden\)"):
        latest_of("latest", None, None, lambda r: "never", "forbidden")


def test_restores_of_cluster_state_refuse_another_clusters_backup(repo: LocalRepository) -> None:
    a = _backup(repo, A, "control-plane")
    b = _backup(repo, B, "control-plane")
    older = _backup(repo, None, "control-plane")
    assert choose(repo, "latest", "control-plane", current=A, what="x") == (repo.get(a), None)
    with pytest.raises(DrError) as refused:
        choose(repo, b, "control-plane", current=A, what="control-plane restore")
    assert refused.value.message == (f"backup {b} is of cluster staging at https://b:6443 (uid uid-b), not of "
                                     "cluster prod at https://a:6443 (uid uid-a): control-plane restore refuses to "
                                     "restore another cluster's backup")
    with pytest.raises(DrError, match="is of cluster staging"):
        choose(repo, "latest", "control-plane", current=A, what="x", from_cluster="staging")
    backup, note = choose(repo, "latest", "control-plane", current=A, what="x", from_cluster="uid-b",
                          from_other_cluster=True)
    assert backup.id == b
    assert note == (f"backup {b} is of cluster staging at https://b:6443 (uid uid-b), restoring into cluster prod at "
                    "https://a:6443 (uid uid-a)")
    backup, note = choose(repo, older, "control-plane", current=A, what="x")
    assert (backup.id, note) == (older, f"backup {older} records no cluster; written by an older kubectl-dr")


def test_a_copy_keeps_the_original_cluster(repo: LocalRepository, tmp_path: Path) -> None:
    b = _backup(repo, B)
    target = LocalRepository(tmp_path / "copy")
    copy_backup(repo, repo.get(b), target)
    assert target.get(b).manifest.cluster == B


def test_retention_series_do_not_mix_clusters(repo: LocalRepository) -> None:
    a = [_backup(repo, A) for _ in range(2)]
    b = [_backup(repo, B) for _ in range(2)]
    assert series_key(repo.get(a[0]).manifest) == "pvc shop/db @uid-a"
    result = repo.prune(Policy(last=1))
    # The newest of each cluster stays: B's newer backups do not push A's last one out.
    assert set(result.kept) == {a[1], b[1]} and set(result.removed) == {a[0], b[0]}


def test_kube_system_uid_from_a_snapshot_keyspace_as_json_or_protobuf() -> None:
    def field(number: int, data: bytes) -> bytes:
        return bytes([number << 3 | 2, len(data)]) + data

    meta = field(1, b"kube-system") + field(5, b"5f1c2a")
    stored = b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"Namespace")) + field(2, field(1, meta))
    space = Keyspace(7, {b"/registry/namespaces/kube-system": Value(stored, 0)})
    assert kube_system_uid(space) == "5f1c2a"
    as_json = json.dumps({"kind": "Namespace", "metadata": {"name": "kube-system", "uid": "9ab"}}).encode()
    assert kube_system_uid(Keyspace(7, {b"/k8s/namespaces/kube-system": Value(as_json, 0)})) == "9ab"
    assert kube_system_uid(Keyspace(7, {b"/registry/namespaces/default": Value(as_json, 0)})) is None


def test_a_snapshots_identity_is_read_without_holding_its_values(tmp_path: Path) -> None:
    """`etcd snapshot --endpoints` reads kube-system's UID from the snapshot it took: only that key is kept,
    not every value (the database's size in memory), and the answer is the same; a deleted and re-created
    kube-system is the latest one."""
    from kubectl_dr.etcd import keyspace
    from tests.unit.etcd_scratch import ScratchEtcd, etcd_available

    if not etcd_available():
        pytest.skip("etcd not installed")
    with ScratchEtcd(tmp_path, name="ident") as etcd:
        ns = b"/registry/namespaces/kube-system"
        etcd.put(ns, json.dumps({"metadata": {"name": "kube-system", "uid": "old-uid"}}).encode())
        etcd.delete(ns)
        etcd.put(ns, json.dumps({"metadata": {"name": "kube-system", "uid": "c0ffee-uid"}}).encode())
        for i in range(20):
            etcd.put(f"/registry/configmaps/app/c{i}".encode(), os.urandom(4096))
        etcd.put(b"/registry/namespaces/kube-system-not", b"{}")
        path = etcd.snapshot_save(tmp_path / "s.db")
    whole = keyspace.read(path)
    only = keyspace.read(path, wanted=keyspace.is_kube_system_key)
    assert list(only.keys) == [ns] and len(whole.keys) == 22
    assert keyspace.kube_system_uid(only) == keyspace.kube_system_uid(whole) == "c0ffee-uid"
    assert only.revision == whole.revision


def test_latest_found_damaged_is_refused_naming_the_newest_intact_one(repo: LocalRepository) -> None:
    from kubectl_dr.errors import VerificationError
    from kubectl_dr.volumes.source import find_backup

    older = _backup(repo, A)
    _backup(repo, B)  # another cluster's, newer: never offered for A's claim
    newest = _backup(repo, A)
    assert find_backup(repo, "latest", "shop", "db", None, "uid-a").id == newest
    (repo.path / newest / "data.tar").write_bytes(b"y")  # the same size, another SHA-256
    with pytest.raises(DrError):
        repo.verify(repo.get(newest))  # `backups verify` finds it damaged, and records that
    with pytest.raises(VerificationError, match=f"shop/db, {newest}, was found damaged") as info:
        find_backup(repo, "latest", "shop", "db", None, "uid-a")
    assert f"--from {older}." in (info.value.hint or "")
    assert find_backup(repo, older, "shop", "db", None, "uid-a").id == older  # by its ID, as asked


def test_latest_by_server_url_found_damaged_is_refused_too(repo: LocalRepository) -> None:
    """A user who may not read kube-system finds `latest` by the API server's URL: a newest backup found damaged
    is refused there as well, naming the newest intact one taken through the same URL (or recording none)."""
    from kubectl_dr.errors import VerificationError
    from kubectl_dr.ui.console import TerminalConsole
    from kubectl_dr.ui.terminals import Terminals
    from kubectl_dr.volumes.source import resolve

    older = _backup(repo, None)  # written by a namespaced user: no cluster recorded
    _backup(repo, B)  # taken through another URL, newer: never offered
    newest = _backup(repo, A)
    (repo.path / newest / "data.tar").write_bytes(b"y")
    with pytest.raises(DrError):
        repo.verify(repo.get(newest))
    console = TerminalConsole(terminals=Terminals(False, False, False))
    with pytest.raises(VerificationError, match=f"shop/db, {newest}, was found damaged") as info:
        resolve(repo, "latest", "shop", "db", console, current=None, server=A.server, unknown_why="forbidden")
    assert f"--from {older}." in (info.value.hint or "")
