"""`kubectl dr control-plane backup|restore` on the loopback cluster: the shared CA and key set of a
control-plane node round-trips exactly (content, mode, owner) onto a rebuilt node, the backup is 0600 in
the repository (age-encrypted with --encrypt-to, with a warning when not), a node that has other keys is
refused, and nothing is left running.

The loopback's nodes have kubeadm's etcd PKI but not the cluster CA; the test writes a kubeadm-style
pki/ with real keys, modes and one non-root owner, as a real node's admin might have left it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyrage
import pytest

from tests.cli_runner import dr
from tests.cluster.fixture import Cluster, ClusterFactory
from tests.e2e.test_etcd_snapshot import leftover_pods
from tests.s3server import S3Server

pytestmark = [pytest.mark.slow]
SHARED = ("ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt",
          "etcd/ca.key")


@pytest.fixture(scope="module")
def nodes(cluster_factory: ClusterFactory) -> Cluster:
    # Its own cluster: the test writes a CA onto its nodes.
    c = cluster_factory(control_planes=1, workers=2, private="control-plane")
    write_pki(c.layout.host_path(c.control_planes[0], "/etc/kubernetes/pki"))
    return c


def write_pki(pki: Path) -> None:
    for stem in ("ca", "front-proxy-ca"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(pki / f"{stem}.key"), "-out", str(pki / f"{stem}.crt"), "-subj", f"/CN={stem}",
                        "-days", "2"], check=True, capture_output=True)
    subprocess.run(["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")],
                   check=True, capture_output=True)
    for key in pki.glob("*.key"):
        key.chmod(0o600)
    for public in (*pki.glob("*.crt"), pki / "sa.pub"):
        public.chmod(0o644)
    # An owner the restore must keep (an admin's group-readable public key), and an odd mode.
    os.chown(pki / "sa.pub", 1000, 1000)
    (pki / "front-proxy-ca.crt").chmod(0o640)


def state(pki: Path) -> dict[str, tuple[str, int, int, int]]:
    out = {}
    for name in SHARED:
        st = (pki / name).stat()
        out[name] = (hashlib.sha256((pki / name).read_bytes()).hexdigest(), st.st_mode & 0o7777, st.st_uid,
                     st.st_gid)
    return out


def kubeadm_modes(recorded: dict[str, tuple[str, int, int, int]]) -> dict[str, tuple[str, int, int, int]]:
    """What a restore writes: the recorded contents, kubeadm's modes (keys and sa.pub 0600, certificates
    0644), owned by root."""
    return {name: (sha, 0o644 if name.endswith(".crt") else 0o600, 0, 0) for name, (sha, *_) in recorded.items()}


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout)


def test_round_trip_exact_and_unencrypted_warning(nodes: Cluster, tmp_path: Path) -> None:
    cp, target = nodes.control_planes[0], nodes.workers[0]
    repo = tmp_path / "repo"
    result = dr("control-plane", "backup", "-o", "json", cluster=nodes, repo=repo, timeout=300, subprocess=True)
    data = ok(result)
    assert "NOT encrypted" in result.stderr and "private keys" in result.stderr
    assert data["type"] == "control-plane" and data["details"]["node"] == cp
    stored = Path(data["location"])
    assert (data["repository"], data["size"]) == (str(repo), sum(p["size"] for p in data["parts"]))
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in stored.iterdir() if p.is_file())
    files = {f["path"]: f for f in data["details"]["files"]}
    source = nodes.layout.host_path(cp, "/etc/kubernetes/pki")
    expected = state(source)
    for name, (sha, mode, uid, gid) in expected.items():
        f = files[f"/etc/kubernetes/pki/{name}"]
        assert (f["sha256"], int(f["mode"], 8), f["uid"], f["gid"], f["restore"]) == (sha, mode, uid, gid, True)
    assert files["/etc/kubernetes/manifests/kube-apiserver.yaml"]["restore"] is False
    assert leftover_pods(nodes) == []

    # A node that does not exist: said before any pod, and by the dry run too (its plan names the node).
    for args in (["backup", "--node", "nope"], ["restore", "--from", "latest", "--node", "nope", "--dry-run=client"]):
        wrong = dr("control-plane", *args, cluster=nodes, repo=repo)
        assert wrong.returncode == 1 and 'node "nope" does not exist' in wrong.stderr, wrong.stderr
    assert leftover_pods(nodes) == []

    # The rebuilt node has nothing: everything is written, exactly.
    plan = ok(dr("control-plane", "restore", "--from", "latest", "--node", target, "--dry-run=client", "-o", "json",
                 cluster=nodes, repo=repo))
    assert len(plan["written"]) == len(SHARED) and not nodes.layout.host_path(target, "/etc/kubernetes/pki").exists()
    restored = dr("control-plane", "restore", "--from", data["id"], "--node", target, "--yes", "-o", "json",
                  cluster=nodes, repo=repo, timeout=300, subprocess=True)
    out = ok(restored)
    assert {w["action"] for w in out["written"]} == {"write"} and len(out["written"]) == len(SHARED)
    assert not [n for n in out["notes"] if "ignored" in n or "differs" in n]  # an untouched backup: nothing to say
    assert "kubeadm join --control-plane" in restored.stderr
    pki = nodes.layout.host_path(target, "/etc/kubernetes/pki")
    # The contents of the backup, with kubeadm's modes and owner (the tool's table, not the recorded ones).
    assert state(pki) == kubeadm_modes(expected)
    assert "note: /etc/kubernetes/pki/sa.pub is written 0600 0:0 (kubeadm's), not 0644 1000:1000" in restored.stderr
    # Only the shared set: no manifests, kubeconfigs or the member's own certificates.
    assert not nodes.layout.host_path(target, "/etc/kubernetes/manifests").exists()
    assert not (pki / "etcd" / "server.key").exists()
    assert leftover_pods(nodes) == []

    # Again: all unchanged, nothing asked.
    again = ok(dr("control-plane", "restore", "--from", data["id"], "--node", target, "-o", "json",
                  cluster=nodes, repo=repo, timeout=300, subprocess=True))
    assert again["written"] == [] and len(again["unchanged"]) == len(SHARED)
    # The same content with another mode is a conflict, named with the mode a restore writes.
    (pki / "ca.crt").chmod(0o640)
    moded = dr("control-plane", "restore", "--from", data["id"], "--node", target, "--yes", cluster=nodes, repo=repo,
               timeout=300, subprocess=True)
    assert moded.returncode == 1
    assert "/etc/kubernetes/pki/ca.crt has mode 0640 owner 0:0, a restore writes it 0644 0:0 (kubeadm's)" in \
        moded.stderr


def test_encrypted_backup_and_a_node_with_other_keys(nodes: Cluster, tmp_path: Path) -> None:
    target = nodes.workers[1]
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age.txt"
    key_file.write_text(f"{identity}\n")
    repo = tmp_path / "repo"
    result = dr("control-plane", "backup", "--encrypt-to", str(identity.to_public()), "-o", "json",
                cluster=nodes, repo=repo, timeout=300, subprocess=True)
    data = ok(result)
    assert "NOT encrypted" not in result.stderr
    assert all(p.name.endswith(".age") for p in Path(data["location"]).iterdir() if p.name.startswith("f"))
    ca = (nodes.layout.host_path(nodes.control_planes[0], "/etc/kubernetes/pki/ca.key")).read_bytes()
    assert not any(ca in p.read_bytes() for p in Path(data["location"]).iterdir() if p.is_file())

    # Without the identity nothing can be read, so nothing is written.
    refused = dr("control-plane", "restore", "--from", data["id"], "--node", target, "--yes", cluster=nodes, repo=repo)
    assert refused.returncode == 1 and "--identity" in refused.stderr
    assert not nodes.layout.host_path(target, "/etc/kubernetes/pki").exists()

    # A node with its own CA is not the rebuilt node: refused, untouched; --overwrite keeps the old files.
    own = nodes.layout.host_path(target, "/etc/kubernetes/pki")
    own.mkdir(parents=True)
    (own / "ca.key").write_bytes(b"another CA\n")
    (own / "ca.key").chmod(0o600)
    conflict = dr("control-plane", "restore", "--from", data["id"], "--node", target, "-i", str(key_file), "--yes",
                  cluster=nodes, repo=repo, timeout=300, subprocess=True)
    assert conflict.returncode == 1
    assert "/etc/kubernetes/pki/ca.key differs from the backup" in conflict.stderr
    assert "Nothing was changed" in conflict.stderr
    assert (own / "ca.key").read_bytes() == b"another CA\n" and not (own / "ca.crt").exists()
    out = ok(dr("control-plane", "restore", "--from", data["id"], "--node", target, "-i", str(key_file), "--yes",
                "--overwrite", "-o", "json", cluster=nodes, repo=repo, timeout=300, subprocess=True))
    assert state(own) == kubeadm_modes(state(nodes.layout.host_path(nodes.control_planes[0], "/etc/kubernetes/pki")))
    (aside,) = out["keptAside"]
    assert nodes.layout.host_path(target, aside).read_bytes() == b"another CA\n"
    assert leftover_pods(nodes) == []


def tamper(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a writer of the repository would edit: a static pod marked for restore (plainly and through
    '..'), a root of its own, the cluster CA swapped with the etcd CA, a setuid mode and another owner."""
    details = manifest["details"]
    by_path = {f["path"]: f for f in details["files"]}
    apiserver = dict(by_path["/etc/kubernetes/manifests/kube-apiserver.yaml"])
    details["files"] += [
        {**apiserver, "path": "/etc/kubernetes/manifests/evil.yaml", "restore": True, "role": "shared"},
        {**apiserver, "path": "/etc/kubernetes/pki/../../../evil/evil.yaml", "restore": True, "role": "shared"},
    ]
    ca, etcd_ca = by_path["/etc/kubernetes/pki/ca.crt"], by_path["/etc/kubernetes/pki/etcd/ca.crt"]
    for a, b in ((ca, etcd_ca), (etcd_ca, dict(ca))):
        a.update(part=b["part"], size=b["size"], sha256=b["sha256"])
    by_path["/etc/kubernetes/pki/ca.key"].update(mode="4777", uid=1000, gid=1000)
    details["root"] = "/etc/kubernetes/manifests/../../../"
    details["directories"] = [{**d, "mode": "0777", "uid": 1000} for d in details["directories"]]
    return manifest


