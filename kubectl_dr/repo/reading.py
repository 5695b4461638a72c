"""Reading a part back: streamed, decrypted when it is encrypted, and checked against the manifest at EOF.

Two digests are checked: the stored bytes' (which needs no key: `backups verify --stored-only`, and
`backups copy`) and the plaintext's (the pod's own hash). A reader that runs past the recorded size
fails at once; one that ends short or with another digest fails at its last read, so a consumer that
reads to the end never acts on damaged data without an exception.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, cast

from kubectl_dr.repo.crypto import Decryptor, Identity, NoMatchingIdentity
from kubectl_dr.repo.errors import BackupCorruptError, EncryptedBackupError, RepoError
from kubectl_dr.repo.manifest import Manifest, Part

CHUNK = 1 << 20
Progress = Callable[[int], None]


class StoredReader:
    """Counts and hashes the stored bytes as they are read (by us, or by pyrage through ``read``)."""

    def __init__(self, raw: Any, backup_id: str, part: Part, progress: Progress | None, hash_it: bool = True) -> None:
        self._raw = raw
        self._backup_id = backup_id
        self._part = part
        self._progress = progress
        self._hash = hashlib.sha256() if hash_it else None
        self.size = 0

    def readinto(self, buffer: memoryview) -> int:
        try:
            n = int(self._raw.readinto(buffer))
        except OSError as exc:  # a failing disk (EIO), or something that is not a file
            raise BackupCorruptError(self._backup_id, self._part.name,
                                     f"cannot be read: {exc.strerror or exc}") from None
        if n:
            self.size += n
            if self.size > self._part.stored_size:
                raise BackupCorruptError(self._backup_id, self._part.name,
                                         f"is longer than the {self._part.stored_size} bytes the manifest records")
            if self._hash is not None:
                self._hash.update(buffer[:n])
            if self._progress is not None:
                self._progress(n)
        return n

    def read(self, size: int = -1) -> bytes:
        buf = bytearray(CHUNK if size < 0 else size)
        n = self.readinto(memoryview(buf))
        return bytes(buf[:n])

    def check(self) -> None:
        expected = self._part.stored_size
        if self.size != expected:
            how = "truncated" if self.size < expected else "longer than recorded"
            raise BackupCorruptError(self._backup_id, self._part.name,
                                     f"is {self.size} bytes but the manifest says {expected}: it is {how}")
        if self._hash is not None and self._hash.hexdigest() != self._part.stored_sha256:
            raise BackupCorruptError(self._backup_id, self._part.name,
                                     f"has SHA-256 {self._hash.hexdigest()} but the manifest says "
                                     f"{self._part.stored_sha256}")

    def close(self) -> None:
        self._raw.close()


class PartReader(io.RawIOBase):
    """The plaintext of one part as a stream; raises BackupCorruptError at EOF if anything differs."""

    def __init__(self, raw: Any, manifest: Manifest, part: Part, identities: Sequence[Identity] | None,
                 progress: Progress | None = None) -> None:
        super().__init__()
        self.backup_id = manifest.id
        self.part = part
        self._recipient_list = _recipients(manifest)
        self._stored = StoredReader(raw, manifest.id, part, progress)
        self._decryptor: Decryptor | None = None
        self._plain_hash = hashlib.sha256() if part.encrypted else None
        self.size = 0
        self._checked = False
        if part.encrypted:
            if not identities:
                raw.close()
                raise EncryptedBackupError(manifest.id, _recipients(manifest), f'reading part "{part.name}"')
            self._decryptor = Decryptor(self._stored, identities)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._decryptor is not None:
            try:
                n = self._decryptor.readinto(view)
            except NoMatchingIdentity:
                raise RepoError(f'none of the identities given opens backup "{self.backup_id}" '
                                f"(it is encrypted to {', '.join(self._recipients_text())})",
                                hint="Pass the --identity that matches one of those recipients.") from None
            except BackupCorruptError:
                raise
            except RepoError as exc:
                raise BackupCorruptError(self.backup_id, self.part.name, f"does not decrypt: {exc.message}") from None
        else:
            n = self._stored.readinto(view)
        if n:
            self.size += n
            if self._plain_hash is not None:
                self._plain_hash.update(view[:n])
            if self.size > self.part.size:
                raise BackupCorruptError(self.backup_id, self.part.name,
                                         f"is longer than the {self.part.size} bytes the manifest records")
        elif not self._checked:
            self._check()
        return n

    def _recipients_text(self) -> list[str]:
        return self._recipient_list or ["recipients its manifest does not name"]

    def _check(self) -> None:
        self._checked = True
        self._stored.check()
        if self._plain_hash is not None:
            if self.size != self.part.size:
                raise BackupCorruptError(self.backup_id, self.part.name,
                                         f"decrypts to {self.size} bytes but the manifest says {self.part.size}")
            if self._plain_hash.hexdigest() != self.part.sha256:
                raise BackupCorruptError(self.backup_id, self.part.name,
                                         f"decrypts to SHA-256 {self._plain_hash.hexdigest()} but the manifest "
                                         f"says {self.part.sha256}")

    def read_to_end(self) -> None:
        """Read (and check) everything; what verification does."""
        buf = memoryview(bytearray(CHUNK))
        while self.readinto(buf):
            pass

    def close(self) -> None:
        if not self.closed:
            if self._decryptor is not None:
                self._decryptor.close()
            self._stored.close()
        super().close()


def read_stored(raw: Any, manifest: Manifest, part: Part, progress: Progress | None = None) -> None:
    """Read the stored bytes to the end and check their size and SHA-256 (no key needed)."""
    reader = StoredReader(raw, manifest.id, part, progress)
    try:
        buf = memoryview(bytearray(CHUNK))
        while reader.readinto(buf):
            pass
        reader.check()
    finally:
        reader.close()


def _recipients(manifest: Manifest) -> list[str]:
    return [str(r) for r in (manifest.encryption or {}).get("recipients", [])]


def as_binary(reader: PartReader) -> BinaryIO:
    """The reader buffered, as the BinaryIO the interface promises."""
    return cast(BinaryIO, io.BufferedReader(reader, CHUNK))
