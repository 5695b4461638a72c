"""One reader for every archive kubectl dr sends into a volume: it accepts exactly what busybox tar and
GNU tar extract the same way, and refuses the rest before a byte is sent anywhere.

Python's `tarfile` is not that reader: it stops at the first zero block where busybox reads on, it
accepts an archive cut at an entry boundary (no end-of-archive marker) as complete, it lists a header
that is cut short, and it understands extensions (PAX) that busybox reads differently. Each of those
let a restore write entries nobody checked, or report success on a volume left half-written. So the
rules here follow the two extractors' own code (busybox `get_header_tar.c`, GNU tar `list.c`):

- every header has the "ustar" magic of POSIX ("ustar\\0" "00") or GNU ("ustar  \\0"), a valid
  unsigned checksum, and numeric fields both read alike (octal digits after optional spaces, ended by
  NUL or space; base-256 only in size, mtime, uid and gid, where both decode it);
- types: files (0, NUL), hard links (1), symlinks (2), devices (3, 4), directories (5), fifos (6), and
  GNU long names (L, K). Not PAX (x, g: busybox reads only `path`), not the rest of GNU's (busybox
  stops or skips), and GNU sparse files (S) only when GNU tar extracts (`gnu_sparse`);
- only the file types carry data; a GNU-format header keeps its POSIX prefix area zero (busybox would
  read GNU's atime there as part of the name);
- names are relative, without `..`, empty or `.` components, and never beneath a symlink or a
  non-directory the archive made; a hard link points to an earlier file, not through a symlink;
  no path twice;
- the end-of-archive marker is there: a first zero block is followed by a second (GNU ends at a lone
  zero block, busybox reads on), nothing but zero blocks follow it, and no header or data is cut short.

The reader is fed the stream as it arrives (`feed`), so a backup is checked while it is written and a
restore's archive is read once; `read_archive` reads a file, skipping data with seeks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kubectl_dr.errors import DrError, VerificationError

BLOCK = 512
FILE, DIR, SYMLINK, HARDLINK, FIFO, CHAR, BLOCKDEV = "file", "dir", "symlink", "hardlink", "fifo", "char", "block"
ENCODING, ERRORS = "utf-8", "surrogateescape"  # names are bytes on the volume; this keeps every byte

_TYPES = {b"0": FILE, b"\0": FILE, b"1": HARDLINK, b"2": SYMLINK, b"3": CHAR, b"4": BLOCKDEV, b"5": DIR, b"6": FIFO}
_WHY_NOT = {
    b"x": "a PAX extended header (busybox tar reads only its path, GNU tar every field)",
    b"g": "a PAX global header (busybox tar ignores it, GNU tar applies it)",
    b"S": "a GNU sparse file (busybox tar cannot extract it)",
    b"7": "a contiguous file (a type kubectl dr never writes)",
}
_POSIX_MAGIC = b"ustar\x0000"
_GNU_MAGIC = b"ustar  \x00"
_ZERO_BLOCK = bytes(BLOCK)
# A well-formed octal field: spaces, digits, then only NULs and spaces. Six fields per header, 13 000
# headers per GiB of mixed files: the byte-by-byte loop below cost 2.3 µs a field, the expression 0.66.
_OCTAL = re.compile(rb" *([0-7]+)[ \0]*")


class ArchiveError(VerificationError):
    """The archive is damaged, cut short, or would not be extracted alike by busybox and GNU tar."""


class UnsafeArchiveError(ArchiveError):
    """The archive would write outside the directory it is extracted into."""


@dataclass(slots=True)
class Member:
    """One entry as the archive holds it (tar header values: the pod's listing may know better)."""

    path: str  # normalised: no "./" prefix, no trailing "/", "" for the root directory
    kind: str
    mode: int
    uid: int
    gid: int
    size: int  # a file's size (a sparse file's real size); 0 for every other kind
    mtime: int
    target: str = ""  # symlink text, or the normalised path a hard link points to
    rdev: tuple[int, int] = (0, 0)
    sparse: bool = False  # stored as a GNU sparse member
    segments: tuple[tuple[int, int], ...] = ()  # a sparse member's (offset, length) of each stored data run


@dataclass
class Archive:
    """Every entry of an archive, in archive order, and what it took to read it."""

    members: dict[str, Member] = field(default_factory=dict)
    size: int = 0  # bytes read, end-of-archive marker and trailing zeros included
    end: int = 0  # offset just past the end-of-archive marker

    def count(self, kind: str) -> int:
        return sum(1 for m in self.members.values() if m.kind == kind)

    @property
    def content_bytes(self) -> int:
        return sum(m.size for m in self.members.values() if m.kind == FILE)

    def summary(self) -> dict[str, int]:
        return {
            "entries": len(self.members),
            "files": self.count(FILE) + self.count(HARDLINK),
            "directories": self.count(DIR),
            "symlinks": self.count(SYMLINK),
            "hardLinks": self.count(HARDLINK),
            "other": self.count(FIFO) + self.count(CHAR) + self.count(BLOCKDEV),
            "contentBytes": self.content_bytes,
        }

    @property
    def empty(self) -> bool:
        """No entry but (at most) the root directory: restoring it would write nothing."""
        return not any(path for path in self.members)


def _number(field_: bytes, what: str, *, base256: bool) -> int:
    """A numeric header field as both tars read it; ArchiveError where they would not agree."""
    if field_[:1] and field_[0] & 0x80:
        if not base256:
            raise ArchiveError(f"header field {what} is binary (base-256), which busybox tar cannot read there")
        value = int.from_bytes(field_, "big", signed=False)
        if field_[0] & 0x40:  # negative: two's complement over the whole field
            value -= 1 << (8 * len(field_))
        else:
            value -= 0x80 << (8 * (len(field_) - 1))
        return value
    well_formed = _OCTAL.fullmatch(field_)
    if well_formed is not None:
        return int(well_formed[1], 8)
    # The rest (empty fields, and every malformed one with its message) byte by byte.
    i, end = 0, len(field_)
    while i < end and field_[i] == 0x20:
        i += 1
    start = i
    while i < end and 0x30 <= field_[i] <= 0x37:
        i += 1
    if i == start and any(field_):
        raise ArchiveError(f"header field {what} holds {bytes(field_)!r}, not an octal number")
    if any(b not in (0, 0x20) for b in field_[i:]):
        raise ArchiveError(f"header field {what} holds {bytes(field_)!r}, not an octal number")
    return int(field_[start:i], 8) if i > start else 0


def _text(raw: bytes) -> str:
    return raw.decode(ENCODING, ERRORS)


def _cstring(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def normalise(name: bytes, *, directory: bool) -> str:
    """`./a/b/` → `a/b`, `./` → ``; UnsafeArchiveError for anything tar could write elsewhere."""
    shown = _text(name)
    if not name:
        raise ArchiveError("an archive entry has an empty name")
    if name.startswith(b"/"):
        raise UnsafeArchiveError(f"archive entry {shown!r} is an absolute path: refusing the whole archive")
    if name.endswith(b"/"):
        if not directory:
            raise ArchiveError(f"archive entry {shown!r} ends in '/' but is not a directory")
        name = name.rstrip(b"/")
    if name.startswith(b"./"):
        name = name[2:]
    elif name == b".":
        name = b""
    parts = name.split(b"/") if name else []
    if b".." in parts:
        raise UnsafeArchiveError(f"archive entry {shown!r} contains '..': refusing the whole archive")
    if any(p in (b"", b".") for p in parts):
        raise ArchiveError(f"archive entry {shown!r} has an empty or '.' path component")
    return _text(name)


class TarReader:
    """Feed it the archive's bytes in order; `finish()` returns the entries or raises ArchiveError.

    State between calls: the bytes of a header being collected, or a count of data bytes to skip, or
    of zero bytes to expect after the end-of-archive marker.
    """

    def __init__(self, *, gnu_sparse: bool = False, on_member: Callable[[Member], None] | None = None,
                 on_data: Callable[[memoryview], None] | None = None) -> None:
        """`on_member` is called with each entry as its header is read, `on_data` with that entry's data
        bytes as they are fed (a sparse member's stored runs, without the padding to a whole block)."""
        self.gnu_sparse = gnu_sparse
        self.on_member = on_member
        self.on_data = on_data
        self._data = 0  # data bytes of the current entry still to give to on_data
        self.archive = Archive()
        self._offset = 0
        self._pending = bytearray()  # a header (or long name) being collected
        self._need = BLOCK  # bytes still wanted for _pending
        self._skip = 0  # data bytes to pass over
        self._state = "header"  # header | longname | sparse_ext | zero2 | tail
        self._long: dict[bytes, bytes] = {}  # b"L"/b"K" → name waiting for its header
        self._long_kind = b""
        self._long_size = 0
        self._sparse_header: bytes = b""
        self._sparse_map: list[tuple[int, int]] = []
        self._symlinks: set[str] = set()
        self._nondirs: set[str] = set()
        self._dirs: set[str] = {""}
        self._files: set[str] = set()

    @property
    def offset(self) -> int:
        return self._offset

    # --- feeding -------------------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            if self._skip:
                n = min(self._skip, len(view))
                if self._data and self.on_data is not None:
                    given = min(self._data, n)
                    self._data -= given
                    self.on_data(view[:given])
                self._skip -= n
                self._offset += n
                view = view[n:]
                continue
            if self._state == "tail":
                if any(view):
                    # memoryview has no find(); a slow scan is fine: this is the error path
                    where = self._offset + next(i for i, b in enumerate(view) if b)
                    raise ArchiveError(f"the archive has data after its end-of-archive marker (at byte {where}): "
                                       "busybox tar reads past a marker that GNU tar stops at")
                self._offset += len(view)
                return
            n = min(self._need, len(view))
            self._pending += view[:n]
            self._need -= n
            self._offset += n
            view = view[n:]
            if self._need == 0:
                block = bytes(self._pending)
                self._pending.clear()
                self._need = BLOCK
                self._block(block)

    def skip_data(self) -> int:
        """How many data bytes the reader would skip now (a file reader seeks over them instead)."""
        return self._skip

    def skipped(self, count: int) -> None:
        """`count` data bytes were passed over without feeding them (seeked)."""
        if count > self._skip:
            raise ValueError("skipped more than the data of the entry")
        if self.on_data is not None:
            raise ValueError("data was skipped that on_data must be given")
        self._skip -= count
        self._offset += count

    def finish(self) -> Archive:
        """The archive ended here: it must have ended properly."""
        if self._state == "tail" and not self._skip and not self._pending:
            self.archive.size = self._offset
            return self.archive
        if self._state == "zero2":
            raise ArchiveError(f"the archive ends after a single zero block at byte {self.archive.end - BLOCK}: "
                               "it is cut short (the end-of-archive marker is two zero blocks)")
        if self._pending or self._skip:
            where = "inside an entry's data" if self._skip else "inside a header"
            raise ArchiveError(f"the archive is cut short {where} at byte {self._offset}")
        raise ArchiveError(f"the archive is cut short at byte {self._offset}: it has no end-of-archive marker "
                           "(an archive cut at an entry boundary would restore with entries missing)")

    # --- blocks --------------------------------------------------------------------------------------
    def _block(self, block: bytes) -> None:
        if self._state == "header":
            self._header(block)
        elif self._state == "longname":
            self._longname_block(block)
        elif self._state == "sparse_ext":
            self._sparse_extension(block)
        elif self._state == "zero2":
            if block != _ZERO_BLOCK:
                raise ArchiveError(f"a lone zero block at byte {self._offset - 2 * BLOCK} is followed by more data: "
                                   "GNU tar stops there, busybox tar reads on")
            self.archive.end = self._offset
            self._state = "tail"

    def _header(self, block: bytes) -> None:
        at = self._offset - BLOCK
        if block[0] == 0 and block[345] == 0:  # busybox's test for an empty header (name and prefix)
            if block != _ZERO_BLOCK:
                raise ArchiveError(f"the header at byte {at} has no name but is not a zero block")
            if self._long:
                raise ArchiveError(f"a GNU long name at byte {at} is followed by the end of the archive")
            self._state = "zero2"
            self.archive.end = self._offset
            return
        magic = block[257:265]
        if magic not in (_POSIX_MAGIC, _GNU_MAGIC):
            raise ArchiveError(f"the header at byte {at} is not a ustar header (magic {magic!r}): the archive "
                               "is damaged or not a tar archive")
        stored = _number(block[148:156], "chksum", base256=False)
        if stored != sum(block[:148]) + 8 * 0x20 + sum(block[156:]):
            raise ArchiveError(f"the header at byte {at} has a wrong checksum: the archive is damaged")
        typeflag = block[156:157]
        size = _number(block[124:136], "size", base256=True)
        numbers = {
            "mode": _number(block[100:108], "mode", base256=False),
            "uid": _number(block[108:116], "uid", base256=True),
            "gid": _number(block[116:124], "gid", base256=True),
            "mtime": _number(block[136:148], "mtime", base256=True),
        }
        if size < 0:
            raise ArchiveError(f"the header at byte {at} has a negative size")
        gnu = magic == _GNU_MAGIC
        if gnu and any(block[345:386]):
            raise ArchiveError(f"the GNU header at byte {at} uses its time or prefix fields, which busybox tar "
                               "would read as part of the name")
        if gnu and typeflag != b"S" and any(block[386:495]):
            raise ArchiveError(f"the header at byte {at} carries a sparse map but is not a sparse file")
        if typeflag in (b"L", b"K"):
            self._start_longname(typeflag, size, at)
            return
        if typeflag == b"S" and self.gnu_sparse:
            self._start_sparse(block, size, numbers, at)
            return
        if typeflag not in _TYPES:
            why = _WHY_NOT.get(typeflag, f"an entry of type {typeflag!r}")
            raise ArchiveError(f"the archive holds {why} at byte {at}: busybox tar and GNU tar would not extract it "
                               "alike, so kubectl dr does not send it into a volume",
                               hint="Re-create the archive with GNU tar --format=gnu (or busybox tar).")
        self._member(block, typeflag, size, numbers, at)

    def _start_longname(self, typeflag: bytes, size: int, at: int) -> None:
        if typeflag in self._long:
            raise ArchiveError(f"two GNU long {'names' if typeflag == b'L' else 'link names'} in a row at byte {at}")
        if not 0 < size <= 1 << 16:
            raise ArchiveError(f"the GNU long name at byte {at} has an implausible size {size}")
        self._long_kind, self._long_size = typeflag, size
        self._state = "longname"
        self._need = (size + BLOCK - 1) // BLOCK * BLOCK

    def _longname_block(self, blocks: bytes) -> None:
        # `_need` asked for the whole padded name at once (see _start_longname).
        raw = blocks[: self._long_size]
        name = _cstring(raw)
        if any(raw[len(name):]) or not name:
            raise ArchiveError(f"a GNU long name near byte {self._offset} is malformed")
        self._long[self._long_kind] = name
        self._state = "header"

    def _start_sparse(self, block: bytes, size: int, numbers: dict[str, int], at: int) -> None:
        self._sparse_header = block
        self._sparse_map = list(_sparse_entries(block[386:482], 4))
        if block[482]:
            self._state = "sparse_ext"
            return
        self._end_sparse(at)

    def _sparse_extension(self, block: bytes) -> None:
        self._sparse_map += _sparse_entries(block[:504], 21)
        if block[504]:
            return
        self._state = "header"
        self._end_sparse(self._offset - BLOCK)

    def _end_sparse(self, at: int) -> None:
        block = self._sparse_header
        self._state = "header"
        real = _number(block[483:495], "realsize", base256=True)
        stored = _number(block[124:136], "size", base256=True)
        position = 0
        for offset, length in self._sparse_map:
            if offset < position or offset + length > real:
                raise ArchiveError(f"the sparse map of the entry at byte {at} is out of order or past its size")
            position = offset + length
        if sum(length for _, length in self._sparse_map) != stored:
            raise ArchiveError(f"the sparse map of the entry at byte {at} does not add up to its stored size")
        numbers = {
            "mode": _number(block[100:108], "mode", base256=False),
            "uid": _number(block[108:116], "uid", base256=True),
            "gid": _number(block[116:124], "gid", base256=True),
            "mtime": _number(block[136:148], "mtime", base256=True),
        }
        self._member(block, b"0", stored, numbers, at, real_size=real, segments=tuple(self._sparse_map))

    def _member(self, block: bytes, typeflag: bytes, size: int, numbers: dict[str, int], at: int,
                real_size: int | None = None, segments: tuple[tuple[int, int], ...] = ()) -> None:
        kind = _TYPES[typeflag]
        raw_name = self._long.pop(b"L", None)
        if raw_name is None:
            raw_name = _cstring(block[0:100])
            if block[257:265] == _POSIX_MAGIC and block[345]:
                raw_name = _cstring(block[345:500]) + b"/" + raw_name
        raw_link = self._long.pop(b"K", None)
        if raw_link is None:
            raw_link = _cstring(block[157:257])
        if numbers["mode"] & ~0o7777:
            raise ArchiveError(f"the header at byte {at} has mode {numbers['mode']:o} with bits beyond the "
                               "permission bits")
        if kind != FILE and size:
            raise ArchiveError(f"the {kind} entry {_text(raw_name)!r} at byte {at} carries {size} bytes of data: "
                               "busybox tar would read them as the next header")
        if kind not in (SYMLINK, HARDLINK) and raw_link:
            raise ArchiveError(f"the {kind} entry {_text(raw_name)!r} at byte {at} has a link name")
        path = normalise(raw_name, directory=kind == DIR)
        if path in self.archive.members:
            raise ArchiveError(f"the archive holds {path or '.'!r} twice (busybox tar and GNU tar resolve that "
                               "differently)")
        if kind != DIR and path in self._dirs:
            raise ArchiveError(f"the archive makes {path or '.'!r} a {kind} after entries beneath it")
        self._check_parents(path, at)
        target = ""
        if kind == SYMLINK:
            if not raw_link:
                raise ArchiveError(f"the symlink {path!r} has no target")
            target = _text(raw_link)
        elif kind == HARDLINK:
            target = normalise(raw_link, directory=False)
            self._check_parents(target, at, what="hard link target")
            if target not in self._files:
                raise ArchiveError(f"the hard link {path!r} points to {target!r}, which is not a file earlier in "
                                   "the archive")
        rdev = (0, 0)
        if kind in (CHAR, BLOCKDEV):
            rdev = (_number(block[329:337], "devmajor", base256=False),
                    _number(block[337:345], "devminor", base256=False))
        member = Member(path, kind, numbers["mode"], numbers["uid"], numbers["gid"],
                        real_size if real_size is not None else size, numbers["mtime"], target, rdev,
                        sparse=real_size is not None, segments=segments)
        self.archive.members[path] = member
        parent = path.rpartition("/")[0] if "/" in path else ""
        while parent not in self._dirs:  # tar creates missing parents: they are directories from now on
            self._dirs.add(parent)
            parent = parent.rpartition("/")[0] if "/" in parent else ""
        if kind == DIR:
            self._dirs.add(path)
        else:
            self._nondirs.add(path)
            if kind == SYMLINK:
                self._symlinks.add(path)
            elif kind == FILE:
                self._files.add(path)
        self._skip = (size + BLOCK - 1) // BLOCK * BLOCK
        self._data = size
        if self.on_member is not None:
            self.on_member(member)

    def _check_parents(self, path: str, at: int, *, what: str = "entry") -> None:
        parent = path.rpartition("/")[0] if "/" in path else ""
        while parent:
            if parent in self._symlinks:
                raise UnsafeArchiveError(
                    f"archive {what} {path!r} lies beneath the symlink {parent!r}: extracting it would write "
                    "wherever the link points; refusing the whole archive")
            if parent in self._nondirs:
                raise ArchiveError(f"archive {what} {path!r} lies beneath {parent!r}, which the archive made a "
                                   f"{self.archive.members[parent].kind}")
            if parent in self._dirs:
                return  # checked when it was added
            parent = parent.rpartition("/")[0] if "/" in parent else ""


def _sparse_entries(raw: bytes, count: int) -> list[tuple[int, int]]:
    out = []
    for i in range(count):
        chunk = raw[24 * i: 24 * i + 24]
        if not any(chunk):
            break
        out.append((_number(chunk[:12], "sparse offset", base256=True),
                    _number(chunk[12:], "sparse numbytes", base256=True)))
    return out


def read_archive(path: Path, *, gnu_sparse: bool = False, allow_empty: bool = False) -> Archive:
    """Read a whole archive file (data skipped with seeks): the entries, or ArchiveError."""
    reader = TarReader(gnu_sparse=gnu_sparse)
    try:
        with open(path, "rb", buffering=0) as f:
            read_from(f, reader)
    except OSError as exc:
        raise DrError(f"cannot read {path}: {exc.strerror}") from None
    archive = reader.finish()
    if archive.empty and not allow_empty:
        raise empty_archive_error(str(path))
    return archive


def read_from(f: BinaryIO, reader: TarReader, chunk: int = 1 << 16) -> None:
    """Feed `reader` from a seekable file, seeking over data instead of reading it."""
    while True:
        skip = reader.skip_data()
        if skip >= chunk:
            f.seek(skip, os.SEEK_CUR)
            reader.skipped(skip)
            continue
        data = f.read(chunk if reader._state == "tail" else skip or BLOCK)
        if not data:
            return
        reader.feed(data)


def empty_archive_error(what: str) -> ArchiveError:
    return ArchiveError(f"{what} holds no entries: restoring it would change nothing but could hide a mistake "
                        "(a file of zeros, an empty download)",
                        hint="Pass --allow-empty if an empty volume is what you mean to restore.")
