"""A volume backup of the plain repository kind read on this machine: `ls -l` of a directory, one file.

The backup's parts are checked before anything is shown: staged copies (S3, encrypted) are checked on
the way in; a local archive is hashed against its manifest first, so `backups cat` never writes bytes
of an archive that differs from the one the backup recorded. The archive is a tar of the volume;
the entry record (the pod's listing) is what `ls` shows, the tar headers when a backup has none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kubectl_dr.console import Console
from kubectl_dr.errors import DrError, VerificationError
from kubectl_dr.repo import Backup, Repository
from kubectl_dr.repo.crypto import Identity
from kubectl_dr.repo.staging import local_parts
from kubectl_dr.volumes.entries import BLOCKDEV, CHAR, DIR, FIFO, FILE, HARDLINK, PART, SYMLINK, Entries, Entry
from kubectl_dr.volumes.source import ARCHIVE_PART, TYPE, Source, check_record, from_headers, read_entries
from kubectl_dr.volumes.tar_reader import ENCODING, ERRORS, read_archive

# A file copied to this machine (--to-dir) keeps its permissions but not setuid or setgid: a backup here is not
# authenticated (whoever writes the bucket writes it), and a setuid-root shell in it, written by root, would be
# one for every local user. A restore into the volume keeps them; directories keep theirs (setgid there only
# makes new files inherit the group, as every fsGroup volume's directories do).
LOCAL_MODE_BITS = 0o1777


@dataclass(frozen=True)
class Written:
    files: int
    without_setid: list[str]  # files whose setuid or setgid bit was left off here

_BLOCK = 1 << 20


@dataclass
class Browsed:
    label: str  # "backup ID", for messages
    archive: Path  # checked against the backup's manifest
    entries: Entries
    id: str = ""  # the backup's

    @classmethod
    def of(cls, src: Source) -> Browsed:
        """A restore's source, its archive hashed against the manifest first unless that was done already."""
        if not src.verified and src.sha256 is not None:
            _check_file(src.label, src.path, src.size, src.sha256)
        return cls(src.label, src.path, src.entries, src.backup.id if src.backup else "")


def open_backup(repo: Repository, ref: str | Backup, console: Console,
                identity: Sequence[Identity] | None = None) -> Browsed:
    """A backup by ID or prefix (or `latest`: the newest volume backup), or one found already."""
    backup = repo.resolve(ref, TYPE) if isinstance(ref, str) else ref
    parts = local_parts(repo, backup, [ARCHIVE_PART, PART], console, identity)
    path = parts.files[ARCHIVE_PART]
    if not parts.staged:
        part = backup.manifest.part(ARCHIVE_PART)
        _check_file(f"backup {backup.id}", path, part.size, part.sha256)
    archive = read_archive(path, gnu_sparse=True, allow_empty=True)
    entries = read_entries(backup, parts.files.get(PART) if parts.staged else None)
    if entries is None:
        entries = from_headers(archive)
    else:
        check_record(backup.id, archive, entries)
    return Browsed(f"backup {backup.id}", path, entries, backup.id)


def _check_file(label: str, path: Path, size: int, sha256: str) -> None:
    digest, total = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_BLOCK):
            digest.update(chunk)
            total += len(chunk)
    if (total, digest.hexdigest()) != (size, sha256):
        raise VerificationError(f"the archive of {label} is {total} bytes with SHA-256 {digest.hexdigest()}, its "
                                f"manifest says {size} bytes with SHA-256 {sha256}",
                                hint="The backup is damaged: use another one (kubectl dr backups list).")


def _norm(path: str) -> str:
    return "/".join(p for p in path.split("/") if p not in ("", "."))


def find(browsed: Browsed, path: str) -> Entry:
    entry = browsed.entries.items.get(_norm(path))
    if entry is None:
        raise DrError(f"{path!r} is not in {browsed.label}",
                      hint=f"List it: kubectl dr backups ls {browsed.id or 'ID'} [DIR]")
    return entry


def list_dir(browsed: Browsed, path: str) -> list[Entry]:
    """One level under a directory (a file lists itself), in name order."""
    entry = find(browsed, path)
    if entry.kind != DIR:
        return [entry]
    prefix = f"{entry.path}/" if entry.path else ""
    return sorted((e for e in browsed.entries.items.values()
                   if e.path and e.path.startswith(prefix) and "/" not in e.path[len(prefix):]),
                  key=lambda e: e.path)


def file_bytes(browsed: Browsed, path: str) -> Iterator[bytes]:
    """A file's content from the archive (a hard link's from the file it shares its inode with)."""
    entry = find(browsed, path)
    if entry.kind not in (FILE, HARDLINK):
        raise DrError(f"{path!r} in {browsed.label} is a {entry.kind}, not a file")
    with tarfile.open(browsed.archive, "r:") as tar:
        for member in tar:
            if _norm(member.name) == entry.path:
                f = tar.extractfile(member)
                if f is None:
                    break
                total = 0
                while chunk := f.read(_BLOCK):
                    total += len(chunk)
                    yield chunk
                if entry.kind == FILE and total != entry.size:
                    raise VerificationError(f"the archive of {browsed.label} holds {total} bytes of {path!r}, "
                                            f"its record says {entry.size}")
                return
    raise VerificationError(f"the archive of {browsed.label} has no member {path!r} its record names")


