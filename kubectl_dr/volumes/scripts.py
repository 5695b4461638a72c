"""The shell the rescue pod runs: tar with the exact byte stream counted and hashed inside the pod.

Only busybox applets (sh, tar, tee, mkfifo, sha256sum, dd, sed, cut, cat, find, stat, touch, rm) and
only tar and dd flags that busybox and GNU both understand (`tar -c -x -f - -C --numeric-owner -o`,
`dd bs= count= iflag=fullblock,count_bytes conv=sync`), so any image with either works.

The stream passes through `tee`, which copies it into a fifo read by `sha256sum`, and through a `dd`
that counts it in blocks (its "N+M records" lines: N full blocks, M partial ones). What they report is
exactly what crossed the pipe, not what tar thinks it wrote. The result line goes to stderr with a
marker (stdout carries the data of a backup).

- Backup: `tar -c | dd bs=64K iflag=fullblock conv=sync | tee hash.fifo`. The dd pads the last block,
  so the size is exactly "records out" × 64 KiB.
- Restore: `dd bs=64K count=N; dd bs=512 count_bytes count=R` in turn, then `tee hash.fifo | tar -x`:
  exactly `size` = N × 64 KiB + R bytes are read whatever follows them, which is what v4 exec (where
  stdin cannot be closed) needs, and a tar stream, always whole 512-byte blocks, has no partial block.

Why this shape (measured, see benchmarks/README.md): busybox `tee` moves data in 1 KiB reads and
writes, so every output it feeds costs a million write calls per GiB; it feeds one fifo, never a
second one for counting. A dd with 512-byte blocks costs two million reads per GiB, so the counting
is done in 64 KiB blocks. Not `wc -c` for the count: busybox counts byte by byte and, built without
its large-count option as Debian's is, wraps at 4 GiB; dd's record counters are 64-bit.

After `tar -x`, the rest of the input is drained (`cat >/dev/null`): tar stops at the end-of-archive
blocks, and a tee writing padding into a closed pipe would die and cut the hash short.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from kubectl_dr.errors import VerificationError
from kubectl_dr.volumes.rescue_pod import DATA, SCRATCH

MARKER = "kubectl-dr-result"
_RESULT = re.compile(rb"kubectl-dr-result big=(\d+)\+(\d+) small=(\d+)\+(\d+) sha256=([0-9a-f]{64}) tar=(\d+)")
BIG = 65536  # the counting dd's block: few read calls (a 512-byte block costs 2 million reads per GiB)
SMALL = 512  # a tar block: a restore's last, partial 64 KiB is counted in these

_FIFOS = f"""\
set -u
cd {SCRATCH}
rm -f hash.fifo sum big small tar.rc
mkfifo hash.fifo
sha256sum < hash.fifo > sum &
hasher=$!
"""
_REPORT = f"""\
wait $hasher
rc=$(cat tar.rc 2>/dev/null || echo 255)
records() {{ r=$(sed -n "s/^\\([0-9]*+[0-9]*\\) records $1\\$/\\1/p" "$2" 2>/dev/null); echo "${{r:-0+0}}"; }}
printf '{MARKER} big=%s small=%s sha256=%s tar=%s\\n' \\
  "$(records $direction big)" "$(records in small)" "$(cut -d' ' -f1 < sum)" "$rc" >&2
