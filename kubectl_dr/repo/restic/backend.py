"""Where a restic repository's files live: the layout is restic's "default" layout on every backend.

    config                 keys/ID        locks/ID        snapshots/ID        index/ID        data/ID[:2]/ID

A backend stores and returns whole files (and byte ranges of packs); it knows nothing of encryption.
Names are checked before they become paths or object keys: a listing is untrusted input.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from kubectl_dr.repo.errors import RepoError

CONFIG, KEYS, LOCKS, SNAPSHOTS, INDEX, DATA = "config", "keys", "locks", "snapshots", "index", "data"
KINDS = (KEYS, LOCKS, SNAPSHOTS, INDEX, DATA)
_ID = re.compile(r"[0-9a-f]{64}\Z")


# What `save` takes: a pack is a view of a buffer the repository reuses (valid only during the call).
Data = bytes | bytearray | memoryview


def as_bytes(data: Data) -> bytes:
    """`data` as `bytes`, for clients that take nothing else (a view would be read as an iterable)."""
    return data if isinstance(data, bytes) else bytes(data)


class ResticBackendError(RepoError):
    """A restic repository's storage could not be read or written."""


def check_name(kind: str, name: str) -> str:
    if kind == CONFIG:
        if name != CONFIG:
            raise ResticBackendError(f"the config file is named 'config', not {name!r}")
        return name
    if kind not in KINDS:
        raise ResticBackendError(f"unknown restic file type {kind!r}")
    if not _ID.match(name):
        raise ResticBackendError(f"{kind}/{name!r} is not a restic file name (64 lowercase hex digits)")
    return name


def check_kind(kind: str) -> str:
    """A listing's file type, one of restic's own."""
    if kind not in KINDS:
        raise ResticBackendError(f"unknown restic file type {kind!r}")
    return kind


def check_length(data: bytes, kind: str, name: str, offset: int, length: int | None) -> bytes:
    """A ranged read that came back short is a damaged or truncated file, never a smaller blob."""
    if length is not None and len(data) != length:
        raise ResticBackendError(f"{kind}/{name} is shorter than expected ({offset}+{length} bytes)")
    return data


def listed_name(kind: str, rest: str) -> str | None:
    """The file name an object store lists as `rest` below PREFIX/KIND/ (None: not a repository file:
    a temporary or foreign object, or one at the wrong depth: data files sit one level down)."""
    name = rest.rsplit("/", 1)[-1]
    if rest.count("/") == (1 if kind == DATA else 0) and _ID.match(name):
        return check_name(kind, name)
    return None


def relative_path(kind: str, name: str) -> str:
    check_name(kind, name)
    if kind == CONFIG:
        return CONFIG
    if kind == DATA:
        return f"{DATA}/{name[:2]}/{name}"
    return f"{kind}/{name}"


class Backend(Protocol):
    def describe(self) -> str: ...
    def exists(self) -> bool: ...
    def create(self) -> None: ...
    def save(self, kind: str, name: str, data: Data) -> None: ...
    def load(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes: ...
    def list(self, kind: str) -> Iterator[tuple[str, int]]: ...
    def remove(self, kind: str, name: str) -> None: ...


class LocalBackend:
    """A repository in a local directory, as `restic -r /path` has it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def exists(self) -> bool:
        return (self.root / CONFIG).is_file()

    def create(self) -> None:
        if self.exists():
            raise ResticBackendError(f"a restic repository already exists at {self.root}")
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            for kind in KINDS:
                (self.root / kind).mkdir(exist_ok=True, mode=0o700)
            for i in range(256):
                (self.root / DATA / f"{i:02x}").mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ResticBackendError(f"cannot create the restic repository at {self.root}: {exc.strerror}") from exc

    def save(self, kind: str, name: str, data: Data) -> None:
        path = self.root / relative_path(kind, name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Written beside its name and renamed: a reader (or an interruption) never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name[:8]}-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o400)  # restic's own files are read-only: they never change once written
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ResticBackendError(f"cannot write {path}: {exc.strerror}") from exc

    def load(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self.root / relative_path(kind, name)
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read() if length is None else f.read(length)
        except FileNotFoundError as exc:
            raise ResticBackendError(f"{kind}/{name} is missing from the restic repository {self.root}") from exc
        except OSError as exc:
            raise ResticBackendError(f"cannot read {path}: {exc.strerror}") from exc
        return check_length(data, kind, name, offset, length)

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        check_kind(kind)
        base = self.root / kind
        dirs = sorted(p for p in base.iterdir() if p.is_dir()) if kind == DATA and base.is_dir() else [base]
        for d in dirs:
            if not d.is_dir():
                continue
            for entry in sorted(os.scandir(d), key=lambda e: e.name):
                # Temporary files of an interrupted write and anything foreign are not repository files.
                if _ID.match(entry.name) and entry.is_file(follow_symlinks=False):
                    yield entry.name, entry.stat(follow_symlinks=False).st_size

    def remove(self, kind: str, name: str) -> None:
        path = self.root / relative_path(kind, name)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise ResticBackendError(f"cannot remove {path}: {exc.strerror}") from exc
