"""An incremental restore's large files that differ in part: only their differing chunks are written, in place.

The backup's counterpart (`restic_blocks`) in the other direction. `incremental_restore.decide` has hashed
the volume copy at the snapshot's chunk boundaries in the pod (only hashes crossed); a chunk whose hash is
its blob's ID *is* that blob, so it stays. Here the other chunks (those that differ, and those beyond the
volume copy's end) are read from the repository (each checked: MAC, then SHA-256 against its ID), sent as
one stream counted and hashed on both sides like every transfer, and written at their offsets by `dd
conv=notrunc oflag=seek_bytes` in the pod, each dd's own count of whole blocks required, the file first
cut or extended to the snapshot's size. Then the whole file is hashed in the pod again at every chunk
boundary: each chunk must hash to its blob ID. That proves the file equal to the snapshot's as exactly
as one SHA-256 of the whole file would (the lengths add up to its size, which the check after the restore
compares), without reading the chunks that were not sent from the repository to compute that hash here.

If that check fails the restore fails loudly, and the files are removed first, so that a rerun finds them
missing and sends them whole through the tar path: a file written in place is never left looking like a
finished restore. Owners, modes and times are set after, by the check every restore ends with.

Torn volumes: this runs after `Exposure.mark_torn`, like the tar stream before it; the consumers stay
stopped and the rerun command is recorded until the volume has been checked entry by entry. A pod killed
mid-write leaves a file that a rerun hashes again and finishes. Only a file of one link is written in
place (`incremental_restore._in_place`): writing into a hard-linked inode would change its other names. The
writer checks that again in the pod right before writing (a regular file, not a symlink, one link): dd
would follow a symlink, write through a second name or create a missing file.

Sparse files: a snapshot's file restored whole is written out in full (a restic snapshot records no holes
we restore); here every chunk written is written in full too, and a file extended is extended by the
chunks written over it. Holes the volume copy already had inside chunks equal to the snapshot's stay, as
they do in every file an incremental restore leaves alone.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from kubectl_dr.console import Console
from kubectl_dr.errors import VerificationError
from kubectl_dr.kube.client import Kube
from kubectl_dr.units import count, size
from kubectl_dr.volumes import incremental_restore, restic_blocks, scripts, transfer
from kubectl_dr.volumes.incremental_restore import InPlace
from kubectl_dr.volumes.rescue_pod import RescuePod

THRESHOLD = restic_blocks.THRESHOLD  # the backup's: the same files are compared block by block both ways
WRITER = f"{scripts.SCRATCH}/in-place.sh"
_PAD = scripts.SMALL  # the stream is counted in whole 512-byte blocks: padded, the writer drains the rest

# One range of stdin into a file at a byte offset: $1 block size, $2 blocks, $3 offset, $4 file. fullblock
# makes each dd take exactly its share of the pipe; its own count of whole records out must be $2, else
# the stream ended early (or dd could not write) and the script stops. LC_ALL=C: that count's words are
# the C locale's (a translated dd would never match).
_WRITE = ('w() { LC_ALL=C dd bs="$1" iflag=fullblock count="$2" oflag=seek_bytes seek="$3" conv=notrunc of="$4" '
          '2> w.err && grep -qx "$2+0 records out" w.err '
          '|| { echo "writing $4 at byte $3:"; cat w.err; exit 1; } >&2; }')


def _merged(writes: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for offset, n, _ in writes:
        if out and out[-1][0] + out[-1][1] == offset:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((offset, n))
    return out


def writer_script(files: list[InPlace]) -> bytes:
    """Each file cut or extended to the snapshot's size, then its chunks to write, in order, from stdin."""
    lines = ["set -e", f"cd {scripts.SCRATCH}", _WRITE]
    for f in files:
        path = scripts.quote_path(f.path)
        # Rechecked right before the first write: the listing that chose this file is minutes old, and dd
        # follows a symlink and creates a missing file. Anything but a regular file of one link now (an
        # app not stopped, a volume shared) stops the writer: nothing written, the restore fails loudly.
        lines.append(f'[ -f {path} ] && [ ! -h {path} ] && [ "$(stat -c %h {path})" = 1 ] '
                     f"|| {{ echo {path} is no longer a regular file of one link: not written in place; exit 1; }} >&2")
        # Without conv=notrunc, dd sets the file's size to seek × bs and writes nothing (count=0).
        lines.append(f"dd if=/dev/null of={path} bs=1 seek={int(f.size)} count=0 2> w.err "
                     f"|| {{ echo setting the size of {path}:; cat w.err; exit 1; }} >&2")
        for offset, length in _merged(f.writes()):
            blocks, rest = divmod(length, scripts.BIG)
            if blocks:
                lines.append(f"w {scripts.BIG} {blocks} {int(offset)} {path}")
            if rest:
                lines.append(f"w {rest} 1 {int(offset) + blocks * scripts.BIG} {path}")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def spool(files: list[InPlace], load_blob: Callable[[str], bytes], out: Path) -> tuple[int, str]:
    """The chunks to write, in the writer's order, into `out` (padded to whole 512-byte blocks); each blob
    read is checked by `load_blob` and must be the length the index said. A blob written again (a run of
    zeros, a page repeated) is read back from `out` rather than from the repository once per occurrence.
    Returns (size, SHA-256)."""
    digest = hashlib.sha256()
    total = 0
    at: dict[str, tuple[int, int]] = {}  # blob ID → where in `out` it was first written, and its length
    with open(out, "w+b") as f:
        for file in files:
            for _, n, blob in file.writes():
                if blob in at:
                    f.flush()
                    start, length = at[blob]
                    data = os.pread(f.fileno(), length, start)
                else:
                    data = load_blob(blob)
                    at[blob] = (total, len(data))
                if len(data) != n:
                    raise VerificationError(f"{file.path!r}: chunk {blob[:8]}… is {len(data)} bytes, the index "
                                            f"says {n}", hint="Check the repository: restic check --read-data.")
                f.write(data)
                digest.update(data)
                total += n
        pad = -total % _PAD
        f.write(bytes(pad))
        digest.update(bytes(pad))
    return total + pad, digest.hexdigest()


