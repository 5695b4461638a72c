"""Offline snapshot verification against real etcd snapshots and the real ``etcdctl snapshot status``."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubectl_dr.etcd.snapshot_file import (
    NotASnapshotError,
    SnapshotChecksumError,
    SnapshotCorruptError,
    SnapshotEmptyError,
    SnapshotError,
    SnapshotTruncatedError,
    SnapshotUnreadableError,
    StreamedHashes,
    verify_snapshot,
)

from .etcd_scratch import ScratchEtcd, etcd_available, snapshot_status

pytestmark = pytest.mark.skipif(not etcd_available(), reason="needs /usr/bin/etcd and /usr/bin/etcdctl")

PAGE = 4096


def _load(etcd: ScratchEtcd, rng: random.Random) -> dict[str, Path]:
    """Write a varied history into etcd and save a snapshot after each stage."""
    snaps: dict[str, Path] = {}
    out = etcd.workdir

    snaps["fresh"] = etcd.snapshot_save(out / "fresh.db")

    # Thousands of keys with values of every small size: many leaf and branch pages.
    for i in range(3000):
        etcd.put(f"/registry/pods/ns-{i % 17}/pod-{i:05d}".encode(), rng.randbytes(rng.randrange(0, 700)))
    snaps["many-keys"] = etcd.snapshot_save(out / "many-keys.db")

    # Deletes (single and ranged) leave tombstones and free pages; a lease fills the lease bucket.
    for i in range(0, 3000, 7):
        etcd.delete(f"/registry/pods/ns-{i % 17}/pod-{i:05d}".encode())
    etcd.delete(b"/registry/pods/ns-3/", b"/registry/pods/ns-30")
    lease = etcd.grant_lease(3600)
    for i in range(50):
        etcd.put(f"/registry/leases/l-{i}".encode(), b"held", lease=lease)
    snaps["deletes"] = etcd.snapshot_save(out / "deletes.db")

    # Large values span overflow pages; updating keys many times then compacting physically frees
    # most of the history.
    for i in range(6):
        etcd.put(f"/registry/configmaps/big-{i}".encode(), rng.randbytes(300_000 + i * 250_000))
    last = 0
    for round_ in range(5):
        for i in range(400):
            last = etcd.put(f"/registry/events/e-{i:04d}".encode(), f"round {round_}".encode() * 20)
    etcd.compact(last - 100)
    snaps["compacted"] = etcd.snapshot_save(out / "compacted.db")
    return snaps


@pytest.fixture(scope="module")
def etcd_and_snapshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ScratchEtcd, dict[str, Path]]]:
    work = tmp_path_factory.mktemp("etcd-snapshots")
    etcd = ScratchEtcd(work).start()
    try:
        yield etcd, _load(etcd, random.Random(20261122))
    finally:
        etcd.stop()


@pytest.fixture(scope="module")
def snapshots(etcd_and_snapshots: tuple[ScratchEtcd, dict[str, Path]]) -> dict[str, Path]:
    return etcd_and_snapshots[1]


@pytest.fixture()
def good(snapshots: dict[str, Path]) -> Path:
    return snapshots["deletes"]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x40]))


def _reseal(path: Path) -> None:
    """Recompute the SHA-256 trailer, as etcd would have for a database damaged before the snapshot."""
    data = path.read_bytes()[:-32]
    path.write_bytes(data + hashlib.sha256(data).digest())


@pytest.mark.parametrize("name", ["fresh", "many-keys", "deletes", "compacted"])
def test_status_equals_etcdctl(snapshots: dict[str, Path], name: str) -> None:
    path = snapshots[name]
    expected = snapshot_status(path)
    status = verify_snapshot(path)

    assert status.hash == expected["hash"]
    assert status.revision == expected["revision"]
    assert status.total_keys == expected["totalKey"]
    assert status.total_size == expected["totalSize"]
    assert status.etcdctl_status() == {k: expected[k] for k in ("hash", "revision", "totalKey", "totalSize")}

    data = path.read_bytes()
    assert status.has_trailer
    assert status.file_size == len(data)
    assert status.sha256 == hashlib.sha256(data).hexdigest()
    assert status.total_size == len(data) - 32
    assert sum(status.buckets.values()) == status.total_keys
    assert status.page_size == PAGE


def test_snapshots_cover_the_interesting_shapes(snapshots: dict[str, Path]) -> None:
    """The history above really produced distinct databases with keys, leases and multiple revisions."""
    fresh = verify_snapshot(snapshots["fresh"])
    many = verify_snapshot(snapshots["many-keys"])
    deletes = verify_snapshot(snapshots["deletes"])
    compacted = verify_snapshot(snapshots["compacted"])
    # An empty key bucket reports revision 0; etcd starts counting at 1, so the 3000th put is 3001.
    assert fresh.revision == 0 and fresh.buckets["key"] == 0
    assert many.revision == 3001 and many.buckets["key"] == 3000
    assert deletes.buckets["lease"] == 1 and deletes.revision > many.revision
    # Compaction dropped most of the 2000 event revisions: fewer keys than revisions written.
    assert compacted.revision > deletes.revision + 2000
    assert compacted.buckets["key"] < compacted.revision
    assert compacted.total_size > 3_000_000  # the big values live in overflow pages
    assert compacted.consistent_index is not None and compacted.consistent_index > 0


def test_data_dir_database_without_trailer(
    etcd_and_snapshots: tuple[ScratchEtcd, dict[str, Path]], tmp_path: Path
) -> None:
    """A bbolt file taken from a stopped member's data dir has no trailer; accepted only when asked."""
    etcd, _ = etcd_and_snapshots
    db = tmp_path / "db"
    etcd.stop()
    try:
        shutil.copyfile(etcd.data_dir / "member" / "snap" / "db", db)
    finally:
        etcd.start()
    expected = snapshot_status(db)
    status = verify_snapshot(db, require_trailer=False)
    assert not status.has_trailer
    assert status.etcdctl_status() == {k: expected[k] for k in ("hash", "revision", "totalKey", "totalSize")}
    if os.path.getsize(db) % 512 != 32:
        with pytest.raises(SnapshotTruncatedError):
            verify_snapshot(db)


