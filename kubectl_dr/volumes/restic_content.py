"""The regular files of a tar stream, as the reader checks it, into data blobs: each file's bytes as
tar extracts them (a GNU sparse member's holes as zeros), cut and stored while the stream arrives.

The tar reader validated a sparse member's map before announcing it (runs in order, inside the real
size, adding up to the stored data), so the runs are followed here without checking them again.
"""

from __future__ import annotations

from kubectl_dr.repo.restic.blob_stream import BlobStream
from kubectl_dr.repo.restic.chunking import CHUNK_SIZE
from kubectl_dr.volumes.tar_reader import FILE, Member

_ZEROS = memoryview(bytes(CHUNK_SIZE))


class ContentCutter:
    """`member` and `data` are the tar reader's `on_member` and `on_data`; `finish` after the archive ended."""

    def __init__(self, blobs: BlobStream[str]) -> None:
        self._blobs = blobs
        self._sparse: Member | None = None  # the sparse member being written
        self._runs: list[tuple[int, int]] = []  # its stored runs still to come, (offset, length)
        self._position = 0  # bytes of the sparse member's real content written so far

    def member(self, member: Member) -> None:
        self._end_sparse()
        if member.kind != FILE:
            return
        self._blobs.begin(member.path, member.size)  # a sparse member's real size: holes come as zeros
        if member.sparse:
            self._sparse, self._runs, self._position = member, list(member.segments), 0

    def data(self, view: memoryview) -> None:
        if self._sparse is None:
            self._blobs.write(view)
            return
        while view:
            while self._runs and self._runs[0][1] == 0:  # an empty run (GNU tar ends maps with one)
                self._runs.pop(0)
            offset, length = self._runs[0]
            self._zeros(offset - self._position)
            n = min(length, len(view))
            self._blobs.write(view[:n])
            self._position += n
            view = view[n:]
            self._runs[0] = (offset + n, length - n)
            if n == length:
                self._runs.pop(0)

    def finish(self) -> None:
        self._end_sparse()

    def _end_sparse(self) -> None:
        if self._sparse is not None:
            self._zeros(self._sparse.size - self._position)
            self._sparse = None

    def _zeros(self, count: int) -> None:
        self._position += count
        while count > 0:
            n = min(count, CHUNK_SIZE)
            self._blobs.write(_ZEROS[:n])
            count -= n
