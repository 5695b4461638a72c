"""What a backup records: the archive's structure and contents, the pod's listing's owners, modes and times.

The listing is taken before the archive is written (it also tells the size to expect and what the pod
cannot read), so on a volume an app keeps writing the two may disagree. An entry is taken from the
listing only where both saw the same object: same kind, same size and mtime for a file (where the
header holds the mtime exactly), same target length for a symlink, same inode for a hard link. Where
they disagree the entry changed while it was read: the archive's header is what its contents belong
to, so its values are kept (the listing's owners where it still has the object), and the entry is
reported. When nothing could write the volume (no consumer ran, or they were stopped) a change is an
error instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.volumes.entries import DIR, FILE, HARDLINK, SOCKET, SYMLINK, Entries, Entry
from kubectl_dr.volumes.listing import Found
from kubectl_dr.volumes.tar_reader import ENCODING, ERRORS, Archive, Member

# Volume-root entries skipped by default: mkfs and fsck make lost+found again, and it is root's 0700.
EXCLUDED_AT_ROOT = ("lost+found",)
_OCTAL_MTIME_LIMIT = 8**11  # what an octal mtime field holds: both tars write such mtimes exactly


@dataclass(frozen=True)
class Identity:
    """Whom the rescue pod runs as; None of it matters for root, which reads everything."""

    uid: int
    gids: frozenset[int]

    @property
    def root(self) -> bool:
        return self.uid == 0

    def can_read(self, found: Found) -> bool:
        if self.root or found.kind not in (FILE, DIR):
            return True  # symlinks, fifos and devices are archived from their metadata alone
        if self.uid == found.uid:
            bits = found.mode >> 6
        elif found.gid in self.gids:
            bits = found.mode >> 3
        else:
            bits = found.mode
        need = 0o5 if found.kind == DIR else 0o4
        return bits & need == need


@dataclass(frozen=True)
class Skipped:
    path: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "why": self.why}

# The first word of the reason recorded for an entry the rescue pod's user could not read.
UNREADABLE = "unreadable"


@dataclass
class Reconciled:
    entries: Entries
    changed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def excluded(path: str) -> bool:
    top = path.split("/", 1)[0]
    return top in EXCLUDED_AT_ROOT


def skipped_by_plan(listing: dict[str, Found], identity: Identity) -> list[Skipped]:
    """What the backup leaves out, known from the listing alone: lost+found at the root, sockets, and
    the top-most entries the pod's user cannot read (a directory's contents go with it)."""
    out: list[Skipped] = []
    unreadable_dirs: list[str] = []
    for path, found in listing.items():
        if not path:
            continue
        if excluded(path):
            if "/" not in path:
                out.append(Skipped(path, "lost+found at the volume root (mkfs and fsck make it again)"))
            continue
        if _beneath(path, unreadable_dirs):
            continue
        if found.kind == SOCKET:
            out.append(Skipped(path, "a socket (the app makes it again when it starts)"))
        elif not identity.can_read(found):
            what = "directory (and its contents)" if found.kind == DIR else "file"
            out.append(Skipped(path, f"{UNREADABLE} {what} for uid {identity.uid} "
                                     f"(owner {found.uid}:{found.gid}, mode {found.mode:04o})"))
            if found.kind == DIR:
                unreadable_dirs.append(path)
    return out


def unreadable_count(details: dict[str, Any]) -> int | None:
    """How many entries a backup left out because its pod could not read them (--skip-unreadable), from the
    manifest's details; None for a backup that records no skipped entries (another type). lost+found and
    sockets are left out by design and are not counted: the count says what the backup is missing."""
    skipped = details.get("skipped")
    if not isinstance(skipped, list):
        return None
    return sum(1 for s in skipped if isinstance(s, dict) and str(s.get("why", "")).startswith(UNREADABLE))


def _beneath(path: str, dirs: list[str]) -> bool:
    return any(path.startswith(d + "/") for d in dirs)


def reconcile(archive: Archive, listing: dict[str, Found], skipped: list[Skipped]) -> Reconciled:
    skipped_paths = {s.path for s in skipped}
    skipped_dirs = [s.path for s in skipped if s.path in listing and listing[s.path].kind == DIR]
    result = Reconciled(Entries(), skipped=list(skipped))
    entries = result.entries.items
    root = listing.get("")
    if root is not None and "" not in archive.members:
        entries[""] = _from_listing(root, None)
    for path, member in archive.members.items():
        found = listing.get(path)
        if found is None or not _same_object(member, found, listing):
            result.changed.append(path)
            entries[path] = _from_header(member, found)
        else:
            entries[path] = _from_listing(found, member)
    for path, found in listing.items():
        if path in entries or excluded(path) or found.kind == SOCKET:
            continue
        if path in skipped_paths or _beneath(path, skipped_dirs):
            # GNU tar leaves out an unreadable directory, busybox tar keeps the entry without contents.
            continue
        result.changed.append(path)  # listed, but gone before tar read it
    return result


def _same_object(member: Member, found: Found, listing: dict[str, Found]) -> bool:
    if member.kind == HARDLINK:
        target = listing.get(member.target)
        return found.kind == FILE and target is not None and target.inode == found.inode
    if member.kind != found.kind:
        return False
    if member.kind == FILE:
        in_header = 0 <= found.mtime < _OCTAL_MTIME_LIMIT
        return member.size == found.size and (not in_header or member.mtime == found.mtime)
    if member.kind == SYMLINK:
        return len(member.target.encode(ENCODING, ERRORS)) == found.size
    return True


def _from_listing(found: Found, member: Member | None) -> Entry:
    kind = member.kind if member is not None else found.kind
    return Entry(found.path, kind, found.mode, found.uid, found.gid, found.size if kind == FILE else 0,
                 found.mtime, member.target if member is not None else "", found.blocks if kind == FILE else 0,
                 found.rdev)


def _from_header(member: Member, found: Found | None) -> Entry:
    owner = (found.uid, found.gid) if found is not None and found.kind == member.kind else (member.uid, member.gid)
    blocks = (found.blocks if found is not None and member.sparse else (member.size + 511) // 512)
    return Entry(member.path, member.kind, member.mode, owner[0], owner[1], member.size, member.mtime,
                 member.target, blocks if member.kind == FILE else 0, member.rdev)
