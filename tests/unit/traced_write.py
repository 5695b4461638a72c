"""One backup written through a remote repository with Python's allocations traced: the memory tests of the
S3 and Azure repositories write the same stream and judge the peak against their own pool."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from typing import Any


def traced_backup(repo: Any, mib: int, tail: int = 4) -> tuple[Any, int, str]:
    """`mib` distinct 1 MiB chunks and a tail of `tail` bytes into one part, each handed over as a memoryview
    (as the exec layer hands frames over); returns (manifest, peak traced bytes, SHA-256 of what was written)."""
    assert repo.list() == []  # the client and its service model are made before memory is traced
    chunk = bytearray(os.urandom(1 << 20))
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        with repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "shop-db") as writer:
            with writer.open_part("data.tar") as part:
                for i in range(mib):
                    chunk[:8] = i.to_bytes(8, "little")
                    digest.update(chunk)
                    part.write(memoryview(chunk))
                last = bytes(range(256)) * (tail // 256) + b"t" * (tail % 256)
                part.write(memoryview(last))
                digest.update(last)
            manifest = writer.commit({"files": 1})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return manifest, peak, digest.hexdigest()
