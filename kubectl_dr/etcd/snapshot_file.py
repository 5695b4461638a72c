"""Offline verification of an etcd snapshot file, without the etcd binaries.

A snapshot (as ``etcdctl snapshot save`` and the Maintenance/Snapshot API produce it) is a bbolt
database followed by a 32-byte SHA-256 of that database. Verification checks, in this order, so that
the verdict names the first thing wrong:

1. the file is not empty and starts like a bbolt database;
2. the size rule of etcd's restore code: ``size % 512 == 32`` (the database is page aligned, and the
   trailer adds 32 bytes), otherwise the file was cut short or padded;
3. the trailer equals the SHA-256 of everything before it;
4. the bbolt database: both meta pages and their checksums, the freelist, and a walk of every page of
   every bucket with bbolt's consistency checks (``Tx.Check``).

The walk computes what ``etcdctl snapshot status`` (3.4) and ``etcdutl snapshot status`` report, with
the same algorithm: ``hash`` is CRC-32C (Castagnoli) fed with each top-level bucket's name then each of
its keys and values in order; ``totalKey`` counts those keys over all top-level buckets; ``revision``
is the main revision in the last key of the ``key`` bucket; ``totalSize`` is the high water mark of
the database times its page size. Snapshots are never modified.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import google_crc32c

from kubectl_dr.errors import VerificationError
from kubectl_dr.etcd import bbolt

TRAILER_SIZE = 32  # SHA-256 digest appended by etcd after the database
SECTOR = 512  # etcd's restore code tests for the trailer with size % 512 == 32
_CHUNK = 1 << 20

_BIG_U64 = struct.Struct(">Q")

Progress = Callable[[int], None]


class SnapshotError(VerificationError):
    """An etcd snapshot file failed verification. ``reason`` is a stable word for machines."""

    reason = "invalid"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.verdict = message


class SnapshotUnreadableError(SnapshotError):
    reason = "unreadable"


class SnapshotEmptyError(SnapshotError):
    reason = "empty"


class NotASnapshotError(SnapshotError):
    reason = "not-a-snapshot"


class SnapshotTruncatedError(SnapshotError):
    reason = "truncated"


class SnapshotChecksumError(SnapshotError):
    reason = "sha256-mismatch"


class SnapshotCorruptError(SnapshotError):
    """The SHA-256 trailer matches (or is absent) but the bbolt database inside is inconsistent."""

    reason = "corrupt-database"


@dataclass(frozen=True)
class SnapshotStatus:
    path: str
    file_size: int
    sha256: str  # of the whole file, trailer included: what a backup manifest records
    has_trailer: bool
    # What etcdctl/etcdutl snapshot status print:
    hash: int
    revision: int
    total_keys: int
    total_size: int
    # More that the walk learns on the way:
    page_size: int
    txid: int
    buckets: dict[str, int] = field(default_factory=dict)  # keys per top-level bucket
    consistent_index: int | None = None
    storage_version: str | None = None  # etcd >= 3.6 records it in the meta bucket
    # The cluster version ("3.4.0", "3.5.0") etcd keeps in its cluster bucket; None if the key is missing.
    cluster_version: str | None = None

    def etcdctl_status(self) -> dict[str, int]:
        """Same keys and values as ``etcdctl snapshot status -w json``."""
        return {
            "hash": self.hash,
            "revision": self.revision,
            "totalKey": self.total_keys,
            "totalSize": self.total_size,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "fileSize": self.file_size,
            "sha256": self.sha256,
            "hasTrailer": self.has_trailer,
            **self.etcdctl_status(),
            "pageSize": self.page_size,
            "txid": self.txid,
            "buckets": dict(self.buckets),
            "consistentIndex": self.consistent_index,
            "storageVersion": self.storage_version,
            "clusterVersion": self.cluster_version,
        }


class StreamedHashes:
    """The hashes `verify_snapshot` needs, taken from the bytes as they are written to the file: SHA-256 of
    all but the last 32 (the trailer's place) here, of the whole file by the caller (a repository part
    hashes what it stores). Given both, the verification reads the file's database pages but does not
    read and hash the whole file a second time (~0.2 s per 200 MiB, in the fixed seconds of a snapshot)."""

    def __init__(self) -> None:
        self._body = hashlib.sha256()
        self._held = b""  # the last TRAILER_SIZE bytes seen: not in the body hash unless more follow
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self.size += len(view)
        if len(view) >= TRAILER_SIZE:
            self._body.update(self._held)
            self._body.update(view[:-TRAILER_SIZE])
            self._held = bytes(view[-TRAILER_SIZE:])
        else:
            held = self._held + bytes(view)
            self._body.update(held[:-TRAILER_SIZE])
            self._held = held[-TRAILER_SIZE:]

    def body(self) -> bytes:
        """SHA-256 of every byte but the last TRAILER_SIZE."""
        return self._body.digest()


def verify_snapshot(
    path: str | os.PathLike[str],
    *,
    require_trailer: bool = True,
    progress: Progress | None = None,
    streamed: tuple[StreamedHashes, str] | None = None,
) -> SnapshotStatus:
    """Verify the snapshot at ``path`` and report its status, or raise a ``SnapshotError``.

    ``require_trailer=False`` also accepts a bare database without the SHA-256 trailer (a ``db`` file
    copied out of a data directory, which etcd restores only with ``--skip-hash-check``).
    ``progress`` is called with the number of bytes hashed so far.
    ``streamed``: the hashes of the bytes written to ``path`` (``StreamedHashes`` and the whole file's
    SHA-256, hex), used instead of a hashing pass when they cover exactly the file's size.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError as exc:
        raise SnapshotUnreadableError(name, f"cannot open the file: {exc.strerror}") from exc
    try:
        return _verify(fd, name, require_trailer, progress, streamed)
    finally:
        os.close(fd)


