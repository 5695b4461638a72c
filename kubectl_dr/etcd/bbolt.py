"""Read-only reader of bbolt database files (the storage format of etcd's backend and snapshots).

Only what verification needs: the two meta pages and their checksums, the freelist, and an ordered
walk of every bucket's B+tree (branch and leaf pages, overflow pages, inline buckets), with the
consistency checks bbolt's own ``Tx.Check`` performs (page bounds and types, pages referenced twice,
reachable pages that are also free, pages neither reachable nor free, key order).

Pages are read with ``os.pread`` one at a time rather than mapped, so resident memory stays flat for
databases of any size: the walk holds one page per tree level plus a bitmap of one byte per page.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

MAGIC = 0xED0CDAED
VERSION = 2

PAGE_HEADER_SIZE = 16  # id u64, flags u16, count u16, overflow u32
ELEMENT_SIZE = 16  # branch: pos u32, ksize u32, pgid u64 / leaf: flags u32, pos u32, ksize u32, vsize u32
BUCKET_HEADER_SIZE = 16  # root pgid u64, sequence u64
META_SIZE = 64
META_CHECKSUM_OFFSET = 56

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF_FLAG = 0x01

NO_FREELIST = 0xFFFFFFFFFFFFFFFF  # meta.freelist when the database runs with NoFreelistSync

# Bits of the per-page state map.
_REACHABLE = 0x01
_FREED = 0x02

_PAGE_HEADER = struct.Struct("<QHHI")
_META = struct.Struct("<IIIIQQQQQQ")
_BRANCH_ELEMENT = struct.Struct("<IIQ")
_LEAF_ELEMENT = struct.Struct("<IIII")
_BUCKET_HEADER = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")

_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3


class BoltError(Exception):
    """The file is not a consistent bbolt database; the message says what is wrong."""


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64, the checksum bbolt stores in its meta pages (over the 56 bytes before it)."""
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass(frozen=True)
class Meta:
    page: int  # 0 or 1: where it was read
    magic: int
    version: int
    page_size: int
    flags: int
    root: int  # root bucket's root page
    sequence: int
    freelist: int
    high_water: int  # meta.pgid: number of pages in use; the database size is high_water * page_size
    txid: int
    checksum: int
    computed_checksum: int

    @classmethod
    def parse(cls, page: int, raw: bytes) -> Meta:
        magic, version, page_size, flags, root, sequence, freelist, high_water, txid, checksum = _META.unpack_from(
            raw, 0
        )
        return cls(
            page=page,
            magic=magic,
            version=version,
            page_size=page_size,
            flags=flags,
            root=root,
            sequence=sequence,
            freelist=freelist,
            high_water=high_water,
            txid=txid,
            checksum=checksum,
            computed_checksum=fnv1a64(raw[:META_CHECKSUM_OFFSET]),
        )

    def problem(self) -> str | None:
        """What makes this meta page unusable, in bbolt's order of checks, or None."""
        if self.magic != MAGIC:
            return f"bbolt meta page {self.page} has no bbolt magic number (found {self.magic:#010x})"
        if self.version != VERSION:
            return f"bbolt meta page {self.page} has unsupported version {self.version} (expected {VERSION})"
        if self.checksum != self.computed_checksum:
            return (
                f"bbolt meta page {self.page} checksum mismatch "
                f"(stored {self.checksum:#018x}, computed {self.computed_checksum:#018x})"
            )
        return None


class Entry(NamedTuple):
    """One key of a bucket as ``Bucket.ForEach`` yields it: nested buckets come with ``value=None``."""

    key: bytes
    value: memoryview | None  # a view into the page, valid while the caller holds it: no copy of big values
    bucket: memoryview | None  # the raw bucket value (header + inline page) when the entry is a nested bucket


def read_header(fd: int) -> bytes:
    """The first page header and meta of the file: enough to tell whether it is bbolt at all."""
    return os.pread(fd, PAGE_HEADER_SIZE + META_SIZE, 0)


def has_magic(head: bytes) -> bool:
    """Whether the bytes start like a bbolt file (page 0 holds a meta with the magic number)."""
    if len(head) < PAGE_HEADER_SIZE + 4:
        return False
    magic: int = struct.unpack_from("<I", head, PAGE_HEADER_SIZE)[0]
    return magic == MAGIC


