"""The volume against the backup's record, entry by entry: what differs, and what can be set right.

After `tar -x`, what tar could not give back (symlink owners and times with busybox, uids past what a
header holds, mtimes before 1970, directory times, sparse files) is set from the record — `fixes` —
and the volume is listed again: then everything must match. The bytes crossed the wire intact (size
and SHA-256 on both sides); this check proves they ended where they belong with what belongs to them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from kubectl_dr.errors import VerificationError
from kubectl_dr.units import count
from kubectl_dr.volumes.entries import DIR, FILE, HARDLINK, SYMLINK, Entries, Entry
from kubectl_dr.volumes.listing import Found
from kubectl_dr.volumes.reconcile import excluded
from kubectl_dr.volumes.tar_reader import ENCODING, ERRORS

SHOWN = 10


@dataclass(frozen=True)
class Rules:
    """What the restoring pod could set, so what the check may demand."""

    owners: bool = True  # only root can give entries their recorded owners
    modes: bool = True
    times_of_uid: int | None = None  # a non-root pod sets times only of what it owns
    sparse: bool = False  # the pod can punch holes (fallocate -d), so sparse files must be sparse again


@dataclass
class Fixes:
    chown: dict[tuple[int, int], list[str]] = field(default_factory=lambda: defaultdict(list))
    chmod: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    touch: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    dig_holes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        """How many changes: an entry given its owner, mode and time counts three times."""
        return (sum(map(len, self.chown.values())) + sum(map(len, self.chmod.values()))
                + sum(map(len, self.touch.values())) + len(self.dig_holes))

    def paths(self) -> set[str]:
        """The entries some change touches, each once (what a message counts as entries)."""
        out = set(self.dig_holes)
        for group in (self.chown, self.chmod, self.touch):
            for paths in group.values():
                out.update(paths)
        return out


@dataclass
class Comparison:
    problems: list[str] = field(default_factory=list)  # what no fix can mend
    fixes: Fixes = field(default_factory=Fixes)


def compare(entries: Entries, found: dict[str, Found], rules: Rules) -> Comparison:
    """Every recorded entry against the volume; entries the record does not have are not looked at."""
    result = Comparison()
    problems, fixes = result.problems, result.fixes
    for entry in entries:
        label = entry.path or "."
        have = found.get(entry.path)
        if have is None:
            problems.append(f"{label!r} is missing")
            continue
        want_kind = FILE if entry.kind == HARDLINK else entry.kind
        if have.kind != want_kind:
            problems.append(f"{label!r} is a {have.kind}, the backup has a {want_kind}")
            continue
        if entry.kind == HARDLINK:
            target = found.get(entry.target)
            if target is None or target.inode != have.inode:
                problems.append(f"{label!r} is not a hard link to {entry.target!r}")
            continue  # the rest is the target's, checked there
        if entry.kind == FILE and have.size != entry.size:
            problems.append(f"{label!r} has {have.size} bytes, the backup {entry.size}")
            continue
        if entry.kind == SYMLINK and have.size != len(entry.target.encode(ENCODING, ERRORS)):
            problems.append(f"{label!r} does not point to {entry.target!r}")
            continue
        if entry.rdev != have.rdev and entry.kind in ("char", "block"):
            problems.append(f"{label!r} is device {have.rdev}, the backup {entry.rdev}")
        owns = rules.times_of_uid is None or have.uid == rules.times_of_uid
        if rules.owners and (have.uid, have.gid) != (entry.uid, entry.gid):
            fixes.chown[(entry.uid, entry.gid)].append(entry.path)
        # chown clears setuid and setgid bits, so a chowned entry gets its mode again too.
        if entry.kind != SYMLINK and rules.modes and (have.mode != entry.mode or (
                rules.owners and (have.uid, have.gid) != (entry.uid, entry.gid) and entry.mode & 0o6000)):
            fixes.chmod[entry.mode].append(entry.path)
        if have.mtime != entry.mtime and owns:
            fixes.touch[entry.mtime].append(entry.path)
        if rules.sparse and entry.sparse and have.blocks * 512 >= entry.size:
            fixes.dig_holes.append(entry.path)
    return result


def predicted_fixes(entries: Entries, before: dict[str, Found], written: set[str], rules: Rules) -> Fixes:
    """The fixes a restore that wrote only `written` (entries sent or written in place, entries removed) can
    know before it lists the volume again, so that they are set in the same exec as that listing: every
    written entry and every directory above one gets the record's owner, mode and time (tar gave them uid 0
    or the pod's, and a directory's time moved when an entry in it was made or removed); every other entry
    what the listing `before` the writes found differing. Setting a value an entry already has changes
    nothing. This only saves round trips: the listing afterwards is compared as after any restore."""
    touched = set(written)
    for path in written:
        while path:
            path = path.rpartition("/")[0]
            touched.add(path)
    fixes = Fixes()
    seen = compare(entries, before, rules).fixes
    for key, paths in seen.chown.items():
        fixes.chown[key] += [p for p in paths if p not in touched]
    for mode, paths in seen.chmod.items():
        fixes.chmod[mode] += [p for p in paths if p not in touched]
    for mtime, paths in seen.touch.items():
        fixes.touch[mtime] += [p for p in paths if p not in touched]
    fixes.dig_holes += [p for p in seen.dig_holes if p not in touched]
    for path in sorted(touched):
        entry = entries.items.get(path)
        if entry is None or entry.kind == HARDLINK:  # not restored, or another name of a file set as that file
            continue
        if rules.owners:
            fixes.chown[(entry.uid, entry.gid)].append(path)
        if rules.modes and entry.kind != SYMLINK:
            fixes.chmod[entry.mode].append(path)
        fixes.touch[entry.mtime].append(path)
        if rules.sparse and entry.sparse:
            fixes.dig_holes.append(path)
    return fixes


def differences(entries: Entries, found: dict[str, Found], rules: Rules) -> list[str]:
    """Everything that differs, fixable or not, in words (for the final check)."""
    result = compare(entries, found, rules)
    out = list(result.problems)
    for (uid, gid), paths in result.fixes.chown.items():
        out += [f"{p or '.'!r} is owned by {found[p].uid}:{found[p].gid}, the backup says {uid}:{gid}" for p in paths]
    for mode, paths in result.fixes.chmod.items():
        out += [f"{p or '.'!r} has mode {found[p].mode:04o}, the backup {mode:04o}" for p in paths]
    for mtime, paths in result.fixes.touch.items():
        out += [f"{p or '.'!r} has mtime {found[p].mtime}, the backup {mtime}" for p in paths]
    out += [f"{p!r} is fully allocated, the backup's file is sparse" for p in result.fixes.dig_holes]
    return out


def extras(entries: Entries, found: dict[str, Found]) -> list[str]:
    """Top-most paths in the volume that the backup does not hold (what --clean removes); never
    lost+found at the root, which backups leave out on purpose."""
    kept = entries.kept_paths()
    out: list[str] = []
    for path in found:
        if path in kept or excluded(path):
            continue
        if path.rpartition("/")[0] in kept:  # else an ancestor is already removed as a whole
            out.append(path)
    return out


def conflicts(entries: Entries, found: dict[str, Found]) -> list[str]:
    """Volume entries of another kind in the way of extraction: a directory where the backup has a file
    (tar cannot replace it), or a file or symlink where it needs a directory (tar would fail, or with a
    symlink write wherever it points)."""
    needs_dir: set[str] = set()
    for entry in entries:
        if entry.kind == DIR:
            needs_dir.add(entry.path)
        parent = entry.path.rpartition("/")[0] if "/" in entry.path else ""
        while parent not in needs_dir:
            needs_dir.add(parent)
            parent = parent.rpartition("/")[0] if "/" in parent else ""
    out = []
    for path, have in found.items():
        if path in needs_dir:
            if have.kind != DIR:
                out.append(path)
        elif path in entries.items and have.kind == DIR:
            out.append(path)
    return out


def require_match(problems: list[str], what: str) -> None:
    if problems:
        shown = "\n  ".join(problems[:SHOWN])
        more = f"\n  … and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise VerificationError(f"{what}: {count(len(problems), 'difference')} from the backup:\n  {shown}{more}")


def describe(entry: Entry) -> str:
    return f"{entry.kind} {entry.path or '.'!r}"