exit $rc
"""


@dataclass(frozen=True)
class StreamReport:
    """What the pod saw of the byte stream and how tar ended."""

    size: int
    partial_blocks: int  # non-zero: the stream was not whole blocks (cut short, or not the size we sent)
    sha256: str
    tar_exit: int


def backup_script() -> str:
    """tar the volume to stdout, counted and hashed on the way.

    The counting dd pads the last, partial 64 KiB block with zeros (`conv=sync`), so "records out" is
    the exact size in whole blocks. The archive then ends in up to 64 KiB of zeros after tar's own
    end-of-archive blocks; GNU tar, busybox tar and Python's tarfile all stop at the end-of-archive
    marker and ignore them, and the hash and size are those of the padded stream, on both sides.
    tee writes the exec stream itself: a dd gathering its 1 KiB writes into larger ones cost more CPU
    (its reads return what tee wrote so far) than the smaller frames it saved (benchmarks/README.md).
    """
    return ("direction=out\n" + _FIFOS
            + f"{{ tar -c -f - -C {DATA} . ; echo $? > {SCRATCH}/tar.rc; }}"
            + f" | dd bs={BIG} iflag=fullblock conv=sync 2> big"
            + " | tee hash.fifo\n"
            + _REPORT)


def restore_script(size: int, *, keep_owners: bool) -> str:
    """Read exactly `size` bytes of stdin, whatever follows them (v4 exec cannot close stdin).

    Two dd in turn, each bounded by its count: the whole 64 KiB blocks, then the rest in tar's
    512-byte blocks, so the count is exact without two million reads per GiB.
    """
    owner = "--numeric-owner" if keep_owners else "-o"
    big, rest = divmod(int(size), BIG)
    tail = f"; dd bs={SMALL} iflag=fullblock,count_bytes count={rest} 2> small" if rest else ""
    return ("direction=in\n" + _FIFOS
            + f"{{ dd bs={BIG} iflag=fullblock count={big} 2> big{tail}; }} | tee hash.fifo | "
            + f"{{ tar -x {owner} -f - -C {DATA}; echo $? > {SCRATCH}/tar.rc; cat > /dev/null; }}\n"
            + _REPORT)


def parse_report(stderr: bytes) -> StreamReport:
    found = _RESULT.findall(stderr)
    if not found:
        raise VerificationError("the rescue pod did not report the size and SHA-256 of the stream; "
                                "the transfer cannot be trusted")
    big, big_partial, small, small_partial, digest, rc = found[-1]
    return StreamReport(size=int(big) * BIG + int(small) * SMALL,
                        partial_blocks=int(big_partial) + int(small_partial),
                        sha256=digest.decode(), tar_exit=int(rc))


def strip_report(stderr: bytes) -> str:
    """The pod's stderr without our result line: tar's own warnings, for the user."""
    lines = [ln for ln in stderr.decode(errors="replace").splitlines() if MARKER not in ln]
    return "\n".join(ln for ln in lines if ln.strip())


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def quote_path(path: str) -> str:
    """A relative volume path as a shell word under DATA (bytes kept via surrogateescape by the caller)."""
    return shlex.quote(f"{DATA}/{path}" if path else f"{DATA}/.")


def listing_script() -> str:
    """One `stat` line per entry, then a separator, then the same entries' names NUL-terminated.

    Names may contain newlines, so they travel NUL-separated and apart from the stat lines. Two walks of
    the same (quiesced) tree visit entries in the same order; a difference fails the check, never hides.
    Not `xargs -0 stat`: busybox xargs runs stat in-process and mangles names at its buffer boundaries
    (seen with 13 000 names).
    """
    return (f"set -e\ncd {DATA}\nfind . -xdev -print0 > {SCRATCH}/names\n"
            f"find . -xdev -exec stat -c '%f %s %h %i %u %g %Y' {{}} +\n"
            f"echo --\ncat {SCRATCH}/names\n")


def touch_script(items: list[tuple[str, int]], *, strict: bool = True) -> bytes:
    """Set mtimes of directories and symlinks: busybox tar restores neither (files it does restore).

    Not `strict` (a non-root pod): entries the pod's user does not own keep their time; the tree check
    skips them too.
    """
    tail = "" if strict else " 2>/dev/null || true"
    lines = ["set -e"] + [f"touch -c -h -d @{mtime} -- {quote_path(path)}{tail}" for path, mtime in items]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def remove_script(paths: list[str]) -> bytes:
    lines = ["set -e"] + [f"rm -rf -- {quote_path(p)}" for p in paths if p]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
