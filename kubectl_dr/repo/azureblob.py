"""An Azure Blob Storage backup repository: ``azure://CONTAINER/PREFIX``.

The layout and its rules are every object store's, in ``objectstore``: ``PREFIX/ID/manifest.json``
next to the parts, the manifest written last (a backup without it is invisible), ``PREFIX/ID/.owner``
naming a live writer (rewritten every few minutes), ``PREFIX/ID/.deleting`` written first by a deletion.

A part is a block blob built from staged blocks: each block is sent with its MD5 (Content-MD5, which the
service checks on receipt) while the next one fills, a few in flight at most, so memory stays a few blocks
whatever the size; the block list is committed when the part ends, and the committed size is read back.
Blocks staged by a writer that was killed are invisible (Azure discards uncommitted blocks after a week);
prune discards them at once by committing an empty block list over them and deleting that.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubectl_dr.repo import ids
from kubectl_dr.repo.azureclient import AzureLocation, AzureSettings, is_not_found, make_container_client, translate
from kubectl_dr.repo.crypto import Identity, Recipient
from kubectl_dr.repo.errors import BackupCorruptError, RepoError
from kubectl_dr.repo.manifest import MANIFEST_NAME
from kubectl_dr.repo.objectstore import (
    DELETING_MARKER,
    Group,
    NotFound,
    ObjectStoreRepository,
    ObjectStoreStaging,
    PooledPartSink,
    growing_part_size,
    split_key,
    timestamp,
)
from kubectl_dr.repo.repository import Backup, Leftover, utcnow
from kubectl_dr.repo.writer import Staging

MIN_BLOCK = 4 << 20
MAX_BLOCKS = 50_000  # Azure's limit of committed blocks in one blob
BLOCKS_PER_STEP = 5_000  # the block size doubles after this many blocks, up to MAX_BLOCK: ~6 TiB in all
MAX_BLOCK = 256 << 20
# Two blocks staging while a third fills: a 12 MiB pool. With four in flight (20 MiB) a whole `pvc backup`
# encrypted to age peaked at 100.7 MiB (issue 24 asks for ≤ 100) while writing 18.5 MiB/s under load.
IN_FLIGHT = 2  # blocks staging while the next fills: memory is about (IN_FLIGHT + 1) × block size
_DELETE_THREADS = 8


@dataclass
class _Group(Group):
    """What a listing shows under one ``PREFIX/NAME/``, with the names that have only staged blocks."""

    uncommitted: builtins.list[str] = field(default_factory=builtins.list)


class AzureRepository(ObjectStoreRepository):
    kind = "azure"

    def __init__(self, where: AzureLocation, settings: AzureSettings | None = None, *,
                 clock: Callable[[], datetime] = utcnow, recipients: Sequence[Recipient | str] = (),
                 identities: Sequence[Identity] = (), client: Any = None) -> None:
        super().__init__(clock=clock, recipients=recipients, identities=identities)
        self.where = where
        self.settings = settings or AzureSettings()
        self._client = client

    @property
    def container(self) -> Any:
        if self._client is None:
            self._client = make_container_client(self.settings, self.where)
        return self._client

    @property
    def place(self) -> str:
        # azure://CONTAINER/PREFIX names no account: the same container in Azurite and in Azure are two.
        return f"{self.settings.account_url} {self.where.url}"

    def call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One request, its failure translated into a RepoError that says what to do (NotFound for a
        missing blob, which callers decide about)."""
        try:
            return fn(*args, **kwargs)
        except RepoError:
            raise
        except Exception as exc:
            if is_not_found(exc):
                raise NotFound(doing) from None
            raise translate(exc, self.where, doing, self.settings) from None

    def blob(self, key: str) -> Any:
        return self.container.get_blob_client(key)

    # --- the store's primitives ----------------------------------------------------------------------

    def put_bytes(self, doing: str, key: str, data: bytes, content_type: str | None = None) -> None:
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_type=content_type) if content_type else None
        self.call(doing, self.blob(key).upload_blob, data, overwrite=True, validate_content=True,
                  content_settings=settings)

    def get_bytes(self, key: str, doing: str) -> bytes:
        downloader = self.call(doing, self.blob(key).download_blob, max_concurrency=1)
        return bytes(self.call(doing, downloader.readall))

    def has(self, key: str, doing: str) -> bool:
        try:
            self.call(doing, self.blob(key).get_blob_properties)
            return True
        except NotFound:
            return False

    def delete_key(self, key: str, doing: str = "deleting a blob") -> None:
        with contextlib.suppress(NotFound):  # already gone: what was wanted
            self.call(doing, self.blob(key).delete_blob)

    def names(self, prefix: str, *, uncommitted: bool = False, page: int | None = None) -> Iterator[Any]:
        """The blobs under ``prefix`` (BlobProperties), paged lazily; with ``uncommitted``, also the names
        that have only staged blocks."""
        include = ["uncommittedblobs"] if uncommitted else None
        pages = self.call("listing the repository", self.container.list_blobs, name_starts_with=prefix,
                          include=include, results_per_page=page)
        try:
            yield from pages
        except Exception as exc:
            raise translate(exc, self.where, "listing the repository", self.settings) from None

    # --- checks --------------------------------------------------------------------------------------

    def preflight(self, expected_bytes: int | None = None, *, create: bool = True) -> None:
        """The container answers and takes writes under the prefix (a probe blob, removed at once)."""
        # A listing, not the container's properties: a SAS token scoped to the container may list and
        # write but not read the container's own properties.
        next(iter(self.names(self.where.base, page=1)), None)
        if not create:
            return
        probe = self.where.key(f".probe-{os.getpid()}-{ids.with_suffix('w')}")
        self.put_bytes("writing a test blob", probe, b"kubectl-dr write check\n")
        self.call("removing the test blob", self.blob(probe).delete_blob)

    # --- listing -------------------------------------------------------------------------------------

    def _groups(self, prefix: str | None = None, *, uncommitted: bool = False) -> dict[str, _Group]:
        groups: dict[str, _Group] = {}
        base = self.where.base
        for blob in self.names(prefix if prefix is not None else base):
            name, file = split_key(str(blob.name)[len(base):])
            if name:
                groups.setdefault(name, _Group()).objects[file] = (int(blob.size), timestamp(blob.last_modified))
        if uncommitted:
            for blob in self.names(prefix if prefix is not None else base, uncommitted=True):
                name, file = split_key(str(blob.name)[len(base):])
                if name and file not in groups.get(name, _Group()).objects:
                    groups.setdefault(name, _Group()).uncommitted.append(str(blob.name))
        return groups

    def _group(self, name: str) -> _Group | None:
        return self._groups(self.where.key(name) + "/", uncommitted=True).get(name)

    def _open_stored(self, backup: Backup, file: str) -> Any:
        key = self.where.key(backup.key, file)
        try:
            props = self.call("reading a part", self.blob(key).get_blob_properties)
        except NotFound:
            raise BackupCorruptError(backup.id, file, "is missing") from None
        return AzureReader(self, key, int(props.size))

    def _stored_sizes(self, backup: Backup) -> dict[str, int]:
        prefix = self.where.key(backup.key) + "/"
        return {str(b.name)[len(prefix):]: int(b.size) for b in self.names(prefix)}

    # --- writing -------------------------------------------------------------------------------------

    def _staging(self, backup_id: str) -> Staging:
        return ObjectStoreStaging(self, backup_id, lambda key, hashed, hint: BlockBlobSink(self, key, hashed, hint))

    def _exists(self, name: str) -> bool:
        return next(iter(self.names(self.where.key(name) + "/", uncommitted=True, page=1)), None) is not None

    # --- removing ------------------------------------------------------------------------------------

    def _remove_group(self, name: str, group: Group) -> None:
        for key in group.uncommitted if isinstance(group, _Group) else ():
            self.discard_blocks(key)
        # The manifest first (the backup is invisible from then on), the marker last.
        files = sorted(group.objects, key=lambda f: (f != MANIFEST_NAME, f == DELETING_MARKER, f))
        if files and files[0] == MANIFEST_NAME:
            self.delete_key(self.where.key(name, MANIFEST_NAME))
            files = files[1:]
        last = [f for f in files if f == DELETING_MARKER]
        middle = [f for f in files if f != DELETING_MARKER]
        with ThreadPoolExecutor(_DELETE_THREADS, "azure-delete") as pool:
            builtins.list(pool.map(lambda f: self.delete_key(self.where.key(name, f)), middle))
        for f in last:
            self.delete_key(self.where.key(name, f))

    def discard_blocks(self, key: str) -> None:
        """Drop the uncommitted blocks staged for ``key``: committing an empty block list discards them
        (Azure has no call that does only that), and the empty blob it makes is deleted. Only for a name
        with no committed blob: a committed one would be emptied."""
        with contextlib.suppress(NotFound, RepoError):  # Azure discards them within a week anyway
            self.call("discarding staged blocks", self.blob(key).commit_block_list, [])
            self.delete_key(key)

    def leftovers(self) -> builtins.list[Leftover]:
        found: builtins.list[Leftover] = []
        for name, group in sorted(self._groups(uncommitted=True).items()):
            if ids.name_problem(name) is not None:
                continue  # not ours to remove: no name under it can be formed safely
            if group.committed:
                continue  # staged blocks left under a committed backup's names are discarded by Azure
            what = "an interrupted delete" if DELETING_MARKER in group.objects else "an interrupted write"
            shown = f"{name}/ ({len(group.objects)} blobs, {len(group.uncommitted)} with staged blocks only)"
            found.append(Leftover(shown, what, self._stale(name, group), (name, group)))
        return found

    def _stale_unowned(self, group: Group) -> bool:
        # Only staged blocks (no owner record, no time to judge by): Azure lists no age for them, so
        # they count as stale; a live writer always has its .owner blob beside them.
        return not group.objects or super()._stale_unowned(group)


