"""`etcd snapshot --repo restic:REPO` (direct mode against a scratch etcd, no cluster needed): one-file restic
snapshots that the real restic restores to the very bytes stored (SHA-256) and the real `etcdutl snapshot
status` reads, named and tagged so that a restore finds them; through a local path and a rest-server."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kubectl_dr.repo.restic import singlefile
from kubectl_dr.repo.restic.backend import LocalBackend
from kubectl_dr.repo.restic.repository import Repository
from tests.cli_runner import clean_env, dr
from tests.restic.oracle import PASSWORD, restic, restic_json
from tests.restserver import RestServer
from tests.unit.etcd_scratch import ScratchEtcd

ETCDUTL = "/opt/etcd-3.5/usr/bin/etcdutl"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def etcdutl_status(path: Path) -> dict[str, Any]:
    proc = subprocess.run([ETCDUTL, "snapshot", "status", "-w", "json", str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    status: dict[str, Any] = json.loads(proc.stdout)
    return status


def _fill(etcd: ScratchEtcd) -> None:
    for i in range(200):
        etcd.put(f"/registry/secrets/ns/s-{i}".encode(), secrets.token_bytes(3000))
    etcd.put(b"/registry/namespaces/kube-system", json.dumps(
        {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "kube-system", "uid": "4d1e-restic"}}).encode())


@pytest.mark.parametrize("where", ["local", "rest"])
def test_an_etcd_snapshot_is_a_one_file_restic_snapshot(where: str, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    if where == "rest":
        server: RestServer = request.getfixturevalue("rest_server")
        repo = server.url(server.new_path())
    else:
        repo = str(tmp_path / "repo")
    env = clean_env({"RESTIC_PASSWORD": PASSWORD, "KUBECTL_DR_REPO": str(tmp_path / "plain")})
    with ScratchEtcd(tmp_path, name="ext") as etcd:
        _fill(etcd)
        refused = dr("etcd", "snapshot", "--endpoints", etcd.endpoint, "--repo", f"restic:{repo}", env=env)
        assert refused.returncode == 1 and "restic init" in refused.stderr, refused.stderr  # asked, no terminal
        dry = dr("etcd", "snapshot", "--endpoints", etcd.endpoint, "--repo", f"restic:{repo}", "--dry-run=client",
                 env=env)
        assert dry.returncode == 0 and "(dry run)" in dry.stdout, dry.stderr
        taken = dr("etcd", "snapshot", "--endpoints", etcd.endpoint, "--repo", f"restic:{repo}", "--yes", "-o",
                   "json", env=env)
        assert taken.returncode == 0, taken.stderr
        data = json.loads(taken.stdout)
        etcd.put(b"/registry/configmaps/x/after", b"later")
        second = dr("etcd", "snapshot", "--endpoints", etcd.endpoint, "--repo", f"restic:{repo}", env=env)
        assert second.returncode == 0, second.stderr
    assert not (tmp_path / "plain").exists()  # nothing went into the plain repository
    assert data["paths"] == ["/snapshot.db"] and data["hostname"] == "ext"
    assert {"cluster=4d1e-restic", "kind=etcd-snapshot", "member=ext", f"sha256={data['sha256']}"} <= set(data["tags"])
    if where == "rest":
        assert server.password not in taken.stdout + taken.stderr  # the URL's password is never shown

    restic(repo, "check", "--read-data")
    snaps = restic_json(repo, "snapshots")
    assert len(snaps) == 2 and snaps[0]["id"] == data["id"]
    restic(repo, "restore", data["id"], "--target", str(tmp_path / "out"))
    restored = tmp_path / "out" / "snapshot.db"
    assert sha256_file(restored) == data["sha256"] and restored.stat().st_size == data["size"]
    status = etcdutl_status(restored)
    assert status["revision"] == data["details"]["revision"] and status["totalKey"] == data["details"]["totalKeys"]
    assert f"revision={status['revision']}" in data["tags"]

    # both listings of etcd snapshots read them from the restic repository, newest first, without a cluster
    listed = dr("etcd", "snapshots", "list", "--repo", f"restic:{repo}", "-o", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)["items"]
    assert [i["id"] for i in items] == [snaps[1]["id"], data["id"]]
    assert {k: items[1][k] for k in ("node", "member", "revision", "size", "sha256", "cluster")} == {
        "node": "ext", "member": "ext", "revision": status["revision"], "size": data["size"],
        "sha256": data["sha256"], "cluster": "4d1e-restic"}
    assert items[0]["revision"] > items[1]["revision"]
    by_type = dr("backups", "list", "--repo", f"restic:{repo}", "--type", "etcd", "-o", "json", env=env)
    assert by_type.returncode == 0 and json.loads(by_type.stdout)["items"] == items, by_type.stderr
    table = dr("etcd", "snapshots", "list", "--repo", f"restic:{repo}", "--node", "ext", env=env)
    assert table.returncode == 0 and data["id"][:8] in table.stdout and "REVISION" in table.stdout, table.stderr
    none = dr("etcd", "snapshots", "list", "--repo", f"restic:{repo}", "--node", "elsewhere", env=env)
    assert none.returncode == 0 and "No etcd snapshots in" in none.stderr, none.stderr

    # restic forget groups them by host and path, as it would the same file backed up with --stdin
    groups = restic_json(repo, "forget", "--dry-run", "--keep-last", "1")
    assert [(g["host"], g["paths"], len(g["keep"]), len(g["remove"] or [])) for g in groups] == [
        ("ext", ["/snapshot.db"], 1, 1)]


def test_a_single_file_snapshot_restic_took_reads_back_checked(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    restic(repo_dir, "init")
    payload = os.urandom(3 * (1 << 20) + 17)
    proc = subprocess.run(["restic", "-r", str(repo_dir), "-q", "backup", "--stdin", "--stdin-filename",
                           "snapshot.db", "--host", "cp-0"], input=payload, capture_output=True, timeout=120,
                          env={**os.environ, "RESTIC_PASSWORD": PASSWORD,
                               "RESTIC_CACHE_DIR": str(tmp_path / ".cache")}, check=False)
    assert proc.returncode == 0, proc.stderr
    repo = Repository.open(LocalBackend(repo_dir), PASSWORD.encode())
    (snap,) = repo.snapshots()
    out = tmp_path / "got"
    with open(out, "wb") as f:
        size, digest = singlefile.write_to(repo, snap, f)
    assert out.read_bytes() == payload and (size, digest) == (len(payload), hashlib.sha256(payload).hexdigest())

    # ours, with a tag that does not match its content: refused after reading
    src = tmp_path / "src.db"
    src.write_bytes(payload)
    stored = singlefile.store(repo, src, "snapshot.db", hostname="cp-0", tags=["kind=etcd-snapshot"])
    assert stored.sha256 == digest and singlefile.recorded_sha256(stored.snapshot) == digest
    restic(repo_dir, "check", "--read-data")
    stored.snapshot.tags = ["sha256=" + "0" * 64]
    with pytest.raises(Exception, match="its tag says"), open(tmp_path / "bad", "wb") as f:
        singlefile.write_to(repo, stored.snapshot, f)
    with pytest.raises(Exception, match="changed while it was stored"):
        singlefile.store(repo, src, "snapshot.db", sha256="1" * 64)
    assert len(repo.snapshots()) == 2  # the refused store wrote no snapshot
