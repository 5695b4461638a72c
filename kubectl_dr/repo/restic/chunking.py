"""How file contents are split into data blobs: fixed 1 MiB pieces (a file of ≤ 1 MiB is one blob).

restic itself splits with Rabin content-defined chunking (512 KiB–8 MiB, ~1 MiB average), but nothing in
the format depends on where the boundaries fall: a blob is any piece of a file, named by the SHA-256 of
its bytes, and `restic check --read-data` / `restic restore` accept any split (the tests prove it).
We split at fixed offsets because content-defined chunking needs a rolling hash over every byte, and in
Python that is the whole cost of a backup. Measured on this project's 2-core test machine, same run:
a pure-Python gear hash (the cheapest rolling hash) 0.5 MB/s; SHA-256 + zstd of fixed 1 MiB pieces
49.5 MB/s. A CDC written as a compiled extension would be a new binary dependency for one feature.

What fixed pieces cost: an insertion or deletion in the middle of a file shifts every later boundary, so
that file's remaining pieces are stored again; a change in place (a database page, an appended log) keeps
every other piece. Unchanged files are never read at all (the parent snapshot's content is reused on
size/mtime/ctime/inode, restic's rule), so the split matters only for files that changed. Blobs we and
restic write of the same file dedup only where both splits agree (files ≤ 512 KiB, which restic stores
whole, and which are most files of most volumes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

CHUNK_SIZE = 1024 * 1024


def chunks(read: Callable[[int], bytes], size: int) -> Iterator[bytes]:
    """Exactly `size` bytes from `read`, in pieces of CHUNK_SIZE (the last shorter); short input is an error."""
    left = size
    while left > 0:
        want = min(CHUNK_SIZE, left)
        piece = read(want)
        while len(piece) < want:
            more = read(want - len(piece))
            if not more:
                raise EOFError(f"the content ended {left - len(piece)} bytes early")
            piece += more
        left -= want
        yield piece