def block_size_for(number: int, size_hint: int | None) -> int:
    """The size of block ``number`` (1-based): at least 4 MiB, more for large expected sizes, doubling
    every 5000 blocks up to 256 MiB, so that 50 000 blocks reach ~6 TiB whatever the hint said (memory
    stays a few blocks: 20 MiB for anything under 150 GiB)."""
    return growing_part_size(number, size_hint, smallest=MIN_BLOCK, largest=MAX_BLOCK, most=MAX_BLOCKS,
                             per_step=BLOCKS_PER_STEP)


def block_id(number: int) -> str:
    # Every block ID of a blob must have the same length: a fixed-width counter (base64, and the SDK
    # encodes it once more on the wire; the same for staging and for the block list).
    return base64.b64encode(f"kubectl-dr-{number:08d}".encode()).decode()


class BlockBlobSink(PooledPartSink):
    """A part streamed into a block blob: one Put Blob if it is small, else blocks staged from a fixed pool
    of buffers and the block list committed at the end."""

    in_flight = IN_FLIGHT
    most_parts = MAX_BLOCKS
    unit = "blocks"
    whole = "a block blob"
    service = "the Azure storage service"
    thread_name = "azure-stage"

    def __init__(self, repo: AzureRepository, key: str, hash_stored: bool, size_hint: int | None) -> None:
        self._repo = repo
        self._blob = repo.blob(key)
        super().__init__(key, hash_stored, size_hint)

    def _part_size(self, number: int, size_hint: int | None) -> int:
        return block_size_for(number, size_hint)

    def _send(self, number: int, body: bytes | bytearray) -> str:
        ident = block_id(number)
        # The block goes with its MD5 (Content-MD5), which the service checks before it keeps it. We hash
        # the pool's buffer in one call and hand the SDK a reader over it: given the buffer itself the SDK
        # would need bytes, a copy of every block in flight (16 MiB), and it hashes a stream 4 KiB at a time.
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        headers = self._repo.call("staging a block", self._blob.stage_block, ident, BufferReader(body),
                                  length=len(body), transactional_content_md5=md5)
        echoed = headers.get("content_md5") if isinstance(headers, dict) else None
        if echoed and bytes(echoed) != md5:  # Azure echoes the MD5 it computed (Azurite does not)
            raise RepoError(f"the Azure storage service stored block {number} of {self._key} with MD5 "
                            f"{base64.b64encode(bytes(echoed)).decode()}, not the {base64.b64encode(md5).decode()} "
                            "we sent", hint="The upload was damaged on the way; run the command again.")
        return ident

    def _finish(self, parts: builtins.list[Any]) -> None:
        self._repo.call("committing the block list", self._blob.commit_block_list, parts)

    def _put_whole(self, body: bytes) -> None:
        self._repo.call("uploading a part", self._blob.upload_blob, body, overwrite=True, validate_content=True)

    def _stored_size(self) -> int:
        try:
            return int(self._repo.call("checking an upload", self._blob.get_blob_properties).size)
        except NotFound:
            raise RepoError(f"{self._key} is not in {self._repo.location} after its upload",
                            hint="Run the command again.") from None

    def _discard(self) -> None:
        self._repo.discard_blocks(self._key)


