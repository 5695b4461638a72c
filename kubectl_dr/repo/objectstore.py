"""What the object-store repositories (S3, Azure Blob) share: the layout and its rules.

Layout: ``PREFIX/ID/manifest.json`` next to the parts ``PREFIX/ID/data.tar`` (``data.tar.age`` when
encrypted). An object store has no rename, so the manifest is written last: a backup without its
manifest is invisible to listings. While it is written, ``PREFIX/ID/.owner`` names the writer (host,
pid) and is rewritten every few minutes (a heartbeat); prune removes a manifest-less prefix only once
that writer is gone (dead on this host, or silent for an hour). A deletion first writes
``PREFIX/ID/.deleting`` (from then on the backup is gone), then removes the manifest and the parts.

Each store supplies its few primitives (read, write and delete one object, list one backup's objects,
remove them, its sink); the rules above are written once, here.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kubectl_dr.repo import ids
from kubectl_dr.repo.errors import ManifestError, RepoError, StaleWriterError
from kubectl_dr.repo.local import pid_alive
from kubectl_dr.repo.manifest import MANIFEST_NAME, VERIFICATION_NAME, Manifest
from kubectl_dr.repo.repository import Backup, Leftover, Repository
from kubectl_dr.repo.writer import OWNER_FILE, Sink, Staging

DELETING_MARKER = ".deleting"
HEARTBEAT = 300.0  # seconds between rewrites of a live writer's .owner
STALE_AGE = 3600.0  # a writer silent this long (or a manifest-less prefix this old) is gone
_SCAN_THREADS = 8


class NotFound(Exception):
    """The object asked for is not there; callers decide whether that is an error."""


@dataclass
class Group:
    """What a listing shows under one ``PREFIX/NAME/``."""

    objects: dict[str, tuple[int, float]] = field(default_factory=dict)  # file → (size, mtime)

    @property
    def newest(self) -> float:
        return max((t for _, t in self.objects.values()), default=0.0)

    @property
    def committed(self) -> bool:
        return MANIFEST_NAME in self.objects and DELETING_MARKER not in self.objects


def split_key(rel: str) -> tuple[str, str]:
    """(backup name, file) of a key relative to the prefix; ("", "") when it is not a backup's file."""
    name, sep, file = rel.partition("/")
    if not sep or not file or "/" in file:
        return "", ""  # not a backup's file (a probe, or something of someone else's)
    return name, file


