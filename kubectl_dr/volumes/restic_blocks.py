"""Block-level backup of large changed files: a database with a few changed pages sends those pages' chunks.

A file of at least THRESHOLD bytes whose metadata no longer matches the parent snapshot (so restic's rule
would read it whole) is compared chunk by chunk instead: the pod computes the SHA-256 of each piece of
the file at the parent's chunk boundaries (the lengths come from the repository's index, no blob is
read), only those hashes cross the wire, and a piece whose hash equals the parent's blob ID *is* that
blob (a blob's ID is the SHA-256 of its plaintext), so the new node reuses it. The pieces that differ,
and whatever the file has beyond the parent's last whole piece, are read with `dd` byte ranges as one
stream, counted and hashed in the pod and here like every transfer, and stored as new blobs: a changed
piece as one blob of the same length (so the next backup finds the same boundaries again), a grown
tail cut as any new content is.

Why this is a valid restic file: a tree node's content is just the list of its blob IDs in order, and
`restic check --read-data` and `restic restore` need only that each blob exist and hash to its ID and
that the lengths add up to the file's size; nothing ties a file to the chunker's boundaries (see
chunking.py). What it costs: the file keeps the parent's boundaries, so an insertion in the middle
changes every later piece (as our fixed split would anyway), and blobs of a piece rewritten in place
dedup only against the same piece of the same file.

A file that shrinks or grows while it is read makes the range stream shorter or longer than planned:
that is an error (run the backup again), never a file put together from two sizes. Pieces are hashed and
then the differing ones read, so a file an app writes meanwhile is kept as a mix of moments, as tar's
single pass over a file being written is.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from kubectl_dr.console import Console
from kubectl_dr.errors import VerificationError
from kubectl_dr.kube.client import Kube
from kubectl_dr.repo.restic import chunking, nodes
from kubectl_dr.repo.restic.packs import DATA_BLOB
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.units import count, size
from kubectl_dr.volumes import incremental_restore, scripts, transfer
from kubectl_dr.volumes.listing import Found
from kubectl_dr.volumes.rescue_pod import RescuePod
from kubectl_dr.volumes.restic_source import blob_length

THRESHOLD = 64 << 20  # smaller files are read whole: a piece's hash costs two processes in the pod
RANGES = f"{scripts.SCRATCH}/ranges.sh"
_COUNT = re.compile(rb"^\s*(\d+)\s*$", re.MULTILINE)


@dataclass
class BlockFile:
    """A large changed file and the parent's pieces that lie wholly within its new size."""

    path: str
    size: int
    parent: list[tuple[str, int]]  # (blob ID, length), from offset 0 on

    @property
    def covered(self) -> int:
        return sum(n for _, n in self.parent)

    def pieces(self) -> list[tuple[int, int]]:
        out, offset = [], 0
        for _, n in self.parent:
            out.append((offset, n))
            offset += n
        return out


def candidate(repo: Repository, path: str, f: Found, prev: nodes.Node | None) -> BlockFile | None:
    """The file compared block by block, or None (read it whole): large, not hard-linked (a link group is
    read as one tar member), a regular file in the parent too whose every blob the index has."""
    if (prev is None or prev.type != nodes.FILE or f.size < THRESHOLD or f.links != 1 or not prev.content
            or f.kind != "file"):
        return None
    parent: list[tuple[str, int]] = []
    offset = 0
    for blob in prev.content:
        n = blob_length(repo, blob)
        if n <= 0 or not repo.has_blob(blob):
            return None
        if offset + n > f.size:
            break
        parent.append((blob, n))
        offset += n
    return BlockFile(path, f.size, parent) if parent else None


@dataclass
class Result:
    contents: dict[str, list[str]] = field(default_factory=dict)  # path → the new node's blobs
    files: int = 0
    hashed_bytes: int = 0  # compared in the pod
    sent_bytes: int = 0  # file bytes that crossed (the changed pieces and grown tails)
    reused_bytes: int = 0  # pieces equal to the parent's blobs, not sent
    received_bytes: int = 0  # everything that crossed the API: hashes and ranges

    def to_dict(self) -> dict[str, int]:
        return {"files": self.files, "hashedBytes": self.hashed_bytes, "sentBytes": self.sent_bytes,
                "reusedBytes": self.reused_bytes, "receivedBytes": self.received_bytes}


@dataclass
class _Plan:
    file: BlockFile
    same: list[bool]  # per parent piece: its hash in the pod equals the parent's blob ID
    ranges: list[tuple[int, int]]  # (offset, length) to read: differing pieces (merged) and the tail


