"""An incremental restore: only the entries the volume does not already hold cross the wire.

The volume has been listed (the plan's listing) and what --clean removes is known. Then, before the
first write:

- A regular file of the backup whose path holds a regular file of the same size in the volume is a
  candidate. Size and mtime cannot prove its content (an app writes the same size within the same
  second and may set the mtime back; a restore of another claim's backup), so a candidate is hashed in
  the pod and only the hashes cross (about 80 bytes a file, the stream counted and hashed both sides
  like every transfer) — unless it is the very file the snapshot's own backup read, untouched since:
  same inode, size, mtime and change time as the snapshot's node, whose change time is at least a whole
  second before the snapshot began (`Source.unchanged_since`). The change time cannot be set from user
  space; any write, truncate, chmod or rename moves it to the current second, which after the backup's
  listing is that second or later, so an equal one means no change since (restic's own rule for reusing a
  file unread, which our backups rely on already). Another claim's volume has other inodes and change
  times; a file restic itself backed up has nanosecond change times our listing cannot equal (hashed).
  What remains is a system clock set back between the backup and the restore (`--full` sends all).
  What the hashes are compared with costs no read of the repository: a snapshot's file is a list of blobs
  whose IDs are the SHA-256 of its chunks, and the index says each chunk's length. A file of one chunk (all
  files up to 1 MiB, as we write them) is one `sha256sum` in a batch of 200, to equal its blob's ID; a
  larger file is hashed chunk by chunk at the index's offsets (`dd skip_bytes,count_bytes | sha256sum`, a
  process pair per chunk, ~1 MiB). Per-chunk is cheaper here than whole-file hashes, which would need every
  blob of the snapshot read, decrypted and hashed on this side first (at 1 GiB that was 50 of the restore's
  75 s); and a match is exact whatever the index claims, since every chunk must hash to its own ID and the
  lengths must add up to the file's size. Only the blobs of the files sent are read.
- A file whose hash differs, or that is missing, of another size or kind, or whose hard links are not
  the backup's (another inode count, a link to another path) is sent, with every path of its hard-link
  group. Directories, fifos and devices are sent only when missing; symlinks always (the listing has no
  link targets, and a symlink costs one header).
- Everything else is left as it is: the check after the transfer compares every entry with the backup
  and sets owners, modes and times that differ, as after any restore, then demands a full match.

- A large file (at least the backup's block threshold, `threshold`) whose volume copy is a regular file
  of one link, and of one link in the snapshot too, that differs (in its chunk hashes or its size) is not
  sent whole: it is written in place, only its differing chunks (`restic_in_place`). Its chunks
  lying wholly within the volume copy's size are hashed in the pod like any candidate's; those equal to
  the snapshot's blob ID are kept. A file with other links is sent whole (writing in place would change
  the other names too).

What is sent is the snapshot's archive of exactly those entries, in its order, read back as the pod's
tar reads it and held against the entry record; its size and SHA-256 are checked in the pod as always.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.console import Console
from kubectl_dr.errors import VerificationError
from kubectl_dr.kube.client import Kube
from kubectl_dr.units import count, size
from kubectl_dr.volumes import scripts, transfer
from kubectl_dr.volumes.entries import FILE, HARDLINK, SYMLINK, Entries, Entry
from kubectl_dr.volumes.listing import Found
from kubectl_dr.volumes.rescue_pod import RescuePod
from kubectl_dr.volumes.source import Source
from kubectl_dr.volumes.tar_reader import ENCODING, ERRORS

_HEX = re.compile(rb"[0-9a-f]{64}")


@dataclass
class InPlace:
    """A large file written in place: its snapshot chunks, and which of those the volume already holds."""

    path: str
    size: int  # the snapshot's
    have: int  # the volume copy's, before
    chunks: list[tuple[str, int]]  # (blob ID, length) of the snapshot's file, from offset 0 on
    same: list[bool] = field(default_factory=list)  # per chunk: the volume holds it at its offset

    def within(self) -> list[tuple[int, int]]:
        """The (offset, length) of the chunks lying wholly within the volume copy: those hashed in the pod."""
        return [(o, n) for o, n in chunk_offsets(self.chunks) if o + n <= self.have]

    def writes(self) -> list[tuple[int, int, str]]:
        """(offset, length, blob ID) of every chunk to write: those that differ, and all beyond `have`."""
        same = self.same + [False] * (len(self.chunks) - len(self.same))
        return [(o, n, blob) for (o, n), (blob, _), equal in zip(chunk_offsets(self.chunks), self.chunks, same,
                                                                  strict=True) if not equal]

    @property
    def written(self) -> int:
        return sum(n for _, n, _ in self.writes())

    def compare(self, hashes: list[str]) -> bool:
        """Records which chunks the volume holds from the pod's `hashes` of the chunks `within` the volume
        copy; True if the file is to be written in place (a chunk differs, or the sizes do)."""
        if len(hashes) != len(self.within()):
            raise VerificationError(f"{self.path!r}: the pod hashed {len(hashes)} chunks, {len(self.within())} "
                                    "were asked for")
        self.same = [h == blob for h, (blob, _) in zip(hashes, self.chunks, strict=False)]  # chunks: the longer
        return self.have != self.size or not all(self.same)


@dataclass
class Delta:
    """What an incremental restore sends and what it leaves, counted for the result."""

    send: set[str] = field(default_factory=set)  # entry paths whose archive members are sent
    hashed_files: int = 0
    hashed_bytes: int = 0
    trusted_files: int = 0  # untouched since the snapshot's own backup listed them: not hashed
    trusted_bytes: int = 0
    sent_files: int = 0
    sent_bytes: int = 0
    skipped_files: int = 0
    skipped_bytes: int = 0
    kept_extras: list[str] = field(default_factory=list)  # not in the backup, kept (no --clean)
    in_place: list[InPlace] = field(default_factory=list)  # large files whose differing chunks are written
    in_place_stream: int = 0  # bytes of the stream of those chunks (padded to tar blocks)

    @property
    def reused_in_place(self) -> int:
        return sum(f.size - f.written for f in self.in_place)

    def to_dict(self, stream: int) -> dict[str, Any]:
        return {"filesInPlace": len(self.in_place), "bytesWrittenInPlace": sum(f.written for f in self.in_place),
                "bytesReusedInPlace": self.reused_in_place, "inPlaceStreamBytes": self.in_place_stream,
                "filesSent": self.sent_files, "bytesSent": self.sent_bytes, "filesSkipped": self.skipped_files,
                "bytesSkipped": self.skipped_bytes, "filesHashedInPod": self.hashed_files,
                "bytesHashedInPod": self.hashed_bytes, "filesTrusted": self.trusted_files,
                "bytesTrusted": self.trusted_bytes, "streamBytes": stream, "keptExtras": len(self.kept_extras)}


def under(path: str, roots: set[str]) -> bool:
    """The path is one of `roots` or below one."""
    while path:
        if path in roots:
            return True
        path = path.rpartition("/")[0]
    return False


def _groups(entries: Entries) -> dict[str, list[str]]:
    """Each regular file → its paths: itself, then the hard links the backup records to it."""
    groups: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        if entry.kind == FILE:
            groups[entry.path].insert(0, entry.path)
        elif entry.kind == HARDLINK:
            groups[entry.target].append(entry.path)
    return groups


def _links_match(paths: list[str], have: dict[str, Found]) -> bool:
    """The volume's files at these paths are one inode with exactly this many links."""
    first = have.get(paths[0])
    if first is None or first.kind != FILE or first.links != len(paths):
        return False
    return all(p in have and have[p].kind == FILE and have[p].inode == first.inode for p in paths[1:])


