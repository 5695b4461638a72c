"""The shell the rescue pod runs: every stream counted and hashed inside the pod, tar as the image has it.

Only what busybox and GNU both understand: `sh`, `tar -c -x -f - -C`, `find -xdev -print0 -exec {} +`,
`stat -c`, `dd bs= count= iflag=fullblock,count_bytes conv=sync`, `tee`, `mkfifo`, `sha256sum`,
`chown -h`, `chmod`, `touch -h -c -d @N`, `rm -rf`, `df -Pk`. Where the image has GNU tar (`probe`
says so) a backup stores sparse files as GNU sparse members, which only GNU tar extracts.

A stream leaving or entering the pod passes through `tee`, which copies it into a fifo read by
`sha256sum`, and through a `dd` that counts it in blocks (its "N+M records" lines: N full blocks, M
partial ones). What they report is exactly what crossed the pipe, not what tar thinks it wrote. The
result line goes to stderr with a marker (stdout carries the data).

- Out (the archive, the listing): `PRODUCER | dd bs=64K iflag=fullblock conv=sync | tee hash.fifo`.
  The dd pads the last block, so the size is exactly "records out" × 64 KiB; tar readers and the
  listing parser ignore the trailing zeros.
- In (a restore): `dd bs=64K count=N; dd bs=512 count_bytes count=R` in turn, then
  `tee hash.fifo | tar -x`: exactly `size` = N × 64 KiB + R bytes are read whatever follows them,
  which is what v4 exec (where stdin cannot be closed) needs.

Why this shape (measured, see benchmarks/README.md): busybox `tee` moves data in 1 KiB reads and
writes, so every output it feeds costs a million write calls per GiB; it feeds one fifo, never a
second one for counting. A dd with 512-byte blocks costs two million reads per GiB, so the counting
is done in 64 KiB blocks. Not `wc -c` for the count: busybox counts byte by byte and, built without
its large-count option as Debian's is, wraps at 4 GiB; dd's record counters are 64-bit.

After `tar -x`, the rest of the input is drained (`cat >/dev/null`): tar stops at the end-of-archive
blocks, and a tee writing padding into a closed pipe would die and cut the hash short.

Compressed on the link (`compression.py`): out, `tee`'s stdout goes through `gzip -c`; in, the decoder
writes into a fifo that the counting `dd` reads, so count and hash are still those of the tar stream.
The decoder runs beside the script and is ended after the count: on v4 its stdin never closes, and
`gzip -d` would wait for another member for ever.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from kubectl_dr.errors import VerificationError
from kubectl_dr.volumes.listing import STAT_FORMAT, STAT_FORMAT_CTIME
from kubectl_dr.volumes.tree_check import Fixes

# Where the rescue pod mounts the claim and its scratch space: every script is written against these paths.
DATA = "/data"
SCRATCH = "/scratch"
MARKER = "kubectl-dr-result"
_RESULT = re.compile(rb"kubectl-dr-result big=(\d+)\+(\d+) small=(\d+)\+(\d+) sha256=([0-9a-f]{64}) tar=(\d+)")
BIG = 65536  # the counting dd's block: few read calls (a 512-byte block costs 2 million reads per GiB)
SMALL = 512  # a tar block: a restore's last, partial 64 KiB is counted in these
BUSYBOX, GNU = "busybox", "gnu"
# Paths per command line of a fix or removal script: well inside any ARG_MAX, few processes.
BATCH = 200

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
    """What the pod saw of the byte stream and how its producer (or tar -x) ended."""

    size: int
    partial_blocks: int  # non-zero: the stream was not whole blocks (cut short, or not the size we sent)
    sha256: str
    tar_exit: int


@dataclass(frozen=True)
class Probe:
    """What the rescue image offers, asked once when the pod starts."""

    tar: str  # BUSYBOX or GNU
    tar_version: str
    dig_holes: bool  # fallocate -d: sparse files can be made sparse again after extraction
    uid: int
    gids: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        return {"tar": self.tar, "tarVersion": self.tar_version, "digHoles": self.dig_holes, "uid": self.uid,
                "gids": list(self.gids)}


PROBE = """\
v=$(tar --version 2>/dev/null | head -n 1)
case "$v" in
  *"GNU tar"*) echo "tar=gnu ${v##* }" ;;
  *) echo "tar=busybox $(busybox 2>/dev/null | head -n 1 | cut -d' ' -f2)" ;;
