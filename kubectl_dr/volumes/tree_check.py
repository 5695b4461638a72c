"""The restored tree against the archive: every entry present with its type, size, mode, owner, mtime.

The pod lists the volume (`scripts.listing_script`): the bytes crossed the wire intact (size and
SHA-256 on both sides), and this check proves tar put them where they belong: nothing skipped, no
permission or owner silently dropped, hard links still one file.
"""

from __future__ import annotations

import stat as st
from dataclasses import dataclass

from kubectl_dr.errors import VerificationError
from kubectl_dr.ui.output import count
from kubectl_dr.volumes.archive import (
    BLOCK,
    CHAR,
    DIR,
    ENCODING,
    ERRORS,
    FIFO,
    FILE,
    HARDLINK,
    SYMLINK,
    Listing,
    normalise,
)

_KINDS = {st.S_IFREG: FILE, st.S_IFDIR: DIR, st.S_IFLNK: SYMLINK, st.S_IFIFO: FIFO, st.S_IFCHR: CHAR,
          st.S_IFBLK: BLOCK, st.S_IFSOCK: "socket"}
SHOWN = 10


@dataclass(frozen=True)
class Found:
    path: str
    kind: str
    mode: int
    size: int
    links: int
    inode: int
    uid: int
    gid: int
    mtime: int


def parse_listing(output: bytes) -> dict[str, Found]:
    head, sep, names_blob = output.partition(b"\n--\n")
    if not sep:
        raise VerificationError("the rescue pod's listing of the volume is incomplete")
    lines = head.decode().splitlines()
    names = names_blob.split(b"\0")
    if names and names[-1] == b"":
        names.pop()
    if len(lines) != len(names):
        raise VerificationError(f"the rescue pod listed {len(names)} names but {len(lines)} stat lines "
                                "(did something change the volume during the check?)")
    found: dict[str, Found] = {}
    for line, raw in zip(lines, names, strict=True):
        fmode, size, links, inode, uid, gid, mtime = line.split()
        mode = int(fmode, 16)
        path = normalise(raw.decode(ENCODING, ERRORS))
        found[path] = Found(path, _KINDS.get(st.S_IFMT(mode), "unknown"), mode & 0o7777, int(size), int(links),
                            int(inode), int(uid), int(gid), int(mtime))
    return found


def differences(listing: Listing, found: dict[str, Found], *, owners: bool, modes: bool = True,
                times_of_uid: int | None = None) -> list[str]:
    """What differs between the archive and the volume, for the archive's entries.

    `times_of_uid`: a non-root restore can only set times of entries its user owns; check only those.
    """
    problems: list[str] = []
    for entry in listing.entries.values():
        label = entry.path or "."
        have = found.get(entry.path)
        if have is None:
            problems.append(f"{label!r} is missing")
            continue
        want_kind = FILE if entry.kind == HARDLINK else entry.kind
        if have.kind != want_kind:
            problems.append(f"{label!r} is a {have.kind}, the archive has a {want_kind}")
            continue
        if entry.kind == HARDLINK:
            target = found.get(entry.target)
            if target is None or target.inode != have.inode:
                problems.append(f"{label!r} is not a hard link to {entry.target!r}")
            continue
        if entry.kind == FILE and have.size != entry.size:
            problems.append(f"{label!r} has {have.size} bytes, the archive {entry.size}")
        if entry.kind == SYMLINK and have.size != len(entry.target.encode(ENCODING, ERRORS)):
            problems.append(f"{label!r} does not point to {entry.target!r}")
        if entry.kind != SYMLINK and modes and have.mode != entry.mode:
            problems.append(f"{label!r} has mode {have.mode:04o}, the archive {entry.mode:04o}")
        if owners and (have.uid, have.gid) != (entry.uid, entry.gid):
            problems.append(f"{label!r} is owned by {have.uid}:{have.gid}, the archive says {entry.uid}:{entry.gid}")
        if have.mtime != entry.mtime and (times_of_uid is None or have.uid == times_of_uid):
            problems.append(f"{label!r} has mtime {have.mtime}, the archive {entry.mtime}")
    return problems


def extras(listing: Listing, found: dict[str, Found]) -> list[str]:
    """Top-most paths in the volume that the archive does not contain (what --clean removes)."""
    kept = listing.kept_paths()
    out: list[str] = []
    for path in sorted(found):
        if path in kept:
            continue
        parent = path.rpartition("/")[0]
        if parent in kept:  # else an ancestor is already removed as a whole
            out.append(path)
    return out


def require_match(problems: list[str], what: str) -> None:
    if problems:
        shown = "\n  ".join(problems[:SHOWN])
        more = f"\n  … and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        found = count(len(problems), "difference")
        raise VerificationError(f"{what}: {found} from the archive:\n  {shown}{more}")