def _verify(fd: int, name: str, require_trailer: bool, progress: Progress | None,
            streamed: tuple[StreamedHashes, str] | None) -> SnapshotStatus:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise SnapshotUnreadableError(name, "not a regular file")
    size = st.st_size
    if size == 0:
        raise SnapshotEmptyError(name, "the file is empty: not an etcd snapshot")
    looks_like_bbolt = bbolt.has_magic(bbolt.read_header(fd))

    has_trailer = size % SECTOR == TRAILER_SIZE
    if not has_trailer and (require_trailer or not looks_like_bbolt):
        if not looks_like_bbolt:
            raise NotASnapshotError(name, "not an etcd snapshot: the file does not start with a bbolt database")
        # Page-aligned is what a member's own db file is: say how to read it rather than only "truncated".
        bare = ("; a database file copied from a data dir has none: --allow-missing-trailer checks it without"
                if size % SECTOR == 0 else "")
        raise SnapshotTruncatedError(
            name,
            f"snapshot is truncated: {size} bytes is not 32 more than a multiple of 512 "
            f"(an etcd snapshot is a page-aligned database followed by a 32-byte SHA-256{bare})",
        )
    data_size = size - TRAILER_SIZE if has_trailer else size

    if streamed is not None and has_trailer and streamed[0].size == size:
        body, whole = streamed[0].body(), streamed[1]
        trailer = os.pread(fd, TRAILER_SIZE, data_size)
    else:
        body_hash, whole_hash, trailer = _hash_file(fd, name, data_size, size, progress)
        body, whole = body_hash.digest(), whole_hash.hexdigest()
    if has_trailer and body != trailer:
        if not looks_like_bbolt:
            raise NotASnapshotError(name, "not an etcd snapshot: the file does not start with a bbolt database")
        raise SnapshotChecksumError(
            name,
            "SHA-256 trailer does not match the contents: the file was altered or damaged "
            f"(trailer {trailer.hex()}, contents {body.hex()})",
        )

    try:
        return _read_database(fd, name, size, data_size, has_trailer, whole)
    except bbolt.BoltError as exc:
        raise SnapshotCorruptError(name, f"the bbolt database is damaged: {exc}") from exc


