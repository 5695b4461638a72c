"""Each failure is clear, exits 1, and leaves nothing behind (no pods, no changed volume, no scaled app)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from kubectl_dr.repo import LocalRepository
from tests.cli_runner import clean_env, dr, executable
from tests.datasets import make_claim, managed_pods, new_namespace, snapshot, volume_dir
from tests.e2e.test_pvc_consumers import deployment, replicas_and_records, running_pods
from tests.polling import eventually


def test_unknown_namespace_and_claim(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "err")
    gone = dr("pvc", "backup", "data", "-n", "no-such-namespace", "--repo", str(tmp_path), cluster=cluster)
    assert gone.returncode == 1 and 'namespaces "no-such-namespace" not found' in gone.stderr
    missing = dr("pvc", "restore", "nope", "-n", ns, "--repo", str(tmp_path), "--from", "latest", "--yes",
                 cluster=cluster)
    assert missing.returncode == 1 and '"nope" not found' in missing.stderr
    assert "Traceback" not in missing.stderr



def test_user_who_cannot_read_namespaces_gets_the_claims_message(cluster: Any, tmp_path: Path) -> None:
    # The default policy of the limited user reads claims in "default" but no Namespace objects.
    result = dr("pvc", "backup", "nope", "-n", "default", "--repo", str(tmp_path), cluster=cluster,
                     context="loopback-limited")
    assert result.returncode == 1
    assert 'persistentvolumeclaims "nope" not found in namespace "default"' in result.stderr
    assert "Forbidden" not in result.stderr


def test_pending_claim(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "pend")
    make_claim(cluster, ns, storage_class="no-such-class", wait=False)
    result = dr("pvc", "backup", "data", "-n", ns, "--repo", str(tmp_path), cluster=cluster)
    assert result.returncode == 1
    assert "Pending" in result.stderr and "kubectl describe pvc" in result.stderr
    assert managed_pods(cluster, ns) == []


def test_image_that_cannot_be_pulled(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "img")
    make_claim(cluster, ns)
    start = time.monotonic()
    result = dr("pvc", "backup", "data", "-n", ns, "--repo", str(tmp_path / "repo"),
                "--image", "registry.invalid/nothing:1", cluster=cluster, subprocess=True)
    assert result.returncode == 1
    assert "cannot be pulled" in result.stderr and "registry.invalid/nothing:1" in result.stderr
    assert time.monotonic() - start < 60
    assert managed_pods(cluster, ns) == []
    assert not list((tmp_path / "repo").glob("*")) or not any(p.name[0] != "." for p in (tmp_path / "repo").iterdir())


def test_corrupted_backup_is_refused_before_anything_is_touched(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "bad")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, {}))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    app_pod = running_pods(cluster, ns, "app=app")[0]
    vol = volume_dir(cluster, ns)
    (vol / "file").write_bytes(b"x" * 100_000)
    repo = tmp_path / "repo"
    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    data = repo / json.loads(backup.stdout)["id"] / "data.tar"
    raw = bytearray(data.read_bytes())
    raw[5000] ^= 0xFF  # one flipped bit in the middle of the file's content
    data.write_bytes(bytes(raw))
    (vol / "file").write_bytes(b"current")
    before = snapshot(vol)

    result = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", "--yes", cluster=cluster,
                subprocess=True)
    assert result.returncode == 1
    assert "damaged" in result.stderr and "SHA-256" in result.stderr
    assert snapshot(vol) == before
    assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
    assert running_pods(cluster, ns, "app=app") == [app_pod]
    assert managed_pods(cluster, ns) == []


@pytest.mark.parametrize("offset", [5000, 148], ids=["content", "header-checksum"])
def test_corrupted_backup_of_an_unused_claim(cluster: Any, tmp_path: Path, offset: int) -> None:
    """Nothing to stop: the rescue pod starts while the backup is verified, and goes when the check fails.
    A damaged header breaks the listing too; the damage is still what the user is told."""
    ns = new_namespace(cluster, "badfree")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    (vol / "file").write_bytes(os.urandom(8 << 20))
    repo = tmp_path / "repo"
    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    data = repo / json.loads(backup.stdout)["id"] / "data.tar"
    raw = bytearray(data.read_bytes())
    raw[offset] ^= 0x01
    data.write_bytes(bytes(raw))
    (vol / "file").write_bytes(b"current")
    before = snapshot(vol)

    result = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", "--yes", cluster=cluster,
                subprocess=True)
    assert result.returncode == 1
    assert "is damaged: part \"data.tar\" has SHA-256" in result.stderr, result.stderr
    assert "Do not restore from it" in result.stderr
    if offset == 5000:
        assert "volume mounted read-write (while the backup is verified)" in result.stderr
    else:  # the listing failed first: refused before any pod or question
        assert "starting rescue pod" not in result.stderr
    assert snapshot(vol) == before
    assert managed_pods(cluster, ns) == []


def _big_backup(repo_path: Path, ns: str, size: int) -> str:
    """A backup of one file of zeros, written straight into the repository: large enough that its
    checksum pass lasts a while, without moving it through a pod first."""
    repo = LocalRepository(repo_path)
    info = tarfile.TarInfo("big")
    info.size, info.mtime, info.mode = size, 1_700_000_000, 0o644
    zeros = bytes(1 << 20)
    with repo.create("pvc", {"namespace": ns, "pvc": "data"}, f"{ns}-data") as writer:
        with writer.open_part("data.tar") as part:
            part.write(info.tobuf(tarfile.GNU_FORMAT))
            for _ in range(size // len(zeros)):
                part.write(zeros)
            part.write(bytes(1024))  # the end-of-archive blocks
        return writer.commit({}).id


def test_dry_run_of_a_damaged_backup_records_nothing(cluster: Any, tmp_path: Path) -> None:
    """A damaged header breaks the listing, and the backup is checked to say why: in a client dry run that
    check leaves no verification record (one found damaged would change what prune keeps)."""
    ns = new_namespace(cluster, "drybad")
    make_claim(cluster, ns)
    repo = tmp_path / "repo"
    backup_id = _big_backup(repo, ns, 1 << 20)
    data = repo / backup_id / "data.tar"
    raw = bytearray(data.read_bytes())
    raw[148] ^= 0x01  # the first header's checksum
    data.write_bytes(bytes(raw))
    before = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))

    result = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", backup_id,
                "--dry-run=client", cluster=cluster)
    assert result.returncode == 1
    assert 'is damaged: part "data.tar" has SHA-256' in result.stderr, result.stderr
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == before
    assert managed_pods(cluster, ns) == []


def test_interrupt_during_verification_deletes_the_early_pod(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "verint")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    (vol / "big").write_bytes(b"current")
    before = snapshot(vol)
    repo = tmp_path / "repo"
    # By its ID: a backup written here records no cluster, and `latest` picks only the cluster's own.
    backup_id = _big_backup(repo, ns, 2 << 30)

    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_PROGRESS_INTERVAL": "0.1"})
    proc = subprocess.Popen([executable(), "pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from",
                             backup_id, "--yes"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("verify ") and "(done)" not in line:
            break
    eventually(lambda: managed_pods(cluster, ns) != [], what="the rescue pod created during the checksum pass")
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait(60)
    assert proc.returncode == 130, [*seen, rest]
    assert any("(while the backup is verified)" in line for line in seen), seen
    assert "(done)" not in rest, rest  # still verifying when interrupted
    assert "cleaning up: delete rescue pod" in rest and "interrupted by SIGINT" in rest
    assert managed_pods(cluster, ns) == []
    assert snapshot(vol) == before


def test_unsafe_tar_file_is_refused(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "evil")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "x").write_text("x")
    evil = tmp_path / "evil.tar"
    subprocess.run(["tar", "-c", "-f", str(evil), "-C", str(src), "--transform", "s,^sub,../../escape,", "sub"],
                   check=True)
    before = snapshot(vol)
    result = dr("pvc", "restore", "data", "-n", ns, "--repo", str(tmp_path / "repo"), "--from", str(evil),
                "--yes", cluster=cluster)
    assert result.returncode == 1 and "'..'" in result.stderr
    assert snapshot(vol) == before
    assert managed_pods(cluster, ns) == []


def test_rbac_forbidden(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "rbac")
    make_claim(cluster, ns)
    result = dr("--context", "loopback-limited", "pvc", "backup", "data", "-n", ns, "--repo", str(tmp_path),
                cluster=cluster)
    assert result.returncode == 1
    assert "Error from server (Forbidden)" in result.stderr
    assert managed_pods(cluster, ns) == []