class BufferReader(io.RawIOBase):
    """A seekable reader over a buffer that is not copied: what the SDK sends a staged block from (it
    seeks back to the start to send the block again on a retry)."""

    def __init__(self, buffer: bytes | bytearray) -> None:
        super().__init__()
        self._view = memoryview(buffer).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        n = max(0, min(len(target), len(self._view) - self._pos))
        memoryview(target).cast("B")[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)


class AzureReader:
    """A stored blob streamed in 4 MiB ranges; a connection that breaks is resumed where it stopped."""

    RETRIES = 3

    def __init__(self, repo: AzureRepository, key: str, size: int) -> None:
        self._repo = repo
        self._key = key
        self.size = size
        self._pos = 0
        self._chunks: Iterator[bytes] | None = None
        self._pending = memoryview(b"")

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self._pending:
            if self._pos >= self.size:
                return 0
            self._pending = memoryview(self._next_chunk())
            if not self._pending:
                return 0
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self._pos += n
        return n

    def _next_chunk(self) -> bytes:
        for attempt in range(self.RETRIES + 1):
            try:
                if self._chunks is None:
                    downloader = self._repo.call("reading a part", self._repo.blob(self._key).download_blob,
                                                 offset=self._pos, max_concurrency=1)
                    self._chunks = iter(downloader.chunks())
                return next(self._chunks, b"")
            except NotFound:
                raise RepoError(f"{self._key} disappeared while it was read") from None
            except RepoError:
                raise
            except Exception as exc:  # a broken connection: resume where it stopped
                self._chunks = None
                if attempt == self.RETRIES:
                    raise translate(exc, self._repo.where, "reading a part", self._repo.settings) from None
                time.sleep(0.5 * (attempt + 1))
        return b""

    def read(self, size: int = -1) -> bytes:
        buf = bytearray(1 << 20 if size < 0 else size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def close(self) -> None:
        self._chunks = None
        self._pending = memoryview(b"")