class BoltFile:
    """A bbolt database held in the first ``data_size`` bytes of an open file descriptor.

    ``data_size`` excludes anything appended after the database (the SHA-256 trailer of a snapshot).
    """

    def __init__(self, fd: int, data_size: int) -> None:
        self._fd = fd
        self._data_size = data_size
        self.meta = self._select_meta()
        self.page_size = self.meta.page_size
        self.high_water = self.meta.high_water
        needed = self.high_water * self.page_size
        if needed > data_size:
            raise BoltError(
                f"bbolt database is truncated: its meta page says {self.high_water} pages of "
                f"{self.page_size} bytes ({needed} bytes) but the file holds only {data_size} bytes"
            )
        self._state = bytearray(self.high_water)

    # --- meta pages -------------------------------------------------------------------------------

    def _select_meta(self) -> Meta:
        head = os.pread(self._fd, PAGE_HEADER_SIZE + META_SIZE, 0)
        if len(head) < PAGE_HEADER_SIZE + META_SIZE:
            raise BoltError(f"file is too short to hold a bbolt meta page ({self._data_size} bytes)")
        meta0 = Meta.parse(0, head[PAGE_HEADER_SIZE:])
        problem0 = meta0.problem()
        if problem0 is not None and meta0.magic != MAGIC:
            raise BoltError(problem0)
        page_size = meta0.page_size
        if page_size < 512 or page_size & (page_size - 1):
            raise BoltError(f"bbolt meta page 0 declares an impossible page size of {page_size} bytes")
        raw1 = os.pread(self._fd, PAGE_HEADER_SIZE + META_SIZE, page_size)
        if len(raw1) < PAGE_HEADER_SIZE + META_SIZE:
            raise BoltError(f"file is too short to hold the second bbolt meta page ({self._data_size} bytes)")
        meta1 = Meta.parse(1, raw1[PAGE_HEADER_SIZE:])
        problem1 = meta1.problem()
        # bbolt itself falls back to the other meta page when one is damaged. A snapshot is written
        # in one go with both meta pages valid, so any damage is corruption of the file: refuse it.
        for problem in (problem0, problem1):
            if problem is not None:
                raise BoltError(problem)
        for meta, raw in ((meta0, head), (meta1, raw1)):
            page_id, flags, _, _ = _PAGE_HEADER.unpack_from(raw, 0)
            if page_id != meta.page or not flags & META_PAGE:
                raise BoltError(f"bbolt page {meta.page} is not a meta page (id {page_id}, flags {flags:#x})")
        if meta1.page_size != page_size:
            raise BoltError(f"bbolt meta pages disagree on the page size ({page_size} and {meta1.page_size} bytes)")
        # Like bbolt: the meta page with the higher transaction ID is the current one.
        return meta1 if meta1.txid > meta0.txid else meta0

    # --- pages -------------------------------------------------------------------------------------

    def _read_page(self, pgid: int, path: str) -> tuple[int, int, int, bytes]:
        """(flags, count, overflow, bytes of the page and its overflow pages)."""
        if pgid >= self.high_water:
            raise BoltError(f"page {pgid}: out of bounds: high water mark is {self.high_water} ({path})")
        offset = pgid * self.page_size
        buf = os.pread(self._fd, self.page_size, offset)
        if len(buf) < self.page_size:
            raise BoltError(f"page {pgid}: cut short by the end of the file ({path})")
        page_id, flags, count, overflow = _PAGE_HEADER.unpack_from(buf, 0)
        if page_id != pgid:
            raise BoltError(f"page {pgid}: header says it is page {page_id} ({path})")
        if pgid + overflow >= self.high_water:
            raise BoltError(
                f"page {pgid}: {overflow} overflow pages run past the high water mark {self.high_water} ({path})"
            )
        if overflow:
            # One read of the whole extent: concatenating would hold a large value twice.
            extent = (overflow + 1) * self.page_size
            buf = os.pread(self._fd, extent, offset)
            if len(buf) < extent:
                raise BoltError(f"page {pgid}: overflow pages cut short by the end of the file ({path})")
        return flags, count, overflow, buf

    def _mark_reachable(self, pgid: int, overflow: int, path: str) -> None:
        state = self._state
        for i in range(pgid, pgid + overflow + 1):
            if state[i] & _REACHABLE:
                raise BoltError(f"page {i}: multiple references ({path})")
            if state[i] & _FREED:
                raise BoltError(f"page {i}: reachable freed ({path})")
            state[i] |= _REACHABLE

    def check_freelist(self) -> None:
        """Mark free pages and the freelist's own pages; find double frees and out-of-range IDs."""
        state = self._state
        state[0] |= _REACHABLE
        state[1] |= _REACHABLE
        if self.meta.freelist == NO_FREELIST:
            return
        pgid = self.meta.freelist
        if pgid < 2:
            raise BoltError(f"bbolt meta page points the freelist at page {pgid}, a meta page")
        flags, count, overflow, buf = self._read_page(pgid, "freelist")
        if not flags & FREELIST_PAGE:
            raise BoltError(f"page {pgid}: expected the freelist, found page flags {flags:#x}")
        self._mark_reachable(pgid, overflow, "freelist")
        start = PAGE_HEADER_SIZE
        if count == 0xFFFF:  # more IDs than a u16 holds: the first slot carries the real count
            count = _U64.unpack_from(buf, start)[0]
            start += 8
        if start + count * 8 > len(buf):
            raise BoltError(f"page {pgid}: freelist claims {count} IDs, more than its pages hold")
        for (free_id,) in _U64.iter_unpack(buf[start : start + count * 8]):
            if free_id < 2 or free_id >= self.high_water:
                raise BoltError(f"freelist: page {free_id} is out of bounds (high water mark {self.high_water})")
            if state[free_id] & _FREED:
                raise BoltError(f"page {free_id}: already freed")
            if state[free_id] & _REACHABLE:
                raise BoltError(f"page {free_id}: reachable freed")
            state[free_id] |= _FREED

    def check_all_pages_accounted(self) -> None:
        """After the walk: every page below the high water mark is reachable or free."""
        if self.meta.freelist == NO_FREELIST:
            return  # free pages are not recorded; bbolt derives them as "not reachable"
        index = self._state.find(0)
        if index >= 0:
            raise BoltError(f"page {index}: unreachable unfreed")

    # --- buckets -----------------------------------------------------------------------------------

    def root_entries(self) -> Iterator[Entry]:
        """The keys of the root bucket (the names of the top-level buckets), in order."""
        # The caller walks each top-level bucket itself (``bucket_entries``), so not here as well.
        return self._walk_pages(self.meta.root, "root", walk_nested=False)

    def bucket_entries(self, name: bytes, raw_bucket: memoryview) -> Iterator[Entry]:
        """The entries of a bucket from its raw value in the parent, as ``Bucket.ForEach`` orders them.

        Nested buckets below this one are walked too (so their pages count as reachable) but their
        contents are not yielded, just as ``ForEach`` only lists them by name.
        """
        return self._bucket_entries(raw_bucket, _label(name))

    def _bucket_entries(self, raw_bucket: memoryview, path: str) -> Iterator[Entry]:
        if len(raw_bucket) < BUCKET_HEADER_SIZE:
            raise BoltError(f"bucket {path}: value of {len(raw_bucket)} bytes is too short for a bucket header")
        root, _sequence = _BUCKET_HEADER.unpack_from(raw_bucket, 0)
        if root == 0:
            yield from self._inline_entries(raw_bucket[BUCKET_HEADER_SIZE:], path)
        else:
            yield from self._walk_pages(root, path)

    def _inline_entries(self, page: memoryview, path: str) -> Iterator[Entry]:
        # An inline bucket stores a leaf page right after its header, inside its parent's value.
        if len(page) < PAGE_HEADER_SIZE:
            raise BoltError(f"bucket {path}: inline page is too short")
        _, flags, count, _ = _PAGE_HEADER.unpack_from(page, 0)
        if not flags & LEAF_PAGE:
            raise BoltError(f"bucket {path}: inline page is not a leaf page (flags {flags:#x})")
        yield from self._leaf_entries(page, count, f"{path}, inline", _Bounds())

    def _walk_pages(self, root: int, path: str, walk_nested: bool = True) -> Iterator[Entry]:
        """Depth-first, key-ordered walk of the tree rooted at ``root``, checking order on the way."""
        yield from self._walk_page(root, path, _Bounds(walk_nested=walk_nested))

    def _walk_page(self, pgid: int, path: str, bounds: _Bounds) -> Iterator[Entry]:
        where = f"bucket {path}, page {pgid}"
        flags, count, overflow, buf = self._read_page(pgid, where)
        self._mark_reachable(pgid, overflow, where)
        if flags & BRANCH_PAGE:
            if count == 0:
                raise BoltError(f"{where}: empty branch page")
            children = [_branch_element(buf, i, where) for i in range(count)]
            for i, (key, _child) in enumerate(children):
                if i > 0 and key <= children[i - 1][0]:
                    raise BoltError(f"{where}: branch keys out of order at element {i}")
                if i == 0 and bounds.low is not None and key < bounds.low:
                    raise BoltError(f"{where}: first key is below the separator in its parent")
                if bounds.high is not None and key >= bounds.high:
                    raise BoltError(f"{where}: key {i} is not below the next separator in its parent")
            for i, (key, child) in enumerate(children):
                # Every key under a separator lies in [separator, next separator): bbolt's B+tree order.
                high = children[i + 1][0] if i + 1 < count else bounds.high
                yield from self._walk_page(child, path, _Bounds(key, high, bounds))
        elif flags & LEAF_PAGE:
            yield from self._leaf_entries(memoryview(buf), count, where, bounds)
        else:
            raise BoltError(f"{where}: invalid type: flags {flags:#x} where a branch or leaf page belongs")

    def _leaf_entries(self, buf: memoryview, count: int, where: str, bounds: _Bounds) -> Iterator[Entry]:
        end_of_elements = PAGE_HEADER_SIZE + count * ELEMENT_SIZE
        if end_of_elements > len(buf):
            raise BoltError(f"{where}: {count} leaf elements do not fit in the page")
        for i in range(count):
            base = PAGE_HEADER_SIZE + i * ELEMENT_SIZE
            elem_flags, pos, ksize, vsize = _LEAF_ELEMENT.unpack_from(buf, base)
            start = base + pos
            end = start + ksize + vsize
            if pos < ELEMENT_SIZE * (count - i) or end > len(buf):
                raise BoltError(f"{where}: element {i} points outside the page")
            key = bytes(buf[start : start + ksize])
            value = buf[start + ksize : end]
            bounds.check(key, where, i)
            if elem_flags & BUCKET_LEAF_FLAG:
                if bounds.walk_nested:
                    # Walk the nested bucket now for reachability; ForEach shows it with a nil value.
                    for _ in self._bucket_entries(value, f"{where} / {_label(key)}"):
                        pass
                yield Entry(key, None, value)
            else:
                yield Entry(key, value, None)


