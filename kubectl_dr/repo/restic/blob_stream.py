"""Files' contents stored as data blobs while their bytes arrive, in bounded memory.

A first backup used to spool the whole checked tar stream to a temporary file and then read it again to
cut blobs: every byte was written and read once more, and the blobs' CPU work (SHA-256, zstd, AES,
Poly1305, then each pack's SHA-256) started only after the last byte had crossed the API. Here the
receiving thread only cuts pieces (CHUNK_SIZE, as `chunking.chunks` does, so a file's blobs are the
same either way) and hands them on: the repository's two threads prepare them, one writer thread adds
them in order to packs and hands each full pack to the repository's storing thread, while the stream goes on.

Memory is bounded: at most IN_FLIGHT jobs are between the receiving thread and the writer, each one
1 MiB piece or a batch of small files' pieces of about that size; the receiving thread waits for the
writer when they are all taken.

Nothing here decides whether the content is good: the caller checks the stream (size and SHA-256 on
both sides, the archive against the listing) and writes the index and snapshot only then. Packs stored
before a failed check are referenced by nothing, which `restic check` accepts and `restic prune` removes.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Generic, TypeVar

from kubectl_dr.repo.restic.backend import ResticBackendError
from kubectl_dr.repo.restic.chunking import CHUNK_SIZE
from kubectl_dr.repo.restic.packs import DATA_BLOB
from kubectl_dr.repo.restic.repository import Prepared, Repository

K = TypeVar("K")
IN_FLIGHT = 6  # jobs handed on and not yet added: 2 preparing, the rest ready while a pack is stored
_BATCH_COUNT = 64  # small pieces per job at most
_POLL = 0.5  # seconds between looks at the writer's state while waiting for room


class BlobStream(Generic[K]):
    """`begin(key)`, `write(data)`… for one file's bytes in order, then the next file; `close()` returns
    every key's blob IDs (a key with no bytes has none). Use as a context manager: leaving the block
    without `close()` (an error in the caller) stops the writer and drops what it had not added."""

    def __init__(self, repo: Repository, blob_type: str = DATA_BLOB) -> None:
        self._repo, self._type = repo, blob_type
        self.contents: dict[K, list[str]] = {}
        self._ids: list[str] | None = None  # the current file's list of blob IDs (filled by the writer)
        self._piece = bytearray()  # the piece being cut: its first `_filled` bytes are the file's
        self._filled = 0
        self._left: int | None = None  # bytes the current file has still to come, when told
        self._batch: list[tuple[list[str], bytes | bytearray]] = []
        self._batch_bytes = 0
        self._room = threading.Semaphore(IN_FLIGHT)
        self._jobs: queue.SimpleQueue[tuple[list[list[str]], Future[list[Prepared]]] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="restic-pack-writer", daemon=True)
        self._writer.start()
        self._closed = False

    def __enter__(self) -> BlobStream[K]:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self._stop.set()
            self._finish_writer()

    # -- the receiving thread ----------------------------------------------------------------------

    def begin(self, key: K, size: int | None = None) -> None:
        """A new file starts; the previous one's last piece is cut. `size`, when known, lets each piece be
        allocated once at its final length (a piece grown 16 KiB at a time was copied again and again)."""
        self._end_file()
        self._ids = self.contents[key] = []
        self._left = size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if self._ids is None:
            raise ValueError("content written before any file began")
        while view:
            if self._filled == len(self._piece):
                # Room up to the piece's final length: the rest of the file, at most CHUNK_SIZE; CHUNK_SIZE when
                # the size is unknown or the file goes on past it.
                target = min(CHUNK_SIZE, self._filled + self._left) if self._left else CHUNK_SIZE
                if self._filled:
                    self._piece.extend(bytes(target - self._filled))
                else:
                    self._piece = bytearray(target)
            n = min(len(self._piece) - self._filled, len(view))
            self._piece[self._filled:self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
            if self._left is not None:
                self._left -= n
            if self._filled == CHUNK_SIZE:
                self._cut()

    def close(self) -> dict[K, list[str]]:
        """Waits until every blob is in a pack (the last pack stays open for the repository's `flush`)."""
        self._end_file()
        self._submit()
        self._finish_writer()
        # Only now: a Ctrl-C during the join above must still stop the writer in __exit__, or it would go on
        # storing packs after the restic lock is released.
        self._closed = True
        return self.contents

    def _end_file(self) -> None:
        if self._filled:
            self._cut()
        self._ids = None

    def _cut(self) -> None:
        assert self._ids is not None
        piece, self._piece = self._piece, bytearray()  # handed on as it is: no copy
        del piece[self._filled:]  # room allocated for more than came (a size that was wrong): given back
        self._filled = 0
        self._batch.append((self._ids, piece))
        self._batch_bytes += len(piece)
        if self._batch_bytes >= CHUNK_SIZE or len(self._batch) >= _BATCH_COUNT:
            self._submit()

    def _submit(self) -> None:
        if not self._batch:
            return
        while not self._room.acquire(timeout=_POLL):
            self._raise_if_failed()
        self._raise_if_failed()
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._jobs.put(([ids for ids, _ in batch], self._repo.prepare_blobs([piece for _, piece in batch])))

    def _raise_if_failed(self) -> None:
        if self._error is None:
            return
        if isinstance(self._error, OSError):
            # Raised here, inside the exec stream's reader, a bare OSError would pass for the connection's own
            # failure ("the connection broke"): a storage error says it is one, whichever backend let it out.
            raise ResticBackendError(f"cannot store the backup's data in {self._repo.backend.describe()}: "
                                     f"{self._error}") from self._error
        raise self._error  # a backend error, a wrong pack: the writer's own error, as it was raised

    def _finish_writer(self) -> None:
        self._jobs.put(None)
        self._writer.join()
        if not self._stop.is_set():
            self._raise_if_failed()

    # -- the writer thread -------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            targets, future = job
            try:
                if self._error is None and not self._stop.is_set():
                    for ids, prepared in zip(targets, future.result(), strict=True):
                        ids.append(self._repo.add_prepared(self._type, *prepared))
            except BaseException as exc:
                self._error = exc
            finally:
                self._room.release()
        # The last full pack may still be being stored: waited for here, so that `close` reports its failure as
        # the stream's own, and an abandoned stream stores nothing after the caller's lock is released.
        try:
            self._repo.wait_stored()
        except BaseException as exc:
            if self._error is None:
                self._error = exc