def _ranges(file: BlockFile, same: list[bool]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for (offset, n), equal in zip(file.pieces(), same, strict=True):
        if equal:
            continue
        if out and out[-1][0] + out[-1][1] == offset:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((offset, n))
    if file.size > file.covered:
        tail = (file.covered, file.size - file.covered)
        if out and out[-1][0] + out[-1][1] == tail[0]:
            out[-1] = (out[-1][0], out[-1][1] + tail[1])
        else:
            out.append(tail)
    return out


def ranges_script(plans: list[_Plan]) -> bytes:
    """Every planned range, in order, to stdout, each also counted by a `wc -c` through a fifo, then those
    counts: the stream leaves the pod padded to whole blocks (and busybox dd reports no byte count), so
    only they tell a range cut short by a file that shrank from one read in full."""
    lines = ["set -e", f"cd {scripts.SCRATCH}", "rm -f range.fifo range.counts", "mkfifo range.fifo"]
    for p in plans:
        for offset, length in p.ranges:
            lines += ["wc -c < range.fifo >> range.counts &",
                      f"dd if={scripts.quote_path(p.file.path)} bs={scripts.BIG} iflag=skip_bytes,count_bytes "
                      f"skip={int(offset)} count={int(length)} 2>/dev/null | tee range.fifo",
                      "wait"]
    lines.append("cat range.counts")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def check_counts(trailer: bytes, ranges: list[int], what: str) -> None:
    """The counts after the ranges' bytes (then the stream's zero padding) are exactly these lengths."""
    copied = [int(n) for n in _COUNT.findall(trailer.rstrip(b"\0"))]
    if copied != ranges:
        raise VerificationError(f"{what}: the pod read {len(copied)} ranges ({sum(copied)} bytes) where "
                                f"{len(ranges)} ({sum(ranges)} bytes) were planned: a large file changed size "
                                "while it was read",
                                hint="Nothing was kept. Run the backup again (or stop the app with --quiesce).")


def back_up(kube: Kube, repo: Repository, pod: RescuePod, files: list[BlockFile], console: Console,
            what: str) -> Result:
    """Compares the files with their parent pieces in the pod, reads only the differing ranges, stores them."""
    result = Result()
    if not files:
        return result
    result.files = len(files)
    result.hashed_bytes = sum(f.covered for f in files)
    console.say(f"comparing {count(len(files), 'large changed file')} ({size(result.hashed_bytes)}) with the "
                "parent snapshot block by block: SHA-256 of each chunk computed in the pod, only the hashes cross")
    _, hashes, crossed = incremental_restore.hash_in_pod(kube, pod, [], [(f.path, f.pieces()) for f in files], {})
    result.received_bytes += crossed
    plans, at = [], 0
    for f in files:
        mine = hashes[at:at + len(f.parent)]
        at += len(f.parent)
        same = [h == blob for h, (blob, _) in zip(mine, f.parent, strict=True)]
        plans.append(_Plan(f, same, _ranges(f, same)))
    expected = sum(n for p in plans for _, n in p.ranges)
    result.reused_bytes = sum(n for p in plans for (_, n), eq in zip(p.file.parent, p.same, strict=True) if eq)
    console.say(f"{size(result.reused_bytes)} of them equal the parent's chunks; reading {size(expected)} of "
                "changed chunks")
    with tempfile.TemporaryFile(prefix="kubectl-dr-blocks-") as spool:
        if expected:
            transfer.upload(kube, pod, RANGES, ranges_script(plans), "uploading the list of byte ranges to read")
            digest = hashlib.sha256()
            got = [0]

            def sink(data: bytes) -> None:
                spool.write(data)
                digest.update(data)
                got[0] += len(data)

            checked = transfer.receive(kube, pod, scripts.uploaded_out(RANGES), sink,
                                       lambda: (got[0], digest.hexdigest()), f"{what} (changed chunks)")
            if checked.tar_exit != 0:
                raise VerificationError(f"{what}: reading the changed chunks failed (exit {checked.tar_exit}):\n"
                                        f"{checked.warnings}", hint="Nothing was kept. Run the backup again.")
            if got[0] < expected:
                raise VerificationError(f"{what}: the changed chunks came to {got[0]} bytes, {expected} were "
                                        "planned: a large file changed size while it was read",
                                        hint="Nothing was kept. Run the backup again (or stop the app first "
                                             "with --quiesce).")
            spool.seek(expected)
            check_counts(spool.read(), [n for p in plans for _, n in p.ranges], what)
            result.sent_bytes = expected
            result.received_bytes += got[0]
            spool.seek(0)
        for p in plans:
            result.contents[p.file.path] = _store(repo, p, spool)
    return result


def _store(repo: Repository, p: _Plan, spool: BinaryIO) -> list[str]:
    """The new node's content: the parent's blob where the piece is equal, new blobs where it is not."""
    new: dict[int, str] = {}

    def pieces() -> Iterator[tuple[int, bytes]]:
        for index, ((_, n), equal) in enumerate(zip(p.file.pieces(), p.same, strict=True)):
            if not equal:
                yield index, _read(spool, n)  # one blob, the parent's boundaries kept
        if p.file.size > p.file.covered:
            for k, piece in enumerate(chunking.chunks(lambda want: _read(spool, want),
                                                      p.file.size - p.file.covered)):
                yield len(p.file.parent) + k, piece

    for index, blob in repo.save_keyed_blobs(DATA_BLOB, pieces()):
        new[index] = blob
    content = [new.get(i, blob) for i, (blob, _) in enumerate(p.file.parent)]
    return content + [new[i] for i in sorted(new) if i >= len(p.file.parent)]


def _read(spool: BinaryIO, n: int) -> bytes:
    data = spool.read(n)
    if len(data) != n:
        raise VerificationError(f"the spooled chunks ended {n - len(data)} bytes early")
    return data