def _wanted(browsed: Browsed, includes: list[str]) -> dict[str, Entry]:
    """The entries to write, in the record's order, with a hard link whose first path is left out made the
    file itself (the next ones link to it). Every included path must be in the backup."""
    from kubectl_dr.volumes.restic_source import included

    for inc in includes:
        find(browsed, inc)
    chosen: dict[str, Entry] = {}
    first: dict[str, str] = {}  # a hard link's target in the backup → its first path written here
    for path, e in browsed.entries.items.items():
        if not path or not included(path, includes):
            continue
        if e.kind == HARDLINK:
            if e.target in chosen and chosen[e.target].kind == FILE:
                first.setdefault(e.target, e.target)
            if e.target in first:
                e = dataclasses.replace(e, target=first[e.target])
            else:
                source = browsed.entries.items[e.target]
                first[e.target] = path
                e = dataclasses.replace(e, kind=FILE, target="", size=source.size, blocks=source.blocks)
        chosen[path] = e
    return chosen


def _contents(browsed: Browsed, wanted: dict[str, Entry]) -> Iterator[tuple[Entry, IO[bytes] | None]]:
    """Each wanted entry with its content (files), in archive order; the archive was checked already."""
    with tarfile.open(browsed.archive, "r:") as tar:
        for member in tar:
            path = _norm(member.name)
            entry = wanted.get(path)
            if entry is None:
                continue
            yield entry, tar.extractfile(member) if entry.kind == FILE else None


def write_to_dir(browsed: Browsed, dest: Path, includes: list[str]) -> Written:
    """The backup (or the included paths and the directories leading to them) into a new or empty local
    directory; says how many files it wrote and which entries lost a setuid or setgid bit (LOCAL_MODE_BITS).
    Every parent is a directory this writes itself (a path under a symlink of the backup is refused) and every
    file is created O_EXCL|O_NOFOLLOW, so no write follows a link. Owners applied when running as root."""
    wanted = _wanted(browsed, includes)
    for path in wanted:
        parent = path.rpartition("/")[0]
        while parent:
            if browsed.entries.items.get(parent, Entry(parent, "", 0, 0, 0, 0, 0)).kind != DIR:
                raise DrError(f"{path!r} in {browsed.label} lies under {parent!r}, which is not a "
                              "directory of the backup: refused")
            parent = parent.rpartition("/")[0]
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise DrError(f"{dest} is not empty", hint="Give a new or empty directory to --to-dir.")
    owners = os.geteuid() == 0
    dirs: list[tuple[Path, Entry]] = []
    files = 0
    for entry, content in _contents(browsed, wanted):
        target = dest / entry.path
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if entry.kind == DIR:
            target.mkdir(mode=0o700, exist_ok=True)
            dirs.append((target, entry))
            continue
        if entry.kind == FILE:
            assert content is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := content.read(_BLOCK):
                    out.write(chunk)
            files += 1
        elif entry.kind == HARDLINK:
            os.link(dest / entry.target, target, follow_symlinks=False)
            continue
        elif entry.kind == SYMLINK:
            os.symlink(entry.target, target)
        elif entry.kind == FIFO:
            os.mkfifo(target, 0o600)
        else:
            continue  # devices and sockets are not made in a local directory
        _apply(target, entry, owners)
    for made, entry in reversed(dirs):  # deepest first: writing into a directory changes its times
        _apply(made, entry, owners)
    return Written(files, [e.path for e in wanted.values() if e.kind == FILE and e.mode & 0o6000])


def _apply(path: Path, entry: Entry, owners: bool) -> None:
    if owners:
        os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
    if entry.kind != SYMLINK:
        os.chmod(path, entry.mode & LOCAL_MODE_BITS if entry.kind == FILE else entry.mode)
    os.utime(path, (entry.mtime, entry.mtime), follow_symlinks=False)


def subset(browsed: Browsed, includes: list[str], workdir: Path) -> Source:
    """The included paths (and the directories leading to them) as an archive and entry record in
    `workdir` (private, removed by the caller): what `pvc restore --include` restores into a claim."""
    wanted = _wanted(browsed, includes)
    entries = Entries()
    entries.items[""] = browsed.entries.items[""]
    path = workdir / "data.tar"
    with open(path, "wb") as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT,
                                               encoding=ENCODING, errors=ERRORS) as tar:
        for entry, content in _contents(browsed, wanted):
            entries.items[entry.path] = entry
            info = tarfile.TarInfo("./" + entry.path)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, 0, 0, max(entry.mtime, 0)
            kinds = {DIR: tarfile.DIRTYPE, SYMLINK: tarfile.SYMTYPE, HARDLINK: tarfile.LNKTYPE,
                     FIFO: tarfile.FIFOTYPE, CHAR: tarfile.CHRTYPE, BLOCKDEV: tarfile.BLKTYPE}
            if entry.kind == FILE:
                info.type, info.size = tarfile.REGTYPE, entry.size
                tar.addfile(info, content)
                continue
            if entry.kind not in kinds:
                continue
            info.type = kinds[entry.kind]
            info.linkname = entry.target if entry.kind == SYMLINK else ("./" + entry.target if entry.target else "")
            info.devmajor, info.devminor = entry.rdev
            tar.addfile(info)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_BLOCK):
            digest.update(chunk)
    archive = read_archive(path, gnu_sparse=False, allow_empty=True)
    check_record(browsed.id or browsed.label, archive, entries)
    return Source(path, path.stat().st_size, digest.hexdigest(), None, archive, entries, True, verified=True)