class _Bounds:
    """Key range a subtree must respect, and the last key seen in the whole tree (shared by all levels)."""

    __slots__ = ("high", "last", "low", "walk_nested")

    def __init__(
        self,
        low: bytes | None = None,
        high: bytes | None = None,
        parent: _Bounds | None = None,
        walk_nested: bool = True,
    ) -> None:
        self.low = low
        self.high = high
        self.last: list[bytes | None] = parent.last if parent is not None else [None]
        self.walk_nested: bool = parent.walk_nested if parent is not None else walk_nested

    def check(self, key: bytes, where: str, index: int) -> None:
        last = self.last[0]
        if last is not None and key <= last:
            raise BoltError(f"{where}: key order violation at element {index}: not above the previous key")
        if self.low is not None and key < self.low:
            raise BoltError(f"{where}: key order violation at element {index}: below its parent's separator")
        if self.high is not None and key >= self.high:
            raise BoltError(f"{where}: key order violation at element {index}: not below the next separator")
        self.last[0] = key


def _branch_element(buf: bytes, i: int, where: str) -> tuple[bytes, int]:
    base = PAGE_HEADER_SIZE + i * ELEMENT_SIZE
    if base + ELEMENT_SIZE > len(buf):
        raise BoltError(f"{where}: branch element {i} does not fit in the page")
    pos, ksize, child = _BRANCH_ELEMENT.unpack_from(buf, base)
    start = base + pos
    if start + ksize > len(buf):
        raise BoltError(f"{where}: branch element {i} points outside the page")
    return buf[start : start + ksize], child


def _label(name: bytes) -> str:
    text = name.decode("utf-8", "backslashreplace")
    return repr(text) if text.isprintable() else name.hex()
