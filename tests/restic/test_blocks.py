"""Block-level backup's pieces without a cluster: which file is compared chunk by chunk, which byte ranges
are read (the range script run by real busybox and GNU sh/dd/wc/tee, its counts read back), and the new
node's content put together from the parent's blobs and the new ones, in a real repository."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from kubectl_dr.errors import VerificationError
from kubectl_dr.repo.restic import nodes
from kubectl_dr.repo.restic.backend import LocalBackend
from kubectl_dr.repo.restic.packs import DATA_BLOB
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.volumes import restic_blocks, scripts
from kubectl_dr.volumes.listing import Found
from tests.restic import shells

MIB = 1 << 20


def _found(size: int, links: int = 1) -> Found:
    return Found("db", "file", 0o600, size, links, 7, 1000, 1000, 1_700_000_000, (size + 511) // 512, (0, 0), 1)



def test_only_large_single_link_files_with_their_blobs_in_the_index_are_compared(tmp_path: Path) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), b"pw")
    pieces = [os.urandom(MIB) for _ in range(70)]
    blobs = repo.save_blobs(DATA_BLOB, pieces)
    repo.flush()
    prev = nodes.Node(name="db", type=nodes.FILE, size=70 * MIB, content=blobs)
    grown = restic_blocks.candidate(repo, "db", _found(70 * MIB + 5), prev)
    assert grown is not None and grown.covered == 70 * MIB and len(grown.parent) == 70
    shrunk = restic_blocks.candidate(repo, "db", _found(65 * MIB - 1), prev)
    assert shrunk is not None and len(shrunk.parent) == 64  # only whole pieces within the new size
    assert restic_blocks.candidate(repo, "db", _found(restic_blocks.THRESHOLD - 1), prev) is None
    assert restic_blocks.candidate(repo, "db", _found(70 * MIB, links=2), prev) is None
    assert restic_blocks.candidate(repo, "db", _found(70 * MIB), None) is None
    unknown = nodes.Node(name="db", type=nodes.FILE, size=70 * MIB, content=[*blobs[:-1], "ab" * 32])
    assert restic_blocks.candidate(repo, "db", _found(70 * MIB), unknown) is None


def test_differing_pieces_and_the_tail_become_merged_ranges() -> None:
    f = restic_blocks.BlockFile("db", 10 * MIB + 3, [("a" * 64, MIB)] * 10)
    same = [True, False, False, True, True, True, True, True, True, False]
    assert restic_blocks._ranges(f, same) == [(MIB, 2 * MIB), (9 * MIB, MIB + 3)]
    assert restic_blocks._ranges(f, [True] * 10) == [(10 * MIB, 3)]
    exact = restic_blocks.BlockFile("db", 10 * MIB, [("a" * 64, MIB)] * 10)
    assert restic_blocks._ranges(exact, [True] * 10) == []


@pytest.mark.parametrize("flavour", ["busybox", "gnu"])
def test_the_range_script_reads_exactly_the_ranges_and_counts_a_short_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flavour: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    content = os.urandom(3 * 65536 + 777)
    (data / "odd name\n").write_bytes(content)
    monkeypatch.setattr(scripts, "DATA", str(data))
    monkeypatch.setattr(scripts, "SCRATCH", str(tmp_path))
    f = restic_blocks.BlockFile("odd name\n", len(content), [("0" * 64, 65536 + 1), ("1" * 64, 65536)])
    plan = restic_blocks._Plan(f, [False, True], [(0, 65536 + 1), (2 * 65536 + 1, 65536 + 776)])
    script = tmp_path / "ranges.sh"
    script.write_bytes(restic_blocks.ranges_script([plan]))
    env = shells.tools(tmp_path, flavour)
    out = subprocess.run(["sh", str(script)], capture_output=True, env=env, check=True).stdout
    want = content[:65536 + 1] + content[2 * 65536 + 1:]
    assert out[:len(want)] == want
    restic_blocks.check_counts(out[len(want):] + b"\0" * 1000, [65536 + 1, 65536 + 776], "test")
    # The file shrank before the last range was read: its count says so, whatever the padding holds.
    os.truncate(data / "odd name\n", len(content) - 10)
    out = subprocess.run(["sh", str(script)], capture_output=True, env=env, check=True).stdout
    with pytest.raises(VerificationError, match="changed size while it was read"):
        restic_blocks.check_counts(out[len(want) - 10:], [65536 + 1, 65536 + 776], "test")


def test_the_new_content_keeps_equal_pieces_and_stores_the_others_at_the_same_boundaries(tmp_path: Path) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), b"pw")
    old = [os.urandom(MIB) for _ in range(4)]
    blobs = repo.save_blobs(DATA_BLOB, old)
    repo.flush()
    new_second = os.urandom(MIB)
    tail = os.urandom(MIB + 10)  # beyond the parent's pieces: cut as any new content (1 MiB, then 10 bytes)
    f = restic_blocks.BlockFile("db", 5 * MIB + 10, list(zip(blobs, [MIB] * 4, strict=True)))
    plan = restic_blocks._Plan(f, [True, False, True, True], [(MIB, MIB), (4 * MIB, MIB + 10)])
    spool = tmp_path / "spool"
    spool.write_bytes(new_second + tail)
    with open(spool, "rb") as s:
        content = restic_blocks._store(repo, plan, s)
    repo.flush()
    assert content[0] == blobs[0] and content[2:4] == blobs[2:4]
    assert content[1] == hashlib.sha256(new_second).hexdigest()
    assert content[4:] == [hashlib.sha256(tail[:MIB]).hexdigest(), hashlib.sha256(tail[MIB:]).hexdigest()]
    whole = b"".join(repo.load_blob(b) for b in content)
    assert whole == old[0] + new_second + old[2] + old[3] + tail
