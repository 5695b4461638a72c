"""`kubectl dr control-plane backup|restore --repo restic:REPO` on the loopback cluster, the real restic CLI as
the oracle: the snapshot passes `restic check --read-data`, `restic ls` shows the node's files at their own
paths and `restic restore` gives them back byte for byte with their modes and owners; our restore from it
writes the shared set onto a rebuilt node exactly as from any repository, and nothing is left running."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.cli_runner import dr
from tests.cluster.fixture import Cluster, ClusterFactory
from tests.e2e.test_control_plane_files import SHARED, kubeadm_modes, ok, state, write_pki
from tests.e2e.test_etcd_snapshot import leftover_pods
from tests.restic.oracle import PASSWORD, restic, restic_json

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def nodes(cluster_factory: ClusterFactory) -> Cluster:
    c = cluster_factory(control_planes=1, workers=1, private="control-plane-restic")
    write_pki(c.layout.host_path(c.control_planes[0], "/etc/kubernetes/pki"))
    return c


def test_round_trip_through_a_restic_repository(nodes: Cluster, tmp_path: Path) -> None:
    cp, target = nodes.control_planes[0], nodes.workers[0]
    repo = tmp_path / "restic"
    password = {"RESTIC_PASSWORD": PASSWORD}
    taken = dr("control-plane", "backup", "--repo", f"restic:{repo}", "--yes", "-o", "json", cluster=nodes,
               extra_env=password, timeout=300, subprocess=True)
    data = ok(taken)
    assert "NOT encrypted" not in taken.stderr  # restic encrypts it; the staging copy here is private
    cluster_uid = next(t for t in data["tags"] if t.startswith("cluster=")).split("=", 1)[1]
    assert {"kind=control-plane", f"node={cp}"} <= set(data["tags"]) and cluster_uid
    assert data["hostname"] == cp and data["paths"] == ["/etc/kubernetes", "/kubectl-dr"]
    assert leftover_pods(nodes) == []

    restic(repo, "check", "--read-data")
    (listed,) = restic_json(repo, "snapshots")
    assert listed["id"] == data["id"] and listed["hostname"] == cp
    names = restic(repo, "ls", data["id"]).stdout.splitlines()
    assert {f"/etc/kubernetes/pki/{n}" for n in SHARED} <= set(names)
    assert {"/etc/kubernetes/manifests/kube-apiserver.yaml", "/kubectl-dr/control-plane.json"} <= set(names)
    restic(repo, "restore", data["id"], "--target", str(tmp_path / "theirs"))
    source = nodes.layout.host_path(cp, "/etc/kubernetes/pki")
    expected = state(source)
    # restic gives back the node's files exactly: contents, modes and owners as the node had them
    assert state(tmp_path / "theirs" / "etc" / "kubernetes" / "pki") == expected
    listing = json.loads((tmp_path / "theirs" / "kubectl-dr" / "control-plane.json").read_text())
    by_path = {f["path"]: f for f in listing["files"]}
    for name, (sha, *_) in expected.items():
        rec = by_path[f"/etc/kubernetes/pki/{name}"]
        assert (rec["sha256"], rec["size"]) == (sha, (source / name).stat().st_size)
        assert hashlib.sha256((tmp_path / "theirs" / "etc/kubernetes/pki" / name).read_bytes()).hexdigest() == sha

    plan = ok(dr("control-plane", "restore", "--from", "latest", "--node", target, "--repo", f"restic:{repo}",
                 "--dry-run=client", "-o", "json", cluster=nodes, extra_env=password))
    assert len(plan["written"]) == len(SHARED)
    assert plan["backup"] == data["id"]  # the snapshot, not the private ID it was staged under
    assert not nodes.layout.host_path(target, "/etc/kubernetes/pki").exists()
    restored = dr("control-plane", "restore", "--from", data["shortId"], "--node", target, "--repo", f"restic:{repo}",
                  "--yes", "-o", "json", cluster=nodes, extra_env=password, timeout=300, subprocess=True)
    out = ok(restored)
    assert out["backup"] == data["id"] and f"of restic snapshot {data['shortId']} to node {target}" in restored.stderr
    assert {w["action"] for w in out["written"]} == {"write"} and len(out["written"]) == len(SHARED)
    assert not [n for n in out["notes"] if "ignored" in n or "differs" in n]
    assert state(nodes.layout.host_path(target, "/etc/kubernetes/pki")) == kubeadm_modes(expected)
    assert leftover_pods(nodes) == []

    # a snapshot that is not a control-plane backup is refused by name, before any pod
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "f").write_text("x")
    restic(repo, "backup", str(tmp_path / "other"), "--host", "laptop")
    other = next(s for s in restic_json(repo, "snapshots") if s["hostname"] == "laptop")
    refused = dr("control-plane", "restore", "--from", other["short_id"], "--node", target, "--repo",
                 f"restic:{repo}", "--yes", cluster=nodes, extra_env=password)
    assert refused.returncode == 1 and "is not a control-plane backup" in refused.stderr, refused.stderr
    assert leftover_pods(nodes) == []


def test_the_encryption_config_through_a_restic_repository(nodes: Cluster, tmp_path: Path) -> None:
    """The encryption-at-rest config kube-apiserver names is in the snapshot at its own path; a restore with
    --with-encryption-config writes it where this cluster's kube-apiserver reads it, 0600 root."""
    from tests.e2e.test_etcd_encryption import CONFIG, KEY1, config, set_config

    target = nodes.workers[0]
    shutil.rmtree(nodes.layout.host_path(target, "/etc/kubernetes/pki"), ignore_errors=True)
    repo = tmp_path / "restic"
    password = {"RESTIC_PASSWORD": PASSWORD}
    text = config(("key1", KEY1))
    set_config(nodes, text)
    try:
        data = ok(dr("control-plane", "backup", "--repo", f"restic:{repo}", "--yes", "-o", "json", cluster=nodes,
                     extra_env=password, timeout=300, subprocess=True))
        assert CONFIG in restic(repo, "ls", data["id"]).stdout.splitlines()
        restic(repo, "restore", data["id"], "--target", str(tmp_path / "theirs"), "--include", CONFIG)
        assert (tmp_path / "theirs" / CONFIG.lstrip("/")).read_text() == text
        out = ok(dr("control-plane", "restore", "--from", "latest", "--node", target, "--repo", f"restic:{repo}",
                    "--with-encryption-config", "--yes", "-o", "json", cluster=nodes, extra_env=password, timeout=300,
                    subprocess=True))
    finally:
        set_config(nodes, None)
    written = nodes.layout.host_path(target, CONFIG)
    st = written.stat()
    assert written.read_text() == text and (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 0, 0)
    assert CONFIG in {w["path"] for w in out["written"]}
    assert leftover_pods(nodes) == []