def write(kube: Kube, pod: RescuePod, files: list[InPlace], load_blob: Callable[[str], bytes], console: Console,
          label: str) -> int:
    """Writes the differing chunks of `files` in place and proves each file equal to the snapshot's.
    Returns the bytes of the stream that crossed."""
    if not files:
        return 0
    written = sum(f.written for f in files)
    console.say(f"writing {size(written)} of differing chunks into {count(len(files), 'large file')} in place; "
                f"{size(sum(f.size for f in files) - written)} already there")
    if not written:  # only cut to the snapshot's size (the volume copy had more after it): no stream to send
        transfer.upload(kube, pod, WRITER, writer_script(files), "cutting large files to the snapshot's size",
                        then=f"sh {WRITER} < /dev/null")
        check(kube, pod, files, console)
        return 0
    transfer.upload(kube, pod, WRITER, writer_script(files), "uploading the list of chunks to write in place")
    with tempfile.TemporaryDirectory(prefix="kubectl-dr-in-place-") as work:
        path = Path(work) / "chunks"
        stream, digest = spool(files, load_blob, path)
        with console.progress(f"restore {label} (chunks in place)", stream) as bar:
            transfer.send(kube, pod, path, stream, keep_owners=False, progress=bar, verified_sha256=digest,
                          command=f"sh {WRITER}")
    check(kube, pod, files, console)
    return stream


def check(kube: Kube, pod: RescuePod, files: list[InPlace], console: Console) -> None:
    """Every chunk of every file hashed in the pod must be its blob; else the files are removed (a rerun
    sends them whole) and the restore fails."""
    console.say(f"checking {count(len(files), 'file')} written in place: SHA-256 of every chunk in the pod")
    _, hashes, _ = incremental_restore.hash_in_pod(
        kube, pod, [], [(f.path, incremental_restore.chunk_offsets(f.chunks)) for f in files], {})
    wrong, at = [], 0
    for f in files:
        if hashes[at:at + len(f.chunks)] != [blob for blob, _ in f.chunks]:
            wrong.append(f.path)
        at += len(f.chunks)
    if wrong:
        transfer.run_script(kube, pod, scripts.remove_script(wrong), "removing the files written in place")
        shown = ", ".join(repr(p) for p in wrong)
        raise VerificationError(f"{count(len(wrong), 'file')} written in place do not hash to the snapshot's "
                                f"chunks afterwards: {shown}. They were removed from the volume.",
                                hint="Run the restore again: it sends these files whole.")
