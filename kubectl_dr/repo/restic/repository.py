"""A restic repository opened with its password: blobs in, blobs out, trees, snapshots.

Writing follows restic's order, so that an interruption at any moment leaves a valid repository with at
most some unreferenced packs (which `restic prune` removes): blobs go into packs, a pack is stored
whole before the index that names it, the index before the snapshot that needs it (`flush`, then
`save_snapshot`). Files other than packs (index, snapshots, locks) are encrypted JSON; in version 2 the
plaintext is `0x02 || zstd(JSON)` (a plaintext starting with `{` or `[` is plain JSON, as restic 1 wrote).

Everything read is checked: a file's name is the SHA-256 of its stored bytes, a blob's ID the SHA-256 of
its plaintext, every MAC before decryption, and decompressed sizes against the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

import zstandard

from kubectl_dr.repo.restic import crypto, index, keys, packs
from kubectl_dr.repo.restic.backend import CONFIG, DATA, INDEX, KEYS, SNAPSHOTS, Backend, ResticBackendError
from kubectl_dr.repo.restic.nodes import Node, ResticFormatError, decode_tree, encode_tree
from kubectl_dr.repo.restic.packs import TREE_BLOB
from kubectl_dr.repo.restic.snapshots import Snapshot

_ZSTD_LEVEL = 3  # restic's "auto" compression is zstd's default speed
_MAX_UNPACKED = 1 << 30  # a metadata file larger than this when decompressed is refused, not inflated
_COMPRESSED_PREFIX = 2
K = TypeVar("K")
# A blob ready for a pack: its ID, its payload (the plaintext, or its zstd frame), its uncompressed length or 0
Prepared = tuple[str, bytes | bytearray, int]
_LOADERS = 8  # index and snapshot files read at once
_PROBE = 32 * 1024  # bytes of each sample that tells an incompressible blob
_AHEAD = 4  # blobs prepared ahead of the one being added: 2 threads busy, memory a few MiB


class Repository:
    def __init__(self, backend: Backend, key: crypto.Key, config: keys.Config) -> None:
        self.backend = backend
        self.key = key
        self.config = config
        self._index: index.Index | None = None
        self._writers: dict[str, packs.PackWriter] = {}
        self._unindexed: list[tuple[str, list[packs.BlobEntry]]] = []
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(2, "restic-blobs")
        # Full packs are stored on a thread of their own, one at a time, while the next one fills: the local
        # backend's fsync alone waited ~35 ms per 16 MiB pack (2.2 s per GiB) on the test machine, and while
        # the adding thread waited, so did the stream. At most one pack is being stored and one filling.
        self._store_pool = ThreadPoolExecutor(1, "restic-pack-store")
        self._storing: _Storing | None = None
        self._waiting = threading.Lock()  # wait_stored, one caller at a time
        self._spare: list[bytearray] = []  # pack buffers free for the next pack (at most two exist)
        self.bytes_stored = 0  # pack bytes written by this process (what an incremental backup added)

    # -- opening -----------------------------------------------------------------------------------

    @classmethod
    def init(cls, backend: Backend, password: bytes) -> Repository:
        backend.create()
        master = crypto.Key.random()
        config = keys.Config.new()
        key_file = keys.new_key_file(master, password)
        backend.save(KEYS, keys.key_file_id(key_file), key_file)
        # The config last: it is what makes the directory a repository (restic's `init` order too).
        backend.save(CONFIG, CONFIG, master.seal(config.to_bytes()))
        return cls(backend, master, config)

    @classmethod
    def open(cls, backend: Backend, password: bytes) -> Repository:
        if not backend.exists():
            raise ResticBackendError(f"there is no restic repository at {backend.describe()} (no config file)")
        master = None
        for name, _size in backend.list(KEYS):
            data = backend.load(KEYS, name)
            if hashlib.sha256(data).hexdigest() != name:
                continue  # a damaged key file; another may still open the repository
            try:
                master = keys.open_key_file(data, password)
                break
            except keys.WrongPassword:
                continue
        if master is None:
            raise keys.WrongPassword(f"wrong password or no key found for the restic repository at "
                                     f"{backend.describe()}: check RESTIC_PASSWORD / --password-file")
        config = keys.Config.from_bytes(master.open(backend.load(CONFIG, CONFIG)))
        return cls(backend, master, config)

    # -- files other than packs --------------------------------------------------------------------

    def load_unpacked(self, kind: str, name: str) -> bytes:
        stored = self.backend.load(kind, name)
        if hashlib.sha256(stored).hexdigest() != name:
            raise ResticFormatError(f"{kind}/{name[:8]}… does not match its name (damaged)")
        plain = self.key.open(stored)
        if plain[:1] in (b"{", b"["):
            return plain
        if plain[:1] == bytes([_COMPRESSED_PREFIX]) and self.config.version >= 2:
            return _decompress(plain[1:], _MAX_UNPACKED)
        raise ResticFormatError(f"{kind}/{name[:8]}… has an unknown encoding (first byte {plain[:1]!r})")

    def _load_all(self, kind: str, names: list[str]) -> Iterator[bytes]:
        """`load_unpacked` of each name, in order, several at once: a remote repository's index and snapshot
        files are many small requests, each mostly a round trip (the backend was already used by the
        listing, so a client it makes lazily exists before the threads share it)."""
        if len(names) <= 1:
            yield from (self.load_unpacked(kind, name) for name in names)
            return
        with ThreadPoolExecutor(min(_LOADERS, len(names)), "restic-load") as pool:
            yield from pool.map(lambda name: self.load_unpacked(kind, name), names)

    def save_unpacked(self, kind: str, plain: bytes) -> str:
        if self.config.version >= 2:
            # The lock's refresh thread saves lock files while this thread saves an index or a snapshot.
            plain = bytes([_COMPRESSED_PREFIX]) + self._zstd().compress(plain)
        stored = self.key.seal(plain)
        name = hashlib.sha256(stored).hexdigest()
        self.backend.save(kind, name, stored)
        return name

    # -- blobs -------------------------------------------------------------------------------------

    @property
    def index(self) -> index.Index:
        if self._index is None:
            idx = index.Index()
            for data in self._load_all(INDEX, [name for name, _size in self.backend.list(INDEX)]):
                idx.merge(data)
            self._index = idx
        return self._index

    def reload_index(self) -> None:
        """Read the index files again on next use (after a prune replaced them)."""
        self._index = None

    def has_blob(self, blob_id: str) -> bool:
        return blob_id in self.index

    def _zstd(self) -> zstandard.ZstdCompressor:
        """This thread's compressor: a ZstdCompressor must not be shared between threads."""
        compressor: zstandard.ZstdCompressor | None = getattr(self._local, "zstd", None)
        if compressor is None:
            compressor = self._local.zstd = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        return compressor

    def prepare_blob(self, plain: bytes | bytearray, blob_id: str | None = None) -> Prepared:
        """(ID, payload, uncompressed length or 0): the CPU work of a blob before its pack. SHA-256 and zstd
        release the GIL, so `save_blobs` and `BlobStream` run this on two threads; the encryption is done
        by the thread that adds blobs, straight into the pack (`_add`). `blob_id`: the plaintext's SHA-256
        when the caller has just computed it (not computed twice)."""
        if blob_id is None:
            blob_id = hashlib.sha256(plain).hexdigest()
        ulen = 0
        payload = plain
        if self.config.version >= 2 and plain and self._may_compress(plain):
            packed = self._zstd().compress(plain)
            # Stored compressed only when smaller. restic itself compresses every blob in its default mode
            # (it stores a blob raw only under `--compression off`), but its format and `restic check`
            # accept either, and a raw blob costs no decompression on restore.
            if len(packed) < len(plain):
                payload, ulen = packed, len(plain)
        return blob_id, payload, ulen

    def _may_compress(self, plain: bytes | bytearray) -> bool:
        """False when two samples of a large blob (its start and its middle) do not shrink by 2 %: such a
        blob (already compressed or encrypted data: media, archives, a database's compressed pages) is
        stored as is without compressing all of it, which cost 0.65 CPU-s per GiB of random data, a fifth
        of a blob's CPU work. The format allows either; a blob stored raw that would have compressed is
        only stored larger."""
        if len(plain) < 4 * _PROBE:
            return True
        middle = len(plain) // 2
        sample = bytes(plain[:_PROBE]) + bytes(plain[middle:middle + _PROBE])
        return len(self._zstd().compress(sample)) < len(sample) * 0.98

    def save_blobs(self, blob_type: str, pieces: Iterable[bytes]) -> list[str]:
        """Stores each piece (in order) as save_blob does; see `save_keyed_blobs`."""
        return [blob_id for _, blob_id in self.save_keyed_blobs(blob_type, ((None, p) for p in pieces))]

    def save_keyed_blobs(self, blob_type: str, pieces: Iterable[tuple[K, bytes]]) -> Iterator[tuple[K, str]]:
        """(key, ID) of each (key, piece) in order, stored as save_blob does, preparing a few pieces ahead
        on two threads (across keys: many small files keep both busy). A piece the repository already
        has is prepared for nothing, which costs only CPU."""
        pending: deque[tuple[K, Future[Prepared]]] = deque()
        for key, piece in pieces:
            pending.append((key, self._pool.submit(self.prepare_blob, piece)))
            if len(pending) >= _AHEAD:
                done_key, future = pending.popleft()
                yield done_key, self._add(blob_type, *future.result())
        while pending:
            done_key, future = pending.popleft()
            yield done_key, self._add(blob_type, *future.result())

    def save_blob(self, blob_type: str, plain: bytes) -> str:
        """Stores a blob unless the repository (or this run) already has it; returns its ID."""
        blob_id = hashlib.sha256(plain).hexdigest()
        if blob_id in self.index:
            return blob_id
        return self._add(blob_type, *self.prepare_blob(plain, blob_id))

    def prepare_blobs(self, pieces: list[bytes | bytearray]) -> Future[list[Prepared]]:
        """`prepare_blob` of each piece, as one job on the repository's two threads (many small files' blobs
        in one job: a job's hand-over costs more than a 16 KiB blob's hashing and encryption)."""
        return self._pool.submit(lambda: [self.prepare_blob(p) for p in pieces])

    def add_prepared(self, blob_type: str, blob_id: str, payload: bytes | bytearray, ulen: int) -> str:
        """Adds what `prepare_blob` made to the open pack (unless the repository has it); one thread at a time."""
        return self._add(blob_type, blob_id, payload, ulen)

    def _add(self, blob_type: str, blob_id: str, payload: bytes | bytearray, ulen: int) -> str:
        if blob_id in self.index:
            return blob_id
        writer = self._writers.get(blob_type)
        if writer is None:
            writer = self._writers[blob_type] = packs.PackWriter(self.key, self._spare.pop() if self._spare else None)
        writer.seal(blob_id, blob_type, payload, ulen)
        self.index.blobs[blob_id] = index.Location("", blob_type, 0, 0, 0)  # pending: dedup within the run
        if writer.size >= packs.TARGET_PACK_SIZE:
            self._store_pack(blob_type)
        return blob_id

    def _store_pack(self, blob_type: str) -> None:
        """Hands the pack to the storing thread, once the one before it is stored."""
        writer = self._writers.pop(blob_type, None)
        if writer is None or not writer.entries:
            return
        pack_id, data = writer.finish()
        try:
            self.wait_stored()
        except BaseException:
            data.release()
            raise
        self._storing = _Storing(self._store_pool.submit(self._save_pack, pack_id, data), pack_id, writer)

    def _save_pack(self, pack_id: str, data: memoryview) -> None:
        with data:  # released once stored: its buffer is then free for another pack
            self.backend.save(DATA, pack_id, data)

    def wait_stored(self) -> None:
        """Waits for the pack being stored, if any, and indexes it; raises what storing it raised. Nothing of
        this repository is being written once it returns (whatever it raised): the lock goes next. One caller at a
        time (the stream's writer thread and the lock's release can both ask during a teardown)."""
        with self._waiting:
            storing = self._storing
            if storing is None:
                return
            try:
                storing.future.result()
            finally:
                # Interrupted while waiting: the save goes on, so it is waited for to its end, whatever signal
                # comes next (as the cleanup's unwinding does); only then is its buffer free and the pack done.
                while not storing.future.done():
                    with contextlib.suppress(BaseException):
                        wait([storing.future])
                self._storing = None
                self._spare.append(storing.writer.buffer)
            writer = storing.writer
            self.bytes_stored += writer.size
            self.index.add_pack(storing.pack_id, [])
            for e in writer.entries:
                self.index.blobs[e.id] = index.Location(storing.pack_id, e.type, e.offset, e.length,
                                                        e.uncompressed_length)
            self._unindexed.append((storing.pack_id, writer.entries))

    def flush(self) -> None:
        """Stores the open packs, then one index file naming every pack stored since the last flush."""
        for blob_type in list(self._writers):
            self._store_pack(blob_type)
        self.wait_stored()
        if self._unindexed:
            self.save_unpacked(INDEX, index.encode(self._unindexed))
            self._unindexed = []

    def load_blob(self, blob_id: str) -> bytes:
        loc = self.index.blobs.get(blob_id)
        if loc is None or not loc.pack:
            raise ResticFormatError(f"blob {blob_id[:8]}… is not in the repository's index")
        sealed = self.backend.load(DATA, loc.pack, loc.offset, loc.length)
        plain = self.key.open(sealed)
        if loc.uncompressed_length:
            plain = _decompress(plain, loc.uncompressed_length)
            if len(plain) != loc.uncompressed_length:
                raise ResticFormatError(f"blob {blob_id[:8]}… decompressed to the wrong length")
        if hashlib.sha256(plain).hexdigest() != blob_id:
            raise ResticFormatError(f"blob {blob_id[:8]}… in pack {loc.pack[:8]}… does not match its ID (damaged)")
        return plain

    # -- trees and snapshots -----------------------------------------------------------------------

    def save_tree(self, nodes: list[Node]) -> str:
        return self.save_blob(TREE_BLOB, encode_tree(nodes))

    def load_tree(self, tree_id: str) -> list[Node]:
        return decode_tree(self.load_blob(tree_id))

    def save_snapshot(self, snap: Snapshot) -> str:
        """Call after `flush`: the snapshot is the last file of a backup."""
        if self._unindexed or self._writers or self._storing is not None:
            raise RuntimeError("a snapshot is saved only after its packs and index (flush first)")
        snap.id = self.save_unpacked(SNAPSHOTS, snap.to_bytes())
        return snap.id

    def snapshots(self) -> list[Snapshot]:
        names = [name for name, _size in self.backend.list(SNAPSHOTS)]
        snaps = [Snapshot.from_bytes(data, name) for name, data in zip(names, self._load_all(SNAPSHOTS, names),
                                                                        strict=True)]
        return sorted(snaps, key=lambda s: (s.time, s.id))

    def find_snapshot(self, ref: str) -> Snapshot:
        """A snapshot by full ID, unique ID prefix (≥ 4 hex digits, as restic allows) or `latest`."""
        snaps = self.snapshots()
        if ref == "latest":
            if not snaps:
                raise ResticFormatError(f"the restic repository at {self.backend.describe()} has no snapshots")
            return snaps[-1]
        matches = [s for s in snaps if s.id.startswith(ref.lower())] if len(ref) >= 4 else []
        if len(matches) != 1:
            why = "matches several snapshots" if matches else "matches no snapshot"
            raise ResticFormatError(f"snapshot {ref!r} {why} in {self.backend.describe()}")
        return matches[0]

    def file_content(self, node: Node) -> Iterator[bytes]:
        for blob_id in node.content:
            yield self.load_blob(blob_id)


@dataclass(frozen=True)
class _Storing:
    """A pack handed to the storing thread: indexed only once its save has returned."""

    future: Future[None]
    pack_id: str
    writer: packs.PackWriter


def _decompress(data: bytes, limit: int) -> bytes:
    # Read at most one byte past the limit: a "zip bomb" in an untrusted repository is refused, not inflated.
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    try:
        result = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise ResticFormatError(f"zstd data does not decompress ({exc})") from exc
    if len(result) > limit:
        raise ResticFormatError("compressed data expands beyond its stated size")
    return result