def _other_needs(entry: Entry, f: Found | None) -> bool:
    """A directory, symlink, fifo or device must be sent."""
    if entry.kind == SYMLINK:
        return True
    if f is None or f.kind != entry.kind:
        return True
    return entry.kind in ("char", "block") and f.rdev != entry.rdev


def plan(entries: Entries, found: dict[str, Found], removed: set[str]) -> tuple[Delta, list[str]]:
    """The sends metadata alone decides, and the files to hash in the pod (same path, kind and size)."""
    have = {p: f for p, f in found.items() if not under(p, removed)}
    delta = Delta()
    candidates: list[str] = []
    groups = _groups(entries)
    for entry in entries:
        if not entry.path or entry.kind == HARDLINK:
            continue  # the root is never in the archive; a link goes with its file
        f = have.get(entry.path)
        if entry.kind != FILE:
            if _other_needs(entry, f):
                delta.send.add(entry.path)
            continue
        if f is not None and f.kind == FILE and f.size == entry.size and _links_match(groups[entry.path], have):
            candidates.append(entry.path)
        else:
            delta.send.update(groups[entry.path])
    return delta, candidates


def _escaped(name: bytes, carriage: bool) -> bytes:
    out = name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")
    return out.replace(b"\r", b"\\r") if carriage else out