def check_untampered(nodes: Cluster, target: str, result: subprocess.CompletedProcess[str]) -> None:
    out = ok(result)
    source = state(nodes.layout.host_path(nodes.control_planes[0], "/etc/kubernetes/pki"))
    pki = nodes.layout.host_path(target, "/etc/kubernetes/pki")
    assert state(pki) == kubeadm_modes(source)  # the right CA in each place, kubeadm's modes, root's
    for directory in (pki, pki / "etcd"):
        st = directory.stat()
        assert (st.st_mode & 0o7777, st.st_uid) == (0o755, 0)
    assert not nodes.layout.host_path(target, "/etc/kubernetes/manifests").exists()
    assert not nodes.layout.host_path(target, "/evil").exists()
    notes = "\n".join(out["notes"])
    assert "ignored: the backup marks /etc/kubernetes/manifests/evil.yaml for restore" in notes
    assert "ignored: the backup marks /etc/kubernetes/pki/../../../evil/evil.yaml for restore" in notes
    assert "differs from the backup's index.json part" in notes
    assert {w["path"] for w in out["written"]} == {f"/etc/kubernetes/pki/{n}" for n in SHARED}
    assert leftover_pods(nodes) == []


def test_a_tampered_manifest_decides_nothing_local(nodes: Cluster, tmp_path: Path) -> None:
    target = nodes.workers[0]
    shutil.rmtree(nodes.layout.host_path(target, "/etc/kubernetes/pki"), ignore_errors=True)
    repo = tmp_path / "repo"
    data = ok(dr("control-plane", "backup", "-o", "json", cluster=nodes, repo=repo, timeout=300, subprocess=True))
    path = Path(data["location"]) / "manifest.json"
    path.write_text(json.dumps(tamper(json.loads(path.read_text())), indent=2))
    plan = ok(dr("control-plane", "restore", "--from", data["id"], "--node", target, "--dry-run=client", "-o",
                 "json", cluster=nodes, repo=repo))
    assert {w["path"] for w in plan["written"]} == {f"/etc/kubernetes/pki/{n}" for n in SHARED}
    assert any("evil.yaml" in n for n in plan["notes"])
    check_untampered(nodes, target, dr("control-plane", "restore", "--from", data["id"], "--node", target, "--yes",
                                       "-o", "json", cluster=nodes, repo=repo, timeout=300, subprocess=True))


