"""What a tar archive holds, and whether it is safe to extract, read from its headers only.

The listing serves three purposes: the numbers recorded in a backup's manifest (entries, files,
directories, bytes), the reference a restore compares the volume with (`tree_check`), and the safety
check made before anything is extracted. kubectl cp had five CVEs for archives that write outside the
target (`..`, absolute names, entries beneath a symlink, hard links that point outside); an archive
with any of those is refused as a whole, before a byte of it is sent anywhere.

Reading is header by header (the data is skipped with seeks), so it costs a few seconds per hundred
thousand files and memory in proportion to the number of entries, never to their size.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kubectl_dr.errors import DrError, VerificationError

FILE, DIR, SYMLINK, HARDLINK, FIFO, CHAR, BLOCK = "file", "dir", "symlink", "hardlink", "fifo", "char", "block"
# Names are bytes on the volume; surrogateescape turns undecodable bytes into str and back unchanged.
ENCODING = "utf-8"
ERRORS = "surrogateescape"


class UnsafeArchiveError(VerificationError):
    """The archive would write outside the directory it is extracted into."""


@dataclass(frozen=True)
class Entry:
    path: str  # relative, normalised: no "./" prefix, no trailing "/", "" for the root directory
    kind: str
    size: int  # content bytes of a regular file; 0 otherwise
    mode: int  # permission bits including setuid, setgid and sticky
    uid: int
    gid: int
    mtime: int
    target: str = ""  # symlink text, or the normalised path a hard link points to


@dataclass
class Listing:
    entries: dict[str, Entry] = field(default_factory=dict)
    bytes: int = 0  # content bytes of regular files (hard links not counted twice)

    def count(self, kind: str) -> int:
        return sum(1 for e in self.entries.values() if e.kind == kind)

    def summary(self) -> dict[str, int]:
        return {
            "entries": len(self.entries),
            "files": self.count(FILE) + self.count(HARDLINK),
            "directories": self.count(DIR),
            "symlinks": self.count(SYMLINK),
            "hardLinks": self.count(HARDLINK),
            "other": self.count(FIFO) + self.count(CHAR) + self.count(BLOCK),
            "contentBytes": self.bytes,
        }

    def kept_paths(self) -> set[str]:
        """Every path in the archive and every directory above one (tar creates missing parents)."""
        kept: set[str] = {""}
        for path in self.entries:
            while path not in kept:
                kept.add(path)
                path = path.rpartition("/")[0]
        return kept


def normalise(name: str) -> str:
    """`./a/b/` → `a/b`; `.` and `./` → `` (the root)."""
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    return "" if name == "." else name


def _kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return FILE
    if info.isdir():
        return DIR
    if info.issym():
        return SYMLINK
    if info.islnk():
        return HARDLINK
    if info.isfifo():
        return FIFO
    if info.ischr():
        return CHAR
    if info.isblk():
        return BLOCK
    raise UnsafeArchiveError(f"archive entry {info.name!r} has an unsupported type {info.type!r}")


def _check_name(name: str, original: str, what: str = "entry") -> None:
    if original.startswith("/"):
        raise UnsafeArchiveError(f"archive {what} {original!r} is an absolute path: refusing the whole archive")
    if ".." in name.split("/"):
        raise UnsafeArchiveError(f"archive {what} {original!r} contains '..': refusing the whole archive")


def members(stream: BinaryIO) -> Iterator[tarfile.TarInfo]:
    """Headers one by one, without keeping them all (TarFile normally remembers every member)."""
    try:
        tar = tarfile.open(fileobj=stream, mode="r:", encoding=ENCODING, errors=ERRORS)  # noqa: SIM115
    except tarfile.TarError as exc:
        raise VerificationError(f"not a tar archive: {exc}") from None
    try:
        while True:
            try:
                info = tar.next()
            except tarfile.TarError as exc:
                raise VerificationError(f"the tar archive is damaged: {exc}") from None
            if info is None:
                return
            tar.members = []  # type: ignore[attr-defined]  # undocumented list of every member read
            yield info
    finally:
        tar.close()


def list_archive(stream: BinaryIO) -> Listing:
    """Read every header; raise UnsafeArchiveError for anything that could escape the target."""
    listing = Listing()
    symlinks: set[str] = set()
    for info in members(stream):
        path = normalise(info.name)
        _check_name(path, info.name)
        parent = path
        while parent:
            parent = parent.rpartition("/")[0]
            if parent in symlinks:
                raise UnsafeArchiveError(
                    f"archive entry {info.name!r} lies beneath the symlink {parent!r}: extracting it would "
                    "write wherever the link points; refusing the whole archive"
                )
        kind = _kind(info)
        target = ""
        if kind == SYMLINK:
            target = info.linkname
            symlinks.add(path)
        elif kind == HARDLINK:
            target = normalise(info.linkname)
            _check_name(target, info.linkname, "hard link target")
        else:
            symlinks.discard(path)  # a later entry replaces an earlier symlink of the same name
        size = info.size if kind == FILE else 0
        previous = listing.entries.get(path)
        if previous is not None and previous.kind == FILE:
            listing.bytes -= previous.size
        listing.entries[path] = Entry(path, kind, size, info.mode & 0o7777, info.uid, info.gid, int(info.mtime),
                                      target)
        listing.bytes += size
    return listing


def list_file(path: Path) -> Listing:
    try:
        with open(path, "rb") as f:
            return list_archive(f)
    except OSError as exc:
        raise DrError(f"cannot read {path}: {exc.strerror}") from None