def parse_hashes(out: bytes, paths: list[str]) -> tuple[dict[str, str], int]:
    """`sha256sum` lines for `paths` in order → path → hash. busybox prints names as they are; GNU escapes
    a name holding a backslash or newline (and, since coreutils 9.2, a carriage return) and marks the line
    with a leading backslash. We know each name, so each line must be one of those forms exactly; a file
    sha256sum could not read has no line, and is missing from the result (it is sent). Returns the hashes
    and where their lines end."""
    result: dict[str, str] = {}
    cursor = 0
    for p in paths:
        name = f"{scripts.DATA}/{p}".encode(ENCODING, ERRORS)
        forms = {(b"", name), (b"\\", _escaped(name, False)), (b"\\", _escaped(name, True))}
        for mark, shown in forms:
            if mark and shown == name:
                continue
            start = cursor + len(mark)
            tail = b"  " + shown + b"\n"
            if (out.startswith(mark, cursor) and _HEX.fullmatch(out, start, start + 64)
                    and out.startswith(tail, start + 64)):
                result[p] = out[start:start + 64].decode()
                cursor = start + 64 + len(tail)
                break
    return result, cursor


def parse_pieces(out: bytes, cursor: int, total: int) -> list[str]:
    """`total` lines `HASH  -` (sha256sum of stdin) from `cursor`, then nothing but the stream's padding."""
    hashes = []
    for _ in range(total):
        line = out[cursor:cursor + 68]
        if len(line) != 68 or not _HEX.fullmatch(line, 0, 64) or line[64:] != b"  -\n":
            raise VerificationError(f"the pod's hashes of the volume's file chunks are cut short or garbled at "
                                    f"byte {cursor}: {out[cursor:cursor + 100]!r}")
        hashes.append(line[:64].decode())
        cursor += 68
    if out[cursor:].strip(b"\0"):
        raise VerificationError(f"the pod's hashes of the volume's files end with lines that name no file asked "
                                f"for: {out[cursor:cursor + 200]!r}")
    return hashes


def hash_in_pod(kube: Kube, pod: RescuePod, whole: list[str], chunked: list[tuple[str, list[tuple[int, int]]]],
                sizes: dict[str, int]) -> tuple[dict[str, str], list[str], int]:
    """SHA-256 of the `whole` files, and of each (offset, length) piece of the `chunked` ones, computed in
    the pod; only the hashes cross, checked as a stream. Returns (path → hash, the pieces' hashes in order,
    the bytes that crossed). `sizes` of the `whole` files share the work out among the pod's hashing
    processes."""
    if not whole and not chunked:
        return {}, [], 0
    buffer = bytearray()
    digest = hashlib.sha256()

    def sink(data: bytes) -> None:
        buffer.extend(data)
        digest.update(data)

    # The list goes up in the exec that runs it: one round trip.
    transfer.receive(kube, pod, scripts.hashes_script(), sink, lambda: (len(buffer), digest.hexdigest()),
                     f"hashing the volume's files in pod {pod.namespace}/{pod.name}",
                     upload=(scripts.HASHES, scripts.hash_list_script(whole, chunked, sizes=sizes)))
    out = bytes(buffer)
    hashes, cursor = parse_hashes(out, whole)
    return hashes, parse_pieces(out, cursor, sum(len(pieces) for _, pieces in chunked)), len(out)


def chunk_offsets(chunks: list[tuple[str, int]]) -> list[tuple[int, int]]:
    out, offset = [], 0
    for _, length in chunks:
        out.append((offset, length))
        offset += length
    return out


def accounted(chunks: list[tuple[str, int]], size: int) -> bool:
    """The index accounts for a file of `size`: chunks of positive lengths that add up to it (an empty file
    has none). Else it is sent whole, from the snapshot's own archive."""
    return all(n > 0 for _, n in chunks) and sum(n for _, n in chunks) == size


def writable(f: Found, uid: int, gids: tuple[int, ...]) -> bool:
    """The pod (running as `uid` with `gids`) can open the volume's file for writing. tar replaces a file by
    unlinking it (the directory's permission), a write in place needs the file's own: a read-only file of
    the app's, restored by a pod that is not root, is sent whole instead."""
    if uid == 0:
        return True
    if f.uid == uid:
        return bool(f.mode & 0o200)
    return bool(f.mode & 0o020) if f.gid in gids else bool(f.mode & 0o002)


def _in_place(entry: Entry, f: Found | None, group: list[str], mine: list[tuple[str, int]],
              threshold: int | None, can_write: Callable[[Found], bool]) -> InPlace | None:
    """The file written in place if it differs, or None: large, one link on both sides, a regular file in
    the volume that the pod can write, chunks the index accounts for (their lengths add up to the size)."""
    if (threshold is None or entry.size < threshold or f is None or f.kind != FILE or f.links != 1
            or group != [entry.path] or entry.sparse or not mine or not accounted(mine, entry.size)
            or not can_write(f)):
        return None
    return InPlace(entry.path, entry.size, f.size, mine)