def test_a_tampered_manifest_decides_nothing_s3_encrypted(nodes: Cluster, seaweedfs: S3Server,
                                                          tmp_path: Path) -> None:
    """Encrypted in S3: which part holds which file comes from the encrypted index, the manifest is ignored."""
    target = nodes.workers[1]
    shutil.rmtree(nodes.layout.host_path(target, "/etc/kubernetes/pki"), ignore_errors=True)
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age.txt"
    key_file.write_text(f"{identity}\n")
    bucket = seaweedfs.new_bucket()
    at, s3env = f"s3://{bucket}/cp", seaweedfs.env()
    data = ok(dr("control-plane", "backup", "--encrypt-to", str(identity.to_public()), "-o", "json", cluster=nodes,
                 repo=at, extra_env=s3env, timeout=300, subprocess=True))
    client = seaweedfs.client()
    key = f"cp/{data['id']}/manifest.json"
    manifest = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(tamper(manifest)).encode())
    check_untampered(nodes, target, dr("control-plane", "restore", "--from", data["id"], "--node", target, "--yes",
                                       "-i", str(key_file), "-o", "json", cluster=nodes, repo=at, extra_env=s3env,
                                       timeout=300, subprocess=True))

    # Without its encrypted index (as an older backup), the plain manifest is not trusted: refused.
    manifest["parts"] = [p for p in manifest["parts"] if p["name"] != "index.json"]
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode())
    shutil.rmtree(nodes.layout.host_path(target, "/etc/kubernetes/pki"))
    refused = dr("control-plane", "restore", "--from", data["id"], "--node", target, "--yes", "-i", str(key_file),
                 cluster=nodes, repo=at, extra_env=s3env)
    assert refused.returncode == 1 and "encrypted but has no index.json part" in refused.stderr
    assert not nodes.layout.host_path(target, "/etc/kubernetes/pki").exists()


