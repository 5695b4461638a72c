"""Block-level incremental backup of a large file into a restic repository, against the loopback cluster: a
100 MiB "database" an app (uid 1000) changed in a few 4 KiB pages sends exactly the 1 MiB chunks holding
those pages (and what it grew by), the rest reuses the parent's blobs, and the real restic CLI checks every
byte (`restic check --read-data`) and restores the new file exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kubectl_dr.repo.restic.chunking import CHUNK_SIZE
from tests.cli_runner import dr
from tests.datasets import differences, make_claim, new_namespace, snapshot, volume_dir
from tests.restic.oracle import PASSWORD, restic

MIB = 1 << 20
PAGE = 4096
BLOCK = 64 * 1024  # what a stream out of the pod is padded to


ENV = {"KUBECTL_DR_PROGRESS_INTERVAL": "1", "RESTIC_PASSWORD": PASSWORD}


def write_pages(path: Path, offsets: list[int]) -> None:
    """What a database does: rewrite pages in place (the owner, uid 1000, stays)."""
    with open(path, "r+b") as f:
        for offset in offsets:
            f.seek(offset)
            f.write(os.urandom(PAGE))


def test_a_large_file_with_a_few_changed_pages_sends_only_their_chunks(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "blocks")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    db = vol / "pgdata" / "base.db"
    db.parent.mkdir()
    with open(db, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(MIB))
    (vol / "pgdata" / "small.conf").write_text("shared_buffers = 128MB\n")
    os.symlink("base.db", vol / "pgdata" / "current")
    for path in (db.parent, db, vol / "pgdata" / "small.conf"):
        os.chown(path, 1000, 1000)
    os.lchown(vol / "pgdata" / "current", 1000, 1000)
    os.utime(db, (1_500_000_000, 1_500_000_000))
    repo = tmp_path / "repo"
    first = dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "-o", "json", cluster=cluster,
               extra_env=ENV, subprocess=True)
    assert first.returncode == 0, first.stderr
    full = json.loads(first.stdout)
    assert not full["incremental"] and full["receivedBytes"] > 100 * MIB

    # Three pages in three chunks (one of them straddling two: 2 chunks), and 10 KiB appended.
    write_pages(db, [3 * MIB + 5 * PAGE, 50 * MIB - PAGE // 2, 99 * MIB + 17 * PAGE])
    with open(db, "ab") as f:
        f.write(os.urandom(10 * 1024))
    second = dr("pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "-o", "json", cluster=cluster,
                extra_env=ENV, subprocess=True)
    assert second.returncode == 0, second.stderr
    inc = json.loads(second.stdout)
    assert inc["incremental"] and inc["parent"] == full["id"]
    assert "1 large file to compare chunk by chunk" in second.stderr, second.stderr
    changed_chunks = 4  # chunks 3, 49, 50 and 99
    blocks = inc["blocks"]
    assert blocks["files"] == 1 and blocks["hashedBytes"] == 100 * MIB
    assert blocks["sentBytes"] == changed_chunks * CHUNK_SIZE + 10 * 1024
    assert blocks["reusedBytes"] == (100 - changed_chunks) * MIB
    # What crossed the API: those chunks, the 100 chunk hashes (68 bytes a line), dd's counts, and the tar
    # of the one symlink (a symlink's target is not in the listing, so it is always read), each stream
    # padded to whole 64 KiB blocks: no more.
    tar_bytes = inc["receivedBytes"] - blocks["receivedBytes"]
    assert blocks["sentBytes"] + 100 * 68 < blocks["receivedBytes"] <= blocks["sentBytes"] + 3 * BLOCK
    assert 0 < tar_bytes <= BLOCK, tar_bytes
    assert inc["storedBytes"] < blocks["sentBytes"] + 64 * 1024, inc["storedBytes"]

    restic(repo, "check", "--read-data")
    restic(repo, "restore", inc["id"], "--target", str(tmp_path / "out"))
    got = tmp_path / "out" / "data"
    assert (got / "pgdata" / "base.db").read_bytes() == db.read_bytes()
    before = {k: v for k, v in snapshot(vol).items() if not k.startswith(b"lost+found")}
    assert differences(before, snapshot(got)) == []

    # A third backup after the same file shrank: only its whole pieces are compared, nothing is kept of a
    # size the file no longer has.
    os.truncate(db, 80 * MIB + 123)
    write_pages(db, [10 * MIB])
    third = dr("pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "-o", "json", cluster=cluster,
               extra_env=ENV, subprocess=True)
    assert third.returncode == 0, third.stderr
    shrunk = json.loads(third.stdout)
    assert shrunk["blocks"]["sentBytes"] == CHUNK_SIZE + 123
    restic(repo, "check", "--read-data")
    restic(repo, "restore", shrunk["id"], "--target", str(tmp_path / "out3"))
    assert (tmp_path / "out3" / "data" / "pgdata" / "base.db").read_bytes() == db.read_bytes()