esac
if fallocate --help 2>&1 | grep -q dig-holes; then echo holes=yes; else echo holes=no; fi
echo "uid=$(id -u)"
echo "gids=$(id -G)"
"""


def parse_probe(output: bytes) -> Probe:
    values = dict(line.split("=", 1) for line in output.decode(errors="replace").splitlines() if "=" in line)
    try:
        flavour, _, version = values["tar"].partition(" ")
        return Probe(GNU if flavour == GNU else BUSYBOX, version.strip(), values.get("holes") == "yes",
                     int(values["uid"]), tuple(int(g) for g in values.get("gids", "").split()))
    except (KeyError, ValueError):
        raise VerificationError(f"the rescue pod's image did not answer the tool probe as expected: "
                                f"{output[:300]!r}",
                                hint="--image needs sh, tar, id, and busybox or GNU tools.") from None


def _out(producer: str, compress: str = "none") -> str:
    """A producer's stdout counted and hashed on its way out; its exit code is the reported one.

    With `compress` (gzip, the one busybox compressor) what leaves the pod is compressed after the
    count and the hash: the checks are on the producer's own bytes.
    """
    return ("direction=out\n" + _FIFOS
            + f"{{ {producer}; echo $? > {SCRATCH}/tar.rc; }}"
            + f" | dd bs={BIG} iflag=fullblock conv=sync 2> big"
            + " | tee hash.fifo" + (" | gzip -c" if compress == "gzip" else "") + "\n"
            + _REPORT)


def link_out_script(size: int) -> str:
    """`size` bytes out of the pod, to time the link (`--compress auto`)."""
    return f"head -c {int(size)} /dev/zero"


def sample_script(paths: list[str], each: int) -> str:
    """The first `each` bytes of a few files, raw size then gzip's size (`--compress auto` on a backup)."""
    files = " ".join(quote_path(p) for p in paths)
    return (f"cd {SCRATCH} && for f in {files}; do head -c {int(each)} \"$f\" 2>/dev/null; done > sample; "
            "wc -c < sample; gzip -c < sample | wc -c; rm -f sample")


LINK_IN_SCRIPT = "echo ready; cat > /dev/null"  # the line says the reader is there: the timing starts
_DECODERS = {"gzip": "gzip -dc", "xz": "xz -dc"}


def listing_script(*, ctime: bool = False, clock: bool = False) -> str:
    """Every entry of the volume: `stat` lines, a NUL, then the names NUL-terminated (see `listing`).

    Not `xargs -0 stat`: busybox xargs runs stat in-process and mangles names at its buffer boundaries
    (seen with 13 000 names). find's exit code is not the listing's: an unreadable directory makes it 1,
    and what it could not see, tar cannot read either.

    `clock`: first a line with the node's clock (`date +%s`) read just before the walk, the second change
    times are judged against (`restic_backup.mark_racy`): the node's own clock, as the change times are,
    not this machine's, which may be seconds off.
    """
    fmt = STAT_FORMAT_CTIME if ctime else STAT_FORMAT
    first = "date +%s && " if clock else ""
    return _out(f"{first}cd {DATA} && find . -xdev -exec stat -c '{fmt}' {{}} + ; printf '\\0'; "
                "find . -xdev -print0; true")


def backup_script(tar: str, compress: str = "none") -> str:
    """tar the volume's root entries to stdout, all but lost+found (whose skipping is said elsewhere).

    The root directory's own owner, mode and time come from the listing, so the archive holds the root's
    entries rather than `.`: no exclusion option is needed, which Debian's busybox tar lacks. An empty
    volume is archived as its root alone. GNU tar stores sparse files as sparse members (only GNU tar
    extracts them; a restore then needs an image with GNU tar too).
    """
    command = "tar -c --format=gnu --sparse -f -" if tar == GNU else "tar -c -f -"
    return _out(f"""cd {DATA} && set -- && for f in ./* ./.[!.]* ./..?*; do
  if [ ! -e "$f" ] && [ ! -L "$f" ]; then continue; fi
  if [ "$f" = ./lost+found ] && [ -d "$f" ] && [ ! -L "$f" ]; then continue; fi
  set -- "$@" "$f"
done
if [ $# -eq 0 ]; then {command} --no-recursion . ; else {command} -- "$@" ; fi""", compress)


def paths_backup_script(tar: str, paths: list[str]) -> str:
    """tar exactly these volume paths (files and symlinks, no recursion) to stdout: an incremental backup's
    changed entries. The caller keeps the script under one argument's limit (128 KiB)."""
    command = "tar -c --format=gnu --sparse --no-recursion -f -" if tar == GNU else "tar -c --no-recursion -f -"
    words = " ".join(shlex.quote("./" + p) for p in paths)
    return _out(f"cd {DATA} && {command} -- {words}")


