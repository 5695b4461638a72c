"""The shell the rescue pod runs: tar with the exact byte stream counted and hashed inside the pod.

Only busybox applets (sh, tar, tee, mkfifo, sha256sum, dd, sed, head, cat, find, stat, touch, rm) and
only tar flags that busybox and GNU tar both understand (`-c -x -f - -C --numeric-owner -o`), so
any image with either works. The stream is teed into two fifos read by `sha256sum` and `dd`: what
they report is exactly what crossed the pipe, not what tar thinks it wrote. The result line goes to
stderr with a marker (stdout carries the data of a backup).

The count comes from `dd ibs=1M obs=512 of=/dev/null`: its "N+M records out" is N full 512-byte
blocks plus M partial ones. A tar stream is always whole 512-byte blocks, so the size is N*512 and M
must be 0. Not `wc -c`: busybox counts byte by byte (about 110 MB/s, the slowest stage of the pipe)
and, built without large-file support as Debian's is, wraps at 4 GiB; dd's counters are 64-bit.

After `tar -x`, the rest of the input is drained (`cat >/dev/null`): tar stops at the end-of-archive
blocks, and a tee writing padding into a closed pipe would die and cut the count short.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from kubectl_dr.errors import VerificationError
from kubectl_dr.volumes.rescue_pod import DATA, SCRATCH

MARKER = "kubectl-dr-result"
_RESULT = re.compile(rb"kubectl-dr-result blocks=(\d+)\+(\d+) sha256=([0-9a-f]{64}) tar=(\d+)")
BLOCK = 512

_FIFOS = f"""\
set -u
cd {SCRATCH}
rm -f hash.fifo count.fifo sum count tar.rc
mkfifo hash.fifo count.fifo
sha256sum < hash.fifo > sum &
hasher=$!
dd ibs=1048576 obs={BLOCK} of=/dev/null < count.fifo 2> count &
counter=$!
"""
_REPORT = f"""\
wait $hasher; wait $counter
rc=$(cat tar.rc 2>/dev/null || echo 255)
printf '{MARKER} blocks=%s sha256=%s tar=%s\\n' \\
  "$(sed -n 's/^\\([0-9]*+[0-9]*\\) records out$/\\1/p' count)" "$(cut -d' ' -f1 < sum)" "$rc" >&2
exit $rc
"""


@dataclass(frozen=True)
class StreamReport:
    """What the pod saw of the byte stream and how tar ended."""

    size: int
    partial_blocks: int  # non-zero: the stream was not whole tar blocks (cut short or not tar)
    sha256: str
    tar_exit: int


def backup_script() -> str:
    """tar the volume to stdout, teed into the hash and count fifos."""
    return (_FIFOS
            + f"{{ tar -c -f - -C {DATA} . ; echo $? > {SCRATCH}/tar.rc; }} | tee hash.fifo count.fifo\n"
            + _REPORT)


def restore_script(size: int, *, keep_owners: bool) -> str:
    """Read exactly `size` bytes of stdin (`head -c`: works on v4, where stdin cannot be closed)."""
    owner = "--numeric-owner" if keep_owners else "-o"
    return (_FIFOS
            + f"head -c {int(size)} | tee hash.fifo count.fifo | "
            + f"{{ tar -x {owner} -f - -C {DATA}; echo $? > {SCRATCH}/tar.rc; cat > /dev/null; }}\n"
            + _REPORT)


def parse_report(stderr: bytes) -> StreamReport:
    found = _RESULT.findall(stderr)
    if not found:
        raise VerificationError("the rescue pod did not report the size and SHA-256 of the stream; "
                                "the transfer cannot be trusted")
    blocks, partial, digest, rc = found[-1]
    return StreamReport(int(blocks) * BLOCK, int(partial), digest.decode(), int(rc))


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