def timestamp(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return float(value or 0)


def growing_part_size(number: int, size_hint: int | None, *, smallest: int, largest: int, most: int,
                      per_step: int) -> int:
    """The size of part ``number`` (1-based) of an object the store builds from at most ``most`` parts:
    at least ``smallest``, more for a large expected size (25% over the hint in the parts before the
    last step), and doubling every ``per_step`` parts up to ``largest``, so that the limit is reached
    only far beyond whatever the hint said while memory stays a few parts."""
    base = smallest
    if size_hint:
        wanted = -(-size_hint * 5 // 4 // (most - per_step))
        base = max(base, -(-wanted // (1 << 20)) << 20)
    return max(base, min(base << ((number - 1) // per_step), largest))


class ObjectStoreRepository(Repository):
    """A repository in an object store; subclasses supply the store's primitives."""

    remote = True
    where: Any  # the store's location: ``url`` and ``key(*parts)``

    @property
    def location(self) -> str:
        return str(self.where.url)

    def backup_location(self, backup_id: str) -> str:
        return f"{self.where.url}/{backup_id}"

    # --- the store's primitives ----------------------------------------------------------------------

    @abstractmethod
    def get_bytes(self, key: str, doing: str) -> bytes:
        """One object's content; NotFound when it is not there."""

    @abstractmethod
    def put_bytes(self, doing: str, key: str, data: bytes, content_type: str | None = None) -> None: ...

    @abstractmethod
    def has(self, key: str, doing: str) -> bool: ...

    @abstractmethod
    def delete_key(self, key: str, doing: str) -> None:
        """Remove one object; one that is already gone is what was wanted."""

    @abstractmethod
    def _groups(self) -> Mapping[str, Group]:
        """Every backup name under the prefix with what is stored under it."""

    @abstractmethod
    def _group(self, name: str) -> Group | None:
        """What is stored under one backup name, including what an interrupted write left."""

    @abstractmethod
    def _remove_group(self, name: str, group: Group) -> None: ...

    @abstractmethod
    def _exists(self, name: str) -> bool: ...

    @abstractmethod
    def _staging(self, backup_id: str) -> Staging: ...

    def _stale_unowned(self, group: Group) -> bool:
        """Whether a prefix with no owner record is left over (no writer is known to be alive)."""
        return time.time() - group.newest > STALE_AGE

    # --- reading -------------------------------------------------------------------------------------

    def _scan_raw(self) -> tuple[builtins.list[Backup], builtins.list[tuple[str, str]]]:
        names = [n for n, g in self._groups().items() if g.committed]
        backups: builtins.list[Backup] = []
        # A prefix no backup ID can name (".." and the like, written by someone else): reported, never read.
        problems = [(self.backup_location(n), f"{self.backup_location(n)}: not a backup ID: {ids.id_problem(n)}")
                    for n in names if ids.id_problem(n) is not None]
        names = [n for n in names if ids.id_problem(n) is None]
        with ThreadPoolExecutor(_SCAN_THREADS, f"{self.kind}-manifests") as pool:
            for name, loaded in zip(names, pool.map(self._load, names), strict=True):
                if isinstance(loaded, Backup):
                    backups.append(loaded)
                else:
                    problems.append((self.backup_location(name), loaded))
        return backups, problems

    def _load(self, name: str) -> Backup | str:
        where = f"{self.backup_location(name)}/{MANIFEST_NAME}"
        try:
            raw = self.get_bytes(self.where.key(name, MANIFEST_NAME), "reading a manifest")
            return Backup(Manifest.parse(raw, where), self.backup_location(name), None, name)
        except NotFound:
            return f"{where} disappeared while the repository was listed"
        except ManifestError as exc:
            return exc.message

    def _fetch(self, backup_id: str) -> Backup | None:
        loaded = self._load(backup_id)
        if not isinstance(loaded, Backup):
            return None
        if self.has(self.where.key(backup_id, DELETING_MARKER), "checking a backup"):
            return None  # being deleted: gone
        return loaded

    def _write_record(self, backup: Backup, data: bytes, name: str = VERIFICATION_NAME) -> None:
        self.put_bytes(f"recording {name}", self.where.key(backup.key, name), data, "application/json")

    def _read_record(self, backup: Backup, name: str = VERIFICATION_NAME) -> bytes | None:
        try:
            return self.get_bytes(self.where.key(backup.key, name), f"reading {name}")
        except NotFound:
            return None

    # --- writing -------------------------------------------------------------------------------------

    def _new_staging(self, backup_id: str, *, exact: bool) -> Staging:
        if exact:
            self._clear_dead_writer(backup_id)
        else:
            base = backup_id
            while self._exists(backup_id):
                backup_id = ids.with_suffix(base)
        return self._staging(backup_id)

    def _clear_dead_writer(self, backup_id: str) -> None:
        """Before a copy under a fixed ID: what a killed copy of it left goes; a live writer is an error."""
        group = self._group(backup_id)
        if group is None:
            return
        if group.committed:
            raise StaleWriterError(f"backup {backup_id} already exists in {self.location}")
        if not self._stale(backup_id, group):
            raise StaleWriterError(f"backup {backup_id} is being written into {self.location} by another process",
                                   hint="Wait for it to finish, or stop it, and run this again.")
        self._remove_group(backup_id, group)

    # --- removing ------------------------------------------------------------------------------------

    def _remove(self, backup: Backup) -> None:
        self.put_bytes("deleting a backup", self.where.key(backup.key, DELETING_MARKER), b"")
        group = self._group(backup.key)
        if group is not None:
            self._remove_group(backup.key, group)

    def _stale(self, name: str, group: Group) -> bool:
        if DELETING_MARKER in group.objects:
            return True
        if OWNER_FILE in group.objects:
            try:
                owner = json.loads(self.get_bytes(self.where.key(name, OWNER_FILE), "reading a writer's record"))
                pid, host = int(owner["pid"]), str(owner["host"])
            except (NotFound, ValueError, KeyError, TypeError):
                return time.time() - group.newest > STALE_AGE
            if host == socket.gethostname():
                return not pid_alive(pid)
            return time.time() - group.objects[OWNER_FILE][1] > STALE_AGE
        return self._stale_unowned(group)

    def _remove_leftover(self, leftover: Leftover) -> None:
        name, group = leftover.handle
        self._remove_group(name, group)


class ObjectStoreStaging(Staging):
    """A backup being written: the owner record kept fresh, the parts' sinks, the manifest last."""

    def __init__(self, repo: ObjectStoreRepository, backup_id: str,
                 open_sink: Callable[[str, bool, int | None], Sink]) -> None:
        self.repo = repo
        self.id = ids.check_id(backup_id)  # the last guard: every key written is PREFIX/ID/FILE
        self.location = repo.location
        self._open = open_sink
        self._sinks: builtins.list[Sink] = []
        self._stop = threading.Event()
        self._owner_key = repo.where.key(backup_id, OWNER_FILE)
        self._write_owner()
        self._heartbeat = threading.Thread(target=self._beat, name=f"{repo.kind}-owner-heartbeat", daemon=True)
        self._heartbeat.start()

    def _write_owner(self) -> None:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "id": self.id,
                 "heartbeat": datetime.now(timezone.utc).isoformat()}
        self.repo.put_bytes("recording the writer", self._owner_key, json.dumps(owner).encode())

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            with contextlib.suppress(RepoError):  # the next part written will report a lasting problem
                self._write_owner()

    def open_sink(self, file: str, *, hash_stored: bool, size_hint: int | None) -> Sink:
        sink = self._open(self.repo.where.key(self.id, file), hash_stored, size_hint)
        self._sinks.append(sink)
        return sink

    def commit(self, manifest_for: Callable[[str], Manifest]) -> Manifest:
        manifest = manifest_for(self.id)
        self.repo.put_bytes("writing the manifest", self.repo.where.key(self.id, MANIFEST_NAME),
                            manifest.to_json().encode(), "application/json")
        self._stop.set()
        # The backup is complete and visible; a stray .owner next to a manifest is ignored.
        with contextlib.suppress(RepoError):
            self.repo.delete_key(self._owner_key, "removing the writer's record")
        return manifest

    def abort(self) -> None:
        self._stop.set()
        for sink in self._sinks:
            sink.abort()
        try:
            group = self.repo._group(self.id)
            if group is not None:
                self.repo._remove_group(self.id, group)
        except RepoError:
            pass  # the owner record stays: prune removes the rest once this process is gone


class PooledPartSink(Sink):
    """A part streamed into an object the store builds from parts: one request if it is small, else parts
    sent ``in_flight`` at a time while the next fills, then put together.

    Parts fill buffers of a fixed pool (``in_flight`` + 1 of one part size) in place and are sent from them
    while the next fills: no buffer grows, and a writer that outruns the network waits for the oldest
    part to hand its buffer back, so memory stays flat whatever the size."""

    in_flight: int  # parts being sent while the next fills
    most_parts: int  # the store's limit of parts in one object
    unit = "parts"  # what the store calls them, for messages
    whole = "an object"  # what it makes of them, for messages
    service = "the storage service"
    thread_name = "upload"

    def __init__(self, key: str, hash_stored: bool, size_hint: int | None) -> None:
        self._key = key
        self._hint = size_hint
        self._hash = hashlib.sha256() if hash_stored else None
        self._limit = self._part_size(1, size_hint)
        self._free: builtins.list[bytearray] = []  # buffers handed back by parts that were sent
        self._made = 0  # buffers of this part size in the pool (free, filling or being sent)
        self._buffer = self._take()
        self._fill = 0
        self._started = False  # parts were sent: the object is put together at the end (or discarded)
        self._done: builtins.list[Any] = []  # what _send returned, in part order (parts settle oldest first)
        self._inflight: deque[Future[Any]] = deque()
        self._lent: deque[bytearray] = deque()  # the buffer of each part in _inflight, in the same order
        self._pool: ThreadPoolExecutor | None = None
        self._number = 0
        self.size = 0
        self._closed = False

    # --- the store's part --------------------------------------------------------------------------------

    @abstractmethod
    def _part_size(self, number: int, size_hint: int | None) -> int: ...

    def _begin(self) -> None:
        """Before the first part is sent (S3 starts its multipart upload)."""

    @abstractmethod
    def _send(self, number: int, body: bytes | bytearray) -> Any:
        """Send part ``number`` (in a pool thread); what it returns is handed to ``_finish``."""

    @abstractmethod
    def _finish(self, parts: builtins.list[Any]) -> None:
        """Put the object together from its parts (what ``_send`` returned, in order)."""

    @abstractmethod
    def _put_whole(self, body: bytes) -> None:
        """Store a part small enough for one request."""

    @abstractmethod
    def _stored_size(self) -> int: ...

    @abstractmethod
    def _discard(self) -> None:
        """Drop the parts sent so far (best effort: prune finds what stays)."""

    # --- writing -------------------------------------------------------------------------------------

    def _take(self) -> bytearray:
        """A buffer of the current part size: a free one, a new one while the pool is not full, else the
        oldest part's once it is sent."""
        while True:
            while self._free:
                buffer = self._free.pop()
                if len(buffer) == self._limit:
                    return buffer
                self._made -= 1  # the part size grew: this smaller one is dropped
            if self._made < self.in_flight + 1:
                self._made += 1
                return bytearray(self._limit)
            self._settle_oldest()

    def _settle_oldest(self) -> None:
        # The oldest part leaves the queues only once it was sent: a failed part stays at their head, so the
        # sink fails again at every later write or close instead of putting an object together without it,
        # and its buffer is never handed out while a send might still read it.
        result = self._inflight[0].result()
        self._inflight.popleft()
        self._free.append(self._lent.popleft())
        self._done.append(result)

    def write(self, data: memoryview) -> None:
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)
        view = memoryview(data).cast("B")
        while view:
            n = min(self._limit - self._fill, len(view))
            self._buffer[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self._limit:
                self._send_part()

    def _send_part(self, *, last: bool = False) -> None:
        if not self._started:
            self._begin()
            self._started = True
            self._pool = ThreadPoolExecutor(self.in_flight, self.thread_name)
        while len(self._inflight) >= self.in_flight:
            self._settle_oldest()
        self._number += 1
        if self._number > self.most_parts:
            raise RepoError(f"{self._key} is larger than {self.whole} can be made of ({self.most_parts} {self.unit})")
        buffer, fill = self._buffer, self._fill
        if fill < len(buffer):
            # Only the last part is short, and the body must be its exact size. The buffer is cut to it in
            # place: a copy would add up to a part's size beside the pool when the pool is fullest (issue 24).
            # _take never hands out a buffer of another size, so this one is not reused.
            del buffer[fill:]
        assert self._pool is not None
        self._inflight.append(self._pool.submit(self._send, self._number, buffer))
        self._lent.append(buffer)
        if last:  # nothing more to fill: no buffer taken (or made) for it
            self._buffer, self._fill = bytearray(), 0
            return
        self._limit = self._part_size(self._number + 1, self._hint)
        self._buffer, self._fill = self._take(), 0

    def close(self) -> str | None:
        if self._closed:
            return self._hash.hexdigest() if self._hash is not None else None
        if not self._started:
            self._put_whole(bytes(memoryview(self._buffer)[:self._fill]))
        else:
            if self._fill or (not self._inflight and not self._done):
                self._send_part(last=True)
            while self._inflight:
                self._settle_oldest()
            self._finish(self._done)
            self._started = False  # put together: nothing staged is left to discard
            self._shutdown()
        self._release()
        stored = self._stored_size()
        if stored != self.size:
            raise RepoError(f"{self.service} holds {stored} bytes of {self._key}, not the {self.size} that were sent",
                            hint="Run the command again.")
        self._closed = True
        return self._hash.hexdigest() if self._hash is not None else None

    def abort(self) -> None:
        for future in self._inflight:
            future.cancel()
        self._shutdown()
        self._inflight.clear()
        self._release()
        if self._started and not self._closed:
            self._discard()
            self._started = False

    def _release(self) -> None:
        """The pool's memory goes back as soon as the part is done with (a backup writes several parts)."""
        self._buffer, self._fill = bytearray(), 0
        self._free.clear()
        self._lent.clear()
        self._made = 0

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