def restore_script(size: int, *, tar: str, keep_owners: bool, compress: str = "none",
                   command: str | None = None) -> str:
    """Read exactly `size` bytes of stdin, whatever follows them (v4 exec cannot close stdin).

    Two dd in turn, each bounded by its count: the whole 64 KiB blocks, then the rest in tar's
    512-byte blocks, so the count is exact without two million reads per GiB. Compressed (gzip, xz),
    the dd read the decoder's output, so `size` and the hash are those of the tar stream; what the
    decoder said on stderr is passed on after the count. `command`: what reads the stream instead of
    tar (a script writing chunks into files in place); its exit code is reported in tar's place.
    """
    if command is None and tar == GNU:
        owner = "--numeric-owner --same-owner" if keep_owners else "--no-same-owner"
        command = f"tar -x -p {owner} -f - -C {DATA}"
    elif command is None:
        command = f"tar -x {'--numeric-owner' if keep_owners else '-o'} -f - -C {DATA}"
    big, rest = divmod(int(size), BIG)
    tail = f"; dd bs={SMALL} iflag=fullblock,count_bytes count={rest} 2> small" if rest else ""
    decoder = _DECODERS.get(compress)
    start = after = source = ""
    if decoder is not None:
        # A command run with & reads /dev/null unless told otherwise: stdin is handed over as fd 3.
        start = (f"rm -f plain.fifo decode.err; mkfifo plain.fifo\nexec 3<&0\n"
                 f"{decoder} <&3 > plain.fifo 2> decode.err &\ndecoder=$!\nexec 3<&-\n")
        source = " < plain.fifo"
        after = "kill $decoder 2>/dev/null; sed 's/^/decompressing: /' decode.err >&2\n"
    return ("direction=in\n" + _FIFOS + start
            + f"{{ dd bs={BIG} iflag=fullblock count={big} 2> big{tail}; }}{source} | tee hash.fifo | "
            + f"{{ {command}; echo $? > {SCRATCH}/tar.rc; cat > /dev/null; }}\n"
            + after + _REPORT)


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


# Messages a backup's tar may print without the archive being wrong: what it could not read or found
# gone (the reconciliation with the listing decides whether that is allowed), and sockets. Anything
# else — GNU tar's "file shrank; padding with zeros", a read error — fails the backup.
_HARMLESS = (
    re.compile(r"^tar: can't open '.*': (Permission denied|No such file or directory)$"),
    # busybox's words for a directory it may not open (GNU's are "Cannot open" below).
    re.compile(r"^tar: .*: Permission denied$"),
    re.compile(r"^tar: .*: (Cannot open|Cannot opendir|Cannot savedir|Cannot stat|Cannot readlink): "
               r"(Permission denied|No such file or directory)$"),
    re.compile(r"^tar: .*: (file changed as we read it|File removed before we read it|socket ignored)$"),
    re.compile(r"^tar: (error exit delayed from previous errors|Exiting with failure status due to previous errors)$"),
)


def harmless_tar_messages(text: str) -> bool:
    return all(any(p.match(line) for p in _HARMLESS) for line in text.splitlines() if line.strip())


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def quote_path(path: str) -> str:
    """A relative volume path as a shell word under DATA (bytes kept via surrogateescape by the caller)."""
    return shlex.quote(f"{DATA}/{path}" if path else f"{DATA}/.")


def _batches(command: str, paths: list[str]) -> Iterator[str]:
    for start in range(0, len(paths), BATCH):
        yield f"{command} -- " + " ".join(quote_path(p) for p in paths[start:start + BATCH])


def fix_script(fixes: Fixes, *, strict: bool) -> bytes:
    """Set owners, then modes (chown clears setuid and setgid), then times, then punch holes.

    Not `strict` (a non-root pod): what its user may not change keeps its value; the final check
    demands only what such a pod can set.
    """
    tail = "" if strict else " 2>/dev/null || true"
    lines: list[str] = ["set -e"]
    for (uid, gid), paths in fixes.chown.items():
        lines += [line + tail for line in _batches(f"chown -h {uid}:{gid}", paths)]
    for mode, paths in fixes.chmod.items():
        lines += [line + tail for line in _batches(f"chmod {mode:o}", paths)]
    for mtime, paths in fixes.touch.items():
        lines += [line + tail for line in _batches(f"touch -h -c -d @{mtime}", paths)]
    lines += [line + tail for line in _batches("fallocate -d", fixes.dig_holes)]
    return _script(lines)