def test_snapshot_without_trailer_matches_with_trailer(good: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.db"
    bare.write_bytes(good.read_bytes()[:-32])
    with_trailer = verify_snapshot(good)
    without = verify_snapshot(bare, require_trailer=False)
    assert without.etcdctl_status() == with_trailer.etcdctl_status()
    with pytest.raises(SnapshotTruncatedError, match=r"is not 32 more than a multiple of 512") as info:
        verify_snapshot(bare)
    # Page-aligned without a trailer is what a data dir's db looks like: the error names the flag that reads it.
    assert "a database file copied from a data dir has none: --allow-missing-trailer" in str(info.value)


def test_progress_reports_bytes_hashed(good: Path) -> None:
    seen: list[int] = []
    verify_snapshot(good, progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == good.stat().st_size - 32


# --- damaged files -------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 31, 32, 33, 511, 1000])
def test_truncated_by_a_few_bytes(good: Path, tmp_path: Path, cut: int) -> None:
    bad = tmp_path / "cut.db"
    bad.write_bytes(good.read_bytes()[:-cut])
    size = bad.stat().st_size
    with pytest.raises(SnapshotTruncatedError) as info:
        verify_snapshot(bad)
    assert f"snapshot is truncated: {size} bytes is not 32 more than a multiple of 512" in str(info.value)
    assert info.value.reason == "truncated"


def test_truncated_by_whole_pages_breaks_the_trailer(good: Path, tmp_path: Path) -> None:
    """Cutting a multiple of 512 keeps the size rule; the SHA-256 trailer still catches it."""
    bad = tmp_path / "cut-page.db"
    bad.write_bytes(good.read_bytes()[:-PAGE])
    with pytest.raises(SnapshotChecksumError, match="SHA-256 trailer does not match the contents"):
        verify_snapshot(bad)


def test_truncated_database_resealed(good: Path, tmp_path: Path) -> None:
    """A database cut short before its trailer was computed: bbolt's high water mark tells."""
    data = good.read_bytes()[:-32]
    cut = data[: len(data) - 2 * PAGE]
    bad = tmp_path / "cut-resealed.db"
    bad.write_bytes(cut + hashlib.sha256(cut).digest())
    with pytest.raises(SnapshotCorruptError, match="bbolt database is truncated"):
        verify_snapshot(bad)


@pytest.mark.parametrize("where", ["meta", "middle", "last-page"])
def test_flipped_byte_in_body(good: Path, tmp_path: Path, where: str) -> None:
    bad = _copy(good, tmp_path / "flip.db")
    size = bad.stat().st_size
    offset = {"meta": 16 + 20, "middle": size // 2, "last-page": size - 32 - 100}[where]
    _flip(bad, offset)
    with pytest.raises(SnapshotChecksumError) as info:
        verify_snapshot(bad)
    assert "SHA-256 trailer does not match the contents" in str(info.value)
    assert info.value.reason == "sha256-mismatch"


def test_flipped_byte_in_trailer(good: Path, tmp_path: Path) -> None:
    bad = _copy(good, tmp_path / "flip-trailer.db")
    _flip(bad, bad.stat().st_size - 5)
    with pytest.raises(SnapshotChecksumError, match="SHA-256 trailer does not match the contents"):
        verify_snapshot(bad)


def _streamed(data: bytes, sizes: list[int]) -> tuple[StreamedHashes, str]:
    """The hashes of `data` fed in pieces of these sizes, in turn, as a stream hands them over."""
    hashes, whole, at, i = StreamedHashes(), hashlib.sha256(), 0, 0
    while at < len(data):
        piece = data[at : at + sizes[i % len(sizes)]]
        hashes.update(memoryview(piece))
        whole.update(piece)
        at, i = at + len(piece), i + 1
    return hashes, whole.hexdigest()


@pytest.mark.parametrize("sizes", [[1 << 20], [1, 31, 32, 33, 4096], [7], [65536, 3]])
def test_hashes_taken_from_the_stream_give_the_same_status(good: Path, sizes: list[int]) -> None:
    """Whatever the pieces (shorter than the trailer, or ending inside it), the status is the one a
    hashing pass over the file gives, and the file is still checked against its trailer."""
    streamed = _streamed(good.read_bytes(), sizes)
    assert verify_snapshot(good, streamed=streamed) == verify_snapshot(good)


def test_a_damaged_stream_still_fails_the_trailer_check(good: Path, tmp_path: Path) -> None:
    bad = _copy(good, tmp_path / "flip-streamed.db")
    _flip(bad, bad.stat().st_size // 2)
    with pytest.raises(SnapshotChecksumError, match="SHA-256 trailer does not match the contents"):
        verify_snapshot(bad, streamed=_streamed(bad.read_bytes(), [1 << 16]))


def test_hashes_of_another_size_are_not_trusted(good: Path, tmp_path: Path) -> None:
    """Hashes that do not cover exactly the file (it grew or shrank after the stream) are not used: the
    file is read and hashed as it is."""
    data = good.read_bytes()
    streamed = _streamed(data[:-512], [1 << 16])
    assert verify_snapshot(good, streamed=streamed) == verify_snapshot(good)


@pytest.mark.parametrize("meta_page", [0, 1])
def test_meta_page_checksum(good: Path, tmp_path: Path, meta_page: int) -> None:
    """A meta page altered before the trailer was computed: the FNV-1a checksum of bbolt catches it."""
    bad = _copy(good, tmp_path / "meta.db")
    _flip(bad, meta_page * PAGE + 16 + 48)  # a byte of the txid field
    _reseal(bad)
    with pytest.raises(SnapshotCorruptError, match=f"bbolt meta page {meta_page} checksum mismatch"):
        verify_snapshot(bad)


def test_page_of_wrong_type(good: Path, tmp_path: Path) -> None:
    """A leaf page of the key bucket turned into something else is found by the page walk."""
    bad = _copy(good, tmp_path / "type.db")
    data = bytearray(bad.read_bytes())
    high_water = struct.unpack_from("<Q", data, 16 + 40)[0]
    leaves = [
        pgid
        for pgid in range(2, high_water)
        if struct.unpack_from("<QH", data, pgid * PAGE) == (pgid, 0x02)
        and b"/registry/pods/" in data[pgid * PAGE : (pgid + 1) * PAGE]
    ]
    assert leaves, "expected leaf pages holding the test keys"
    struct.pack_into("<H", data, leaves[len(leaves) // 2] * PAGE + 8, 0x10)
    bad.write_bytes(bytes(data))
    _reseal(bad)
    with pytest.raises(SnapshotCorruptError, match="invalid type"):
        verify_snapshot(bad)


def test_leaf_key_order_violation(good: Path, tmp_path: Path) -> None:
    """Swap two keys' bytes inside one leaf page: sizes stay right, only the order is wrong."""
    bad = _copy(good, tmp_path / "order.db")
    data = bytearray(bad.read_bytes())
    # Keys of the "key" bucket are 17-byte revisions: swap the first two of one of its leaf pages.
    j = -1
    high_water = struct.unpack_from("<Q", data, 16 + 40)[0]
    for pgid in range(2, high_water):
        base = pgid * PAGE
        page_id, flags, count, _ = struct.unpack_from("<QHHI", data, base)
        if page_id != pgid or flags != 0x02 or count < 2:
            continue
        _, pos0, ksize0, _ = struct.unpack_from("<IIII", data, base + 16)
        _, pos1, ksize1, _ = struct.unpack_from("<IIII", data, base + 32)
        if ksize0 == ksize1 == 17:
            i, j = base + 16 + pos0, base + 32 + pos1
            key0, key1 = bytes(data[i : i + 17]), bytes(data[j : j + 17])
            data[i : i + 17], data[j : j + 17] = key1, key0
            break
    assert j > 0, "expected a leaf page of the key bucket"
    bad.write_bytes(bytes(data))
    _reseal(bad)
    with pytest.raises(SnapshotCorruptError, match="key order violation"):
        verify_snapshot(bad)


def test_not_a_snapshot(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not an etcd snapshot\n" * 100)
    with pytest.raises(NotASnapshotError, match="not an etcd snapshot") as info:
        verify_snapshot(text)
    assert info.value.reason == "not-a-snapshot"

    # Even with a size that passes the size rule.
    sized = tmp_path / "random.bin"
    sized.write_bytes(random.Random(1).randbytes(8 * 512 + 32))
    with pytest.raises(NotASnapshotError):
        verify_snapshot(sized)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(SnapshotEmptyError, match="the file is empty"):
        verify_snapshot(empty)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SnapshotUnreadableError, match="cannot open the file"):
        verify_snapshot(tmp_path / "nope.db")
    with pytest.raises(SnapshotUnreadableError, match="not a regular file"):
        verify_snapshot(tmp_path)


def test_errors_are_snapshot_errors(tmp_path: Path) -> None:
    empty = tmp_path / "e.db"
    empty.write_bytes(b"")
    with pytest.raises(SnapshotError) as info:
        verify_snapshot(empty)
    assert info.value.path == str(empty)
    assert str(info.value).startswith(f"{empty}: ")


# --- streaming ----------------------------------------------------------------------------------


def test_memory_stays_flat_on_a_large_snapshot(tmp_path_factory: pytest.TempPathFactory) -> None:
    """~80 MB of values: Python allocations during verification stay far below the file size."""
    work = tmp_path_factory.mktemp("etcd-large")
    rng = random.Random(7)
    with ScratchEtcd(work, name="large") as etcd:
        for i in range(40):
            etcd.put(f"/registry/secrets/blob-{i:02d}".encode(), rng.randbytes(2_000_000))
        for i in range(2000):
            etcd.put(f"/registry/small/{i}".encode(), rng.randbytes(200))
        path = etcd.snapshot_save(work / "large.db")
    size = path.stat().st_size
    assert size > 80_000_000

    tracemalloc.start()
    try:
        status = verify_snapshot(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = snapshot_status(path)
    assert status.etcdctl_status() == {k: expected[k] for k in ("hash", "revision", "totalKey", "totalSize")}
    # bbolt keeps at least two keys per leaf page, so one page with its overflow can hold two 2 MB
    # values; add a 1 MiB slice for the CRC and bookkeeping. Nothing grows with the file size.
    assert peak < 6_000_000, f"peak allocation {peak} bytes for a {size}-byte snapshot"