def _hash_file(fd: int, name: str, data_size: int, size: int, progress: Progress | None) -> tuple[Any, Any, bytes]:
    """SHA-256 of the database part and of the whole file in one sequential pass."""
    body = hashlib.sha256()
    offset = 0
    while offset < data_size:
        chunk = os.pread(fd, min(_CHUNK, data_size - offset), offset)
        if not chunk:
            raise SnapshotTruncatedError(name, "the file shrank while it was being read")
        body.update(chunk)
        offset += len(chunk)
        if progress is not None:
            progress(offset)
    trailer = os.pread(fd, size - data_size, data_size)
    whole = body.copy()
    whole.update(trailer)
    return body, whole, trailer


def _read_database(fd: int, name: str, size: int, data_size: int, has_trailer: bool, sha256: str) -> SnapshotStatus:
    db = bbolt.BoltFile(fd, data_size)
    db.check_freelist()

    crc = 0
    total_keys = 0
    revision = 0
    buckets: dict[str, int] = {}
    consistent_index: int | None = None
    storage_version: str | None = None
    cluster_version: str | None = None

    for top in db.root_entries():
        if top.bucket is None:
            # etcd's status code asks for a bucket under every root key and fails otherwise.
            raise bbolt.BoltError(f"the root holds a plain key {top.key!r} where only buckets belong")
        crc = google_crc32c.extend(crc, top.key)
        is_key_bucket = top.key == b"key"
        is_meta_bucket = top.key == b"meta"
        is_cluster_bucket = top.key == b"cluster"
        count = 0
        for entry in db.bucket_entries(top.key, top.bucket):
            crc = google_crc32c.extend(crc, entry.key)
            if entry.value is not None:
                crc = _crc_extend(crc, entry.value)
            count += 1
            if is_key_bucket:
                revision = _main_revision(entry.key)
            elif is_meta_bucket and entry.value is not None:
                if entry.key == b"consistent_index" and len(entry.value) == 8:
                    consistent_index = _BIG_U64.unpack(entry.value)[0]
                elif entry.key == b"storageVersion":
                    storage_version = bytes(entry.value).decode("utf-8", "replace")
            elif is_cluster_bucket and entry.key == b"clusterVersion" and entry.value is not None:
                cluster_version = bytes(entry.value).decode("utf-8", "replace")
            # Drop the view now: it pins its page, which would otherwise stay alive while the next
            # page (possibly megabytes of overflow) is read.
            del entry
        total_keys += count
        buckets[top.key.decode("utf-8", "backslashreplace")] = count

    db.check_all_pages_accounted()
    return SnapshotStatus(
        path=name,
        file_size=size,
        sha256=sha256,
        has_trailer=has_trailer,
        hash=crc,
        revision=revision,
        total_keys=total_keys,
        total_size=db.high_water * db.page_size,
        page_size=db.page_size,
        txid=db.meta.txid,
        buckets=buckets,
        consistent_index=consistent_index,
        storage_version=storage_version,
        cluster_version=cluster_version,
    )


def _crc_extend(crc: int, value: memoryview) -> int:
    # The C extension takes bytes only; copying a multi-megabyte value in slices keeps the copy small.
    for start in range(0, len(value), _CHUNK):
        crc = google_crc32c.extend(crc, bytes(value[start : start + _CHUNK]))
    return crc


def _main_revision(key: bytes) -> int:
    # Keys of the "key" bucket are an 8-byte big-endian main revision, "_", an 8-byte sub revision
    # (and a "t" for tombstones); the status reports the main revision of the last one, as a signed int.
    if len(key) < 8:
        raise bbolt.BoltError(f"the key bucket holds {key.hex()!r}, too short to be a revision")
    value: int = struct.unpack(">q", key[:8])[0]
    return value
