"""An S3 (or S3-compatible) backup repository: ``s3://BUCKET/PREFIX``.

Layout: ``PREFIX/ID/manifest.json`` next to the parts ``PREFIX/ID/data.tar`` (``data.tar.age`` when
encrypted). S3 has no rename, so the manifest is written last: a backup without its manifest is
invisible to listings. While it is written, ``PREFIX/ID/.owner`` names the writer (host, pid) and is
rewritten every few minutes (a heartbeat); prune removes a manifest-less prefix, and incomplete
multipart uploads under it, only once that writer is gone (dead on this host, or silent for an hour).
A deletion first writes ``PREFIX/ID/.deleting`` (from then on the backup is gone), then removes the
manifest and the parts.

Parts stream up as multipart uploads with a bounded buffer (three parts in flight at most), each part
sent with its SHA-256 (x-amz-checksum-sha256), which servers that know it check on receipt and echo;
the complete object's size is read back with HEAD. Where a server does not check, `backups verify`
reads everything back.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kubectl_dr.repo import ids
from kubectl_dr.repo.crypto import Identity, Recipient
from kubectl_dr.repo.errors import BackupCorruptError, ManifestError, RepoError, StaleWriterError
from kubectl_dr.repo.local import pid_alive
from kubectl_dr.repo.manifest import MANIFEST_NAME, VERIFICATION_NAME, Manifest
from kubectl_dr.repo.repository import Backup, Leftover, Repository, utcnow
from kubectl_dr.repo.s3client import S3Location, S3Settings, is_not_found, make_client, translate
from kubectl_dr.repo.writer import OWNER_FILE, Sink, Staging

DELETING_MARKER = ".deleting"
HEARTBEAT = 300.0  # seconds between rewrites of a live writer's .owner
STALE_AGE = 3600.0  # a writer silent this long (or a manifest-less prefix this old) is gone
MIN_PART = 16 << 20  # S3 needs ≥ 5 MiB for every part but the last
MAX_PARTS = 10_000
PARTS_PER_STEP = 1_000  # the part size doubles after this many parts, up to MAX_PART: ~2.9 TiB in all
MAX_PART = 512 << 20
IN_FLIGHT = 3  # parts uploading while the next fills: memory is about (IN_FLIGHT + 1) × part size
_SCAN_THREADS = 8


@dataclass
class _Group:
    """What a listing shows under one ``PREFIX/NAME/``."""

    objects: dict[str, tuple[int, float]] = field(default_factory=dict)  # file → (size, mtime)
    uploads: builtins.list[tuple[str, str, float]] = field(default_factory=builtins.list)  # (key, id, initiated)

    @property
    def newest(self) -> float:
        times = [t for _, t in self.objects.values()] + [t for _, _, t in self.uploads]
        return max(times) if times else 0.0


class S3Repository(Repository):
    kind = "s3"
    remote = True

    def __init__(self, where: S3Location, settings: S3Settings | None = None, *,
                 clock: Callable[[], datetime] = utcnow, recipients: Sequence[Recipient | str] = (),
                 identities: Sequence[Identity] = (), client: Any = None) -> None:
        super().__init__(clock=clock, recipients=recipients, identities=identities)
        self.where = where
        self.settings = settings or S3Settings()
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    @property
    def location(self) -> str:
        return self.where.url

    def backup_location(self, backup_id: str) -> str:
        return f"{self.where.url}/{backup_id}"

    def call(self, doing: str, method: str, **kwargs: Any) -> Any:
        """One S3 request, its failure translated into a RepoError that says what to do."""
        try:
            return getattr(self.client, method)(Bucket=self.where.bucket, **kwargs)
        except Exception as exc:
            if isinstance(exc, RepoError):
                raise
            if is_not_found(exc) and method in ("get_object", "head_object"):
                raise _NotFound(kwargs.get("Key", "")) from None
            raise translate(exc, self.where, doing, self.settings.endpoint) from None

    # --- checks --------------------------------------------------------------------------------------

    def preflight(self, expected_bytes: int | None = None, *, create: bool = True) -> None:
        """The bucket answers and takes writes under the prefix (a probe object, removed at once)."""
        self.call("checking the bucket", "head_bucket")
        if not create:
            self.call("listing the repository", "list_objects_v2", Prefix=self.where.base, MaxKeys=1)
            return
        probe = self.where.key(f".probe-{os.getpid()}-{ids.with_suffix('w')}")
        self.call("writing a test object", "put_object", Key=probe, Body=b"kubectl-dr write check\n")
        self.call("removing the test object", "delete_object", Key=probe)

    # --- listing -------------------------------------------------------------------------------------

    def _groups(self) -> dict[str, _Group]:
        groups: dict[str, _Group] = {}
        base = self.where.base
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Prefix": base}
            if token:
                args["ContinuationToken"] = token
            page = self.call("listing the repository", "list_objects_v2", **args)
            for obj in page.get("Contents") or []:
                rel = str(obj["Key"])[len(base):]
                name, sep, file = rel.partition("/")
                if not sep or not file or "/" in file:
                    continue  # not a backup's file (a probe, or something of someone else's)
                groups.setdefault(name, _Group()).objects[file] = (int(obj["Size"]), _ts(obj["LastModified"]))
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        for key, upload_id, initiated in self._uploads():
            name, sep, _ = key[len(base):].partition("/")
            if sep:
                groups.setdefault(name, _Group()).uploads.append((key, upload_id, initiated))
        return groups

    def _uploads(self, prefix: str | None = None) -> builtins.list[tuple[str, str, float]]:
        found: builtins.list[tuple[str, str, float]] = []
        args: dict[str, Any] = {"Prefix": prefix if prefix is not None else self.where.base}
        while True:
            page = self.call("listing incomplete uploads", "list_multipart_uploads", **args)
            for up in page.get("Uploads") or []:
                found.append((str(up["Key"]), str(up["UploadId"]), _ts(up["Initiated"])))
            if not page.get("IsTruncated"):
                break
            args["KeyMarker"] = page.get("NextKeyMarker")
            args["UploadIdMarker"] = page.get("NextUploadIdMarker")
        return found

    def _scan_raw(self) -> tuple[builtins.list[Backup], builtins.list[tuple[str, str]]]:
        groups = self._groups()
        names = [n for n, g in groups.items() if MANIFEST_NAME in g.objects and DELETING_MARKER not in g.objects]
        backups: builtins.list[Backup] = []
        # A prefix no backup ID can name (".." and the like, written by someone else): reported, never read.
        problems = [(self.backup_location(n), f"{self.backup_location(n)}: not a backup ID: {ids.id_problem(n)}")
                    for n in names if ids.id_problem(n) is not None]
        names = [n for n in names if ids.id_problem(n) is None]
        with ThreadPoolExecutor(_SCAN_THREADS, "s3-manifests") as pool:
            for name, loaded in zip(names, pool.map(self._load, names), strict=True):
                if isinstance(loaded, Backup):
                    backups.append(loaded)
                else:
                    problems.append((self.backup_location(name), loaded))
        return backups, problems

    def _load(self, name: str) -> Backup | str:
        where = f"{self.backup_location(name)}/{MANIFEST_NAME}"
        try:
            raw = self._get_bytes(self.where.key(name, MANIFEST_NAME), "reading a manifest")
            return Backup(Manifest.parse(raw, where), self.backup_location(name), None, name)
        except _NotFound:
            return f"{where} disappeared while the repository was listed"
        except ManifestError as exc:
            return exc.message

    def _get_bytes(self, key: str, doing: str) -> bytes:
        response = self.call(doing, "get_object", Key=key)
        try:
            return bytes(response["Body"].read())
        except Exception as exc:
            raise translate(exc, self.where, doing, self.settings.endpoint) from None

    def _fetch(self, backup_id: str) -> Backup | None:
        loaded = self._load(backup_id)
        if not isinstance(loaded, Backup):
            return None
        try:
            self.call("checking a backup", "head_object", Key=self.where.key(backup_id, DELETING_MARKER))
            return None  # being deleted: gone
        except _NotFound:
            return loaded

    def _open_stored(self, backup: Backup, file: str) -> Any:
        key = self.where.key(backup.key, file)
        try:
            head = self.call("reading a part", "head_object", Key=key)
        except _NotFound:
            raise BackupCorruptError(backup.id, file, "is missing") from None
        return S3Reader(self, key, int(head["ContentLength"]))

    def _stored_sizes(self, backup: Backup) -> dict[str, int]:
        sizes: dict[str, int] = {}
        prefix = self.where.key(backup.key) + "/"
        page = self.call("listing a backup", "list_objects_v2", Prefix=prefix)
        for obj in page.get("Contents") or []:
            sizes[str(obj["Key"])[len(prefix):]] = int(obj["Size"])
        return sizes

    def _write_record(self, backup: Backup, data: bytes) -> None:
        self.call("recording the verification", "put_object", Key=self.where.key(backup.key, VERIFICATION_NAME),
                  Body=data, ContentType="application/json")

    def _read_record(self, backup: Backup) -> bytes | None:
        try:
            return self._get_bytes(self.where.key(backup.key, VERIFICATION_NAME), "reading a verification record")
        except _NotFound:
            return None

    # --- writing -------------------------------------------------------------------------------------

    def _new_staging(self, backup_id: str, *, exact: bool) -> Staging:
        if exact:
            self._clear_dead_writer(backup_id)
        else:
            base = backup_id
            while self._exists(backup_id):
                backup_id = ids.with_suffix(base)
        return S3Staging(self, backup_id)

    def _exists(self, name: str) -> bool:
        page = self.call("checking for a backup ID", "list_objects_v2", Prefix=self.where.key(name) + "/", MaxKeys=1)
        return bool(page.get("Contents")) or bool(self._uploads(self.where.key(name) + "/"))

    def _clear_dead_writer(self, backup_id: str) -> None:
        """Before a copy under a fixed ID: what a killed copy of it left goes; a live writer is an error."""
        group = self._groups().get(backup_id)
        if group is None:
            return
        if MANIFEST_NAME in group.objects and DELETING_MARKER not in group.objects:
            raise StaleWriterError(f"backup {backup_id} already exists in {self.location}")
        if not self._stale(backup_id, group):
            raise StaleWriterError(f"backup {backup_id} is being written into {self.location} by another process",
                                   hint="Wait for it to finish, or stop it, and run this again.")
        self._remove_group(backup_id, group)

    # --- removing ------------------------------------------------------------------------------------

    def _remove(self, backup: Backup) -> None:
        self.call("deleting a backup", "put_object", Key=self.where.key(backup.key, DELETING_MARKER), Body=b"")
        group = self._groups().get(backup.key, _Group())
        self._remove_group(backup.key, group)

    def _remove_group(self, name: str, group: _Group) -> None:
        for key, upload_id, _ in group.uploads:
            # Already completed or aborted: the listing below catches what remains.
            with contextlib.suppress(RepoError):
                self.call("aborting an incomplete upload", "abort_multipart_upload", Key=key, UploadId=upload_id)
        # The manifest first (the backup is invisible from then on), the marker last.
        order = sorted(group.objects, key=lambda f: (f != MANIFEST_NAME, f == DELETING_MARKER, f))
        keys = [self.where.key(name, f) for f in order]
        self.delete_keys(keys)

    def delete_keys(self, keys: builtins.list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            response = self.call("deleting objects", "delete_objects",
                                 Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise RepoError(f"the S3 server did not delete {len(errors)} objects under {self.location}: "
                                f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')}")

    def leftovers(self) -> builtins.list[Leftover]:
        found: builtins.list[Leftover] = []
        for name, group in sorted(self._groups().items()):
            if ids.name_problem(name) is not None:
                continue  # not ours to remove: no key under it can be formed safely
            committed = MANIFEST_NAME in group.objects and DELETING_MARKER not in group.objects
            if committed:
                if group.uploads:  # an upload of a committed backup that was never aborted
                    old = [u for u in group.uploads if time.time() - u[2] > STALE_AGE]
                    if old:
                        found.append(Leftover(f"{name}/ ({len(old)} incomplete uploads)",
                                              "an interrupted upload", True, (name, _Group({}, old))))
                continue
            what = "an interrupted delete" if DELETING_MARKER in group.objects else "an interrupted write"
            shown = f"{name}/ ({len(group.objects)} objects, {len(group.uploads)} incomplete uploads)"
            found.append(Leftover(shown, what, self._stale(name, group), (name, group)))
        return found

    def _stale(self, name: str, group: _Group) -> bool:
        if DELETING_MARKER in group.objects:
            return True
        if OWNER_FILE in group.objects:
            try:
                owner = json.loads(self._get_bytes(self.where.key(name, OWNER_FILE), "reading a writer's record"))
                pid, host = int(owner["pid"]), str(owner["host"])
            except (_NotFound, ValueError, KeyError, TypeError):
                return time.time() - group.newest > STALE_AGE
            if host == socket.gethostname():
                return not pid_alive(pid)
            return time.time() - group.objects[OWNER_FILE][1] > STALE_AGE
        return time.time() - group.newest > STALE_AGE

    def _remove_leftover(self, leftover: Leftover) -> None:
        name, group = leftover.handle
        self._remove_group(name, group)


class _NotFound(Exception):
    pass


def _ts(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return float(value)


class S3Staging(Staging):
    def __init__(self, repo: S3Repository, backup_id: str) -> None:
        self.repo = repo
        self.id = ids.check_id(backup_id)  # the last guard: every key written is PREFIX/ID/FILE
        self.location = repo.location
        self._sinks: builtins.list[MultipartSink] = []
        self._stop = threading.Event()
        self._owner_key = repo.where.key(backup_id, OWNER_FILE)
        self._write_owner()
        self._heartbeat = threading.Thread(target=self._beat, name="s3-owner-heartbeat", daemon=True)
        self._heartbeat.start()

    def _write_owner(self) -> None:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "id": self.id,
                 "heartbeat": datetime.now(timezone.utc).isoformat()}
        self.repo.call("recording the writer", "put_object", Key=self._owner_key, Body=json.dumps(owner).encode())

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            with contextlib.suppress(RepoError):  # the next part upload will report a lasting problem
                self._write_owner()

    def open_sink(self, file: str, *, hash_stored: bool, size_hint: int | None) -> Sink:
        sink = MultipartSink(self.repo, self.repo.where.key(self.id, file), hash_stored, size_hint)
        self._sinks.append(sink)
        return sink

    def commit(self, manifest_for: Callable[[str], Manifest]) -> Manifest:
        manifest = manifest_for(self.id)
        body = manifest.to_json().encode()
        self.repo.call("writing the manifest", "put_object", Key=self.repo.where.key(self.id, MANIFEST_NAME),
                       Body=body, ContentType="application/json", ChecksumSHA256=_b64sha(body))
        self._stop.set()
        # The backup is complete and visible; a stray .owner next to a manifest is ignored.
        with contextlib.suppress(RepoError):
            self.repo.call("removing the writer's record", "delete_object", Key=self._owner_key)
        return manifest

    def abort(self) -> None:
        self._stop.set()
        for sink in self._sinks:
            sink.abort()
        try:
            group = self.repo._groups().get(self.id, _Group())
            self.repo._remove_group(self.id, group)
        except RepoError:
            pass  # the owner record stays: prune removes the rest once this process is gone


def _b64sha(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def part_size_for(number: int, size_hint: int | None) -> int:
    """The size of upload part ``number`` (1-based): at least 16 MiB, more for large expected sizes, and
    doubling every 1000 parts up to 512 MiB, so that 10 000 parts reach ~2.9 TiB whatever the hint said
    (memory stays a few parts: 64 MiB for anything under 15 GiB)."""
    base = MIN_PART
    if size_hint:
        wanted = -(-size_hint * 5 // 4 // (MAX_PARTS - 1000))  # 25% over the hint in 9000 parts
        base = max(base, -(-wanted // (1 << 20)) << 20)
    return max(base, min(base << ((number - 1) // PARTS_PER_STEP), MAX_PART))


class MultipartSink(Sink):
    """A part streamed to S3: one PUT if it is small, else a multipart upload with bounded memory."""

    def __init__(self, repo: S3Repository, key: str, hash_stored: bool, size_hint: int | None) -> None:
        self._repo = repo
        self._key = key
        self._hint = size_hint
        self._hash = hashlib.sha256() if hash_stored else None
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._done: builtins.list[dict[str, Any]] = []
        self._inflight: deque[Future[dict[str, Any]]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._number = 0
        self._limit = part_size_for(1, size_hint)
        self.size = 0
        self.server_checked = True  # every part's SHA-256 echoed back by the server
        self._closed = False

    def write(self, data: memoryview) -> None:
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)
        view = data
        while view:
            room = self._limit - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) >= self._limit:
                self._send_part()

    def _send_part(self) -> None:
        if self._upload_id is None:
            created = self._repo.call("starting a multipart upload", "create_multipart_upload", Key=self._key,
                                      ChecksumAlgorithm="SHA256")
            self._upload_id = str(created["UploadId"])
            self._pool = ThreadPoolExecutor(IN_FLIGHT, "s3-upload")
        while len(self._inflight) >= IN_FLIGHT:
            self._done.append(self._inflight.popleft().result())
        self._number += 1
        if self._number > MAX_PARTS:
            raise RepoError(f"{self._key} is larger than an S3 object can be made of ({MAX_PARTS} parts)")
        body, self._buffer = bytes(self._buffer), bytearray()
        assert self._pool is not None
        self._inflight.append(self._pool.submit(self._upload, self._number, body))
        self._limit = part_size_for(self._number + 1, self._hint)

    def _upload(self, number: int, body: bytes) -> dict[str, Any]:
        checksum = _b64sha(body)
        response = self._repo.call("uploading a part", "upload_part", Key=self._key, UploadId=self._upload_id,
                                   PartNumber=number, Body=body, ChecksumSHA256=checksum)
        self._check_echo(response, checksum, f"part {number} of {self._key}")
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _check_echo(self, response: Any, checksum: str, what: str) -> None:
        echoed = response.get("ChecksumSHA256")
        if echoed is None:
            self.server_checked = False
        elif echoed.split("-")[0] != checksum:
            raise RepoError(f"the S3 server stored {what} with SHA-256 {echoed}, not the {checksum} we sent",
                            hint="The upload was damaged on the way; run the command again.")

    def close(self) -> str | None:
        if self._closed:
            return self._hash.hexdigest() if self._hash is not None else None
        if self._upload_id is None:
            body = bytes(self._buffer)
            checksum = _b64sha(body)
            response = self._repo.call("uploading a part", "put_object", Key=self._key, Body=body,
                                       ChecksumSHA256=checksum)
            self._check_echo(response, checksum, self._key)
        else:
            if self._buffer or (not self._inflight and not self._done):
                self._send_part()
            while self._inflight:
                self._done.append(self._inflight.popleft().result())
            parts = sorted(self._done, key=lambda p: int(p["PartNumber"]))
            if not self.server_checked:
                parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
            self._repo.call("completing a multipart upload", "complete_multipart_upload", Key=self._key,
                            UploadId=self._upload_id, MultipartUpload={"Parts": parts})
            self._upload_id = None
            self._shutdown()
        self._buffer = bytearray()
        head = self._repo.call("checking an upload", "head_object", Key=self._key)
        if int(head["ContentLength"]) != self.size:
            raise RepoError(f"the S3 server holds {head['ContentLength']} bytes of {self._key}, not the "
                            f"{self.size} that were sent", hint="Run the command again.")
        self._closed = True
        return self._hash.hexdigest() if self._hash is not None else None

    def abort(self) -> None:
        self._buffer = bytearray()
        for future in self._inflight:
            future.cancel()
        self._shutdown()
        self._inflight.clear()
        if self._upload_id is not None:
            with contextlib.suppress(RepoError):  # prune finds it by its prefix
                self._repo.call("aborting an upload", "abort_multipart_upload", Key=self._key,
                                UploadId=self._upload_id)
            self._upload_id = None

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class S3Reader:
    """A stored object streamed with GET; a connection that breaks is resumed with a Range request."""

    RETRIES = 3

    def __init__(self, repo: S3Repository, key: str, size: int) -> None:
        self._repo = repo
        self._key = key
        self.size = size
        self._pos = 0
        self._body: Any = None

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self.size and self._body is None:
            return 0
        for attempt in range(self.RETRIES + 1):
            try:
                if self._body is None:
                    args: dict[str, Any] = {"Key": self._key}
                    if self._pos:
                        args["Range"] = f"bytes={self._pos}-"
                    self._body = self._repo.call("reading a part", "get_object", **args)["Body"]
                data = self._body.read(len(view))
                view[: len(data)] = data
                self._pos += len(data)
                if not data:
                    self.close()
                return len(data)
            except _NotFound:
                raise RepoError(f"{self._key} disappeared while it was read") from None
            except RepoError:
                raise
            except Exception as exc:  # a broken connection: resume where it stopped
                self._drop()
                if attempt == self.RETRIES:
                    raise translate(exc, self._repo.where, "reading a part", self._repo.settings.endpoint) from None
                time.sleep(0.5 * (attempt + 1))
        return 0

    def read(self, size: int = -1) -> bytes:
        buf = bytearray(1 << 20 if size < 0 else size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def _drop(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop()
