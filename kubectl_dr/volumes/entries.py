"""The truth about every entry of a volume, as a backup records it and a restore reproduces it.

A tar header is not that truth: busybox tar writes only the low digits of a large uid (OpenShift's
1000680000 becomes 10824256), writes 0 for an mtime before 1970, never sets a symlink's owner or
time, and neither tar keeps a file sparse in a way the other reads. So the pod that streams the
archive also lists the volume with `stat` (see `listing`), the two are reconciled (`reconcile`), and
what comes out is stored as a part of the backup beside the archive: the archive carries the
contents and the structure, this record the owners, modes, times and allocation. A restore extracts
the archive, then applies the record, and checks the volume against it entry by entry.

The part is JSON Lines: a header object, then one array per entry,
`[path, kind, mode, uid, gid, size, mtime, target, blocks, major, minor]` (compact, and read in one
pass with memory in proportion to the entry count). Paths are the volume's bytes decoded as UTF-8
with surrogateescape, which JSON carries as escapes and gives back byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from kubectl_dr.errors import VerificationError

FILE, DIR, SYMLINK, HARDLINK, FIFO, CHAR, BLOCKDEV, SOCKET = (
    "file", "dir", "symlink", "hardlink", "fifo", "char", "block", "socket")
KINDS = (FILE, DIR, SYMLINK, HARDLINK, FIFO, CHAR, BLOCKDEV, SOCKET)
FORMAT = "kubectl-dr.io/entries"
VERSION = 1
PART = "entries.jsonl"
# A file counts as sparse when at least this much of it is holes: small gaps (a file system's inline
# data, a last partial block) are not what makes a restore run out of space.
SPARSE_SLACK = 64 * 1024
MAX_ID = 4_294_967_294  # (uid_t)-1 means "unchanged" to chown, so it is never an owner
MAX_TIME = 2**63 - 1


@dataclass(slots=True)
class Entry:
    path: str  # relative, normalised: "" is the volume's root
    kind: str
    mode: int  # permission bits with setuid, setgid and sticky
    uid: int
    gid: int
    size: int  # a file's size (apparent); 0 for other kinds
    mtime: int  # seconds since the epoch, negative before 1970
    target: str = ""  # a symlink's text, or the path a hard link shares its inode with
    blocks: int = 0  # allocated 512-byte blocks of a file
    rdev: tuple[int, int] = (0, 0)

    @property
    def sparse(self) -> bool:
        return self.kind == FILE and self.size - 512 * self.blocks >= SPARSE_SLACK

    def to_row(self) -> list[Any]:
        return [self.path, self.kind, self.mode, self.uid, self.gid, self.size, self.mtime, self.target, self.blocks,
                self.rdev[0], self.rdev[1]]

    @classmethod
    def from_row(cls, row: Any) -> Entry:
        path, kind, mode, uid, gid, size, mtime, target, blocks, major, minor = row
        if kind not in KINDS or not isinstance(path, str):
            raise ValueError(f"unknown entry kind {kind!r}")
        entry = cls(path, kind, int(mode), int(uid), int(gid), int(size), int(mtime), str(target), int(blocks),
                    (int(major), int(minor)))
        # A record is repository content that a restore turns into chown, chmod and touch in the volume:
        # each value must be one those take as a number, each path one inside the volume.
        problem = path_problem(path) or _value_problem(entry)
        if problem:
            raise ValueError(problem)
        return entry


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a relative, normalised path inside the volume ("" is its root)."""
    if path == "":
        return None
    if "\0" in path:
        return f"the path {path!r} contains a NUL character"
    if path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        return f"the path {path!r} is not a plain relative path inside the volume"
    return None


def _value_problem(e: Entry) -> str | None:
    if not 0 <= e.mode <= 0o7777:
        return f"{e.path!r}: mode {e.mode} is not a permission mode (0 to 07777)"
    if not (0 <= e.uid <= MAX_ID and 0 <= e.gid <= MAX_ID):
        return f"{e.path!r}: owner {e.uid}:{e.gid} is not a user and group ID (0 to {MAX_ID})"
    if e.size < 0 or e.blocks < 0 or min(e.rdev) < 0 or not -MAX_TIME <= e.mtime <= MAX_TIME:
        return f"{e.path!r}: a negative size, block count or device number, or a time out of range"
    return None


@dataclass
class Entries:
    """Every entry of a volume that a backup holds, in archive order (parents before children)."""

    items: dict[str, Entry] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.items.values())

    def __len__(self) -> int:
        return len(self.items)

    def get(self, path: str) -> Entry | None:
        return self.items.get(path)

    def count(self, kind: str) -> int:
        return sum(1 for e in self.items.values() if e.kind == kind)

    @property
    def content_bytes(self) -> int:
        return sum(e.size for e in self.items.values() if e.kind == FILE)

    def summary(self) -> dict[str, int]:
        return {
            "entries": len(self.items),
            "files": self.count(FILE) + self.count(HARDLINK),
            "directories": self.count(DIR),
            "symlinks": self.count(SYMLINK),
            "hardLinks": self.count(HARDLINK),
            "sparseFiles": sum(1 for e in self.items.values() if e.sparse),
            "other": self.count(FIFO) + self.count(CHAR) + self.count(BLOCKDEV),
            "contentBytes": self.content_bytes,
        }

    def kept_paths(self) -> set[str]:
        """Every path in the record and every directory above one."""
        kept: set[str] = {""}
        for path in self.items:
            while path not in kept:
                kept.add(path)
                path = path.rpartition("/")[0]
        return kept

    # --- the part ------------------------------------------------------------------------------------
    def lines(self, details: dict[str, Any] | None = None) -> Iterator[bytes]:
        yield _line({"format": FORMAT, "version": VERSION, **(details or {})})
        for entry in self.items.values():
            yield _line(entry.to_row())

    @classmethod
    def read(cls, stream: BinaryIO | Iterable[bytes], where: str) -> Entries:
        entries = cls()
        header_seen = False
        for number, raw in enumerate(stream, 1):
            try:
                value = json.loads(raw)
                if not header_seen:
                    if not isinstance(value, dict) or value.get("format") != FORMAT:
                        raise ValueError("not a kubectl dr entry listing")
                    if value.get("version") != VERSION:
                        raise ValueError(f"listing version {value.get('version')!r}: upgrade kubectl dr to read it")
                    header_seen = True
                    continue
                entry = Entry.from_row(value)
            except (ValueError, TypeError) as exc:
                raise VerificationError(f"{where}: line {number} of the entry listing is unreadable: {exc}") from None
            entries.items[entry.path] = entry
        if not header_seen:
            raise VerificationError(f"{where}: the entry listing is empty")
        return entries


def _line(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