def decide(kube: Kube, pod: RescuePod, src: Source, found: dict[str, Found], removed: set[str],
           console: Console, *, threshold: int | None = None) -> Delta:
    """The plan, the candidates hashed in the pod and compared with the snapshot's blob IDs. With
    `threshold`, a differing file of at least that size that can be is written in place (`InPlace`)."""
    tools = pod.tools if threshold is not None else None  # who the pod runs as: only asked for in-place writes

    def can_write(f: Found) -> bool:
        return tools is not None and writable(f, tools.uid, tools.gids)

    chunks = src.chunks
    assert chunks is not None
    delta, candidates = plan(src.entries, found, removed)
    groups = _groups(src.entries)
    have = {p: f for p, f in found.items() if not under(p, removed)}
    whole: list[str] = []
    chunked: list[tuple[str, list[tuple[int, int]]]] = []
    large: dict[str, InPlace] = {}
    unchanged = src.unchanged_since or {}
    for p in sorted(delta.send):  # sent for their size: a large one is compared chunk by chunk instead
        entry = src.entries.items.get(p)
        if entry is not None and entry.kind == FILE:
            block = _in_place(entry, have.get(p), groups[p], chunks.get(p, []), threshold, can_write)
            if block is not None:
                delta.send.discard(p)
                large[p] = block
    for p in candidates:
        f = found[p]
        if unchanged.get(p) == (f.inode, f.size, f.mtime, f.ctime) and f.ctime:
            delta.trusted_files += 1
            delta.trusted_bytes += f.size
            continue
        mine = chunks.get(p, [])
        block = _in_place(src.entries.items[p], f, groups[p], mine, threshold, can_write)
        if block is not None:
            large[p] = block
        elif not accounted(mine, src.entries.items[p].size):
            delta.send.update(groups[p])  # the index does not account for the file: send it
        elif len(mine) == 1:
            whole.append(p)
        elif len(mine) > 1:
            chunked.append((p, chunk_offsets(mine)))
        # no chunk: an empty file, equal by its size
    chunked += [(p, block.within()) for p, block in large.items()]
    delta.hashed_files = len(whole) + len(chunked)
    delta.hashed_bytes = sum(found[p].size for p in whole) + sum(n for _, pieces in chunked for _, n in pieces)
    if delta.trusted_files:
        console.say(f"{count(delta.trusted_files, 'file')} ({size(delta.trusted_bytes)}) of the volume are the very "
                    "files the snapshot's backup read (same inode, size, mtime and change time): not hashed")
    if delta.hashed_files:
        console.say(f"comparing {count(delta.hashed_files, 'file')} ({size(delta.hashed_bytes)}) of the volume "
                    "with the snapshot: SHA-256 of each chunk computed in the pod, only the hashes cross")
    got, pieces, _ = hash_in_pod(kube, pod, whole, chunked, {p: found[p].size for p in whole})
    for p in whole:
        if got.get(p) != chunks[p][0][0]:
            delta.send.update(groups[p])
    at = 0
    for p, offsets in chunked:
        hashes = pieces[at:at + len(offsets)]
        at += len(offsets)
        if p in large:
            if large[p].compare(hashes):
                delta.in_place.append(large[p])
        elif hashes != [blob for blob, _ in chunks[p]]:
            delta.send.update(groups[p])
    written = {b.path: b.written for b in delta.in_place}
    for entry in src.entries:
        if entry.kind == FILE:
            if entry.path in written:  # sent, but only the chunks that differ: the rest counts as skipped
                delta.sent_files += 1
                delta.sent_bytes += written[entry.path]
                delta.skipped_bytes += entry.size - written[entry.path]
            elif entry.path in delta.send:
                delta.sent_files += 1
                delta.sent_bytes += entry.size
            else:
                delta.skipped_files += 1
                delta.skipped_bytes += entry.size
    console.say(f"sending {count(delta.sent_files, 'file')} ({size(delta.sent_bytes)}) and "
                f"{count(len(delta.send) + len(delta.in_place) - delta.sent_files, 'other entry', 'other entries')}; "
                f"{count(delta.skipped_files, 'file')} ({size(delta.skipped_bytes)}) already match")
    if delta.in_place:
        console.say(f"{count(len(delta.in_place), 'large file')} differ in part: written in place, only the chunks "
                    f"that differ ({size(sum(b.written for b in delta.in_place))}); "
                    f"{size(delta.reused_in_place)} of them already match")
    return delta