def test_the_encryption_config_goes_where_the_cluster_reads_it(nodes: Cluster, tmp_path: Path) -> None:
    """A writer who rewrites the whole file list (manifest and index) to put the encryption config into
    manifests/ still gets it written only where this cluster's kube-apiserver reads it, 0600 root."""
    from tests.e2e.test_etcd_encryption import CONFIG, KEY1, config, set_config

    target = nodes.workers[0]
    shutil.rmtree(nodes.layout.host_path(target, "/etc/kubernetes/pki"), ignore_errors=True)
    repo = tmp_path / "repo"
    text = config(("key1", KEY1))
    set_config(nodes, text)
    try:
        data = ok(dr("control-plane", "backup", "-o", "json", cluster=nodes, repo=repo, timeout=300, subprocess=True))
        assert data["details"]["encryptionConfig"] == CONFIG
        location = Path(data["location"])
        evil = "/etc/kubernetes/manifests/evil.yaml"
        index = json.loads((location / "index.json").read_text())
        for f in index["files"]:
            if f["role"] == "encryption-config":
                f.update(path=evil, mode="4755", uid=1000)
        raw = json.dumps(index).encode()
        (location / "index.json").write_bytes(raw)
        manifest = json.loads((location / "manifest.json").read_text())
        for part in manifest["parts"]:
            if part["name"] == "index.json":
                part.update(size=len(raw), sha256=hashlib.sha256(raw).hexdigest())
        for f in manifest["details"]["files"]:
            if f.get("role") == "encryption-config":
                f.update(path=evil, mode="4755", uid=1000)
        (location / "manifest.json").write_text(json.dumps(manifest))

        out = ok(dr("control-plane", "restore", "--from", data["id"], "--node", target, "--with-encryption-config",
                    "--yes", "-o", "json", cluster=nodes, repo=repo, timeout=300, subprocess=True))
    finally:
        set_config(nodes, None)
    written = nodes.layout.host_path(target, CONFIG)
    st = written.stat()
    assert written.read_text() == text and (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 0, 0)
    assert not nodes.layout.host_path(target, evil).exists()
    assert any(f"was at {evil} on the backed-up node; it is written where this cluster's kube-apiserver reads it"
               in n for n in out["notes"])
    assert CONFIG in {w["path"] for w in out["written"]}
    written.unlink()