def remove_script(paths: Iterable[str]) -> bytes:
    return _script(["set -e", *_batches("rm -rf", [p for p in paths if p])])


def _script(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


HASHES = f"{SCRATCH}/hashes.sh"
# Processes hashing at once in the pod: SHA-256 is bound by the CPU, and two halve it on any node with
# two cores free (an incremental restore has stopped the claim's consumers).
HASH_WORKERS = 2


def hash_list_script(paths: list[str], chunked: list[tuple[str, list[tuple[int, int]]]], *,
                     sizes: Mapping[str, int] | None = None, workers: int = HASH_WORKERS) -> bytes:
    """`sha256sum` of these volume files, in this order, a command line per batch (a file it cannot read
    prints no line, and the caller sends that file); then, for each file of `chunked`, the SHA-256 of each
    (offset, length) piece, one `hash  -` line each whatever happens (an unreadable piece hashes as empty).
    The script itself always ends with 0.

    Hashing is bound by the CPU, so the lines are split into `workers` consecutive parts of about equal
    bytes (by `sizes`, else by count) that run at once, each into its own file; the files are printed in
    order afterwards, so the output is the same as one shell running every line."""
    weighted: list[tuple[str, int]] = []
    for start in range(0, len(paths), BATCH):
        batch = paths[start:start + BATCH]
        line = f"sha256sum -- {' '.join(quote_path(p) for p in batch)} || true"
        weighted.append((line, sum(sizes.get(p, 0) for p in batch) if sizes is not None else len(batch)))
    for path, pieces in chunked:
        weighted += [(f"dd if={quote_path(path)} bs={BIG} iflag=skip_bytes,count_bytes skip={int(offset)} "
                      f"count={int(length)} 2>/dev/null | sha256sum", int(length) if sizes is not None else 1)
                     for offset, length in pieces]
    total = sum(w for _, w in weighted) or 1
    parts: list[list[str]] = [[] for _ in range(max(1, workers))]
    done = 0
    for line, weight in weighted:
        parts[min(len(parts) - 1, done * len(parts) // total)].append(line)
        done += weight
    outputs = [f"{SCRATCH}/hashes.{i}" for i in range(len(parts))]
    lines = [f"{{\ntrue\n{chr(10).join(part)}\n}} > {out} &" if part else f": > {out}"
             for part, out in zip(parts, outputs, strict=True)]
    return _script([*lines, "wait", f"cat {' '.join(outputs)}", f"rm -f {' '.join(outputs)}", "true"])


def hashes_script() -> str:
    """Run the uploaded hash list, its output counted and hashed on the way out like every stream."""
    return uploaded_out(HASHES)


def upload_script(dest: str, size: int) -> str:
    """stdin (bounded by `head -c size`) into the scratch file `dest`, which must then hold `size` bytes.

    A stream cut short ends `head -c` early without an error, so `cat >` alone would leave half a script
    (half a list of files to hash, of chunks to write, of paths to remove) and exit 0: the pod counts."""
    q = shlex.quote(dest)
    # Each step's failure exits by itself: `set -e` would not hold inside the subshell `after_upload` puts this
    # in, on the left of its `||` (POSIX ignores -e there).
    return (f'cat > {q} || exit 1; got=$(wc -c < {q}) || exit 1; [ "$got" -eq {int(size)} ] '
            f'|| {{ echo "uploading {dest}: $got of {int(size)} bytes arrived"; exit 1; }} >&2')


def after_upload(dest: str, size: int, script: str) -> str:
    """stdin into `dest` as `upload_script` takes it (in a subshell, whose exit ends only it), then `script`:
    one exec for both. A short upload exits 1 before `script` runs, so no stream report comes."""
    return f"({upload_script(dest, size)}) || exit 1\n{script}"


def uploaded_out(script: str) -> str:
    """Run a script uploaded into the scratch directory, its output counted and hashed on the way out."""
    return _out(f"sh {script}")


FREE_SPACE = f"df -Pk {DATA} | tail -n 1"


def parse_free_space(output: bytes) -> int | None:
    """Bytes available on the volume's file system, from `df -Pk` (None if df said nothing usable)."""
    fields = output.decode(errors="replace").split()
    try:
        return int(fields[3]) * 1024
    except (IndexError, ValueError):
        return None
