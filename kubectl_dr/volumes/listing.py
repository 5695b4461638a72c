"""The pod's listing of a volume: one `stat` per entry, parsed exactly, names and all.

The listing travels as one stream (checked like every transfer: count and SHA-256 in the pod and
here): first one line per entry, `%f %s %h %i %u %g %Y %b %B %t %T %n` (raw mode, size, links, inode,
owner, group, mtime, allocated blocks and their unit, device major and minor, name), then a NUL, then
the same walk's names NUL-terminated. A name may hold a newline but never a NUL, so the NUL list says
exactly where each line's name ends; a line whose name is not the next name of the list means the
volume changed between the two walks, and the listing is refused rather than misread.

Both busybox and GNU `stat` and `find` print this format, negative mtimes and 32-bit uids included.
"""

from __future__ import annotations

import re
import stat as st
from dataclasses import dataclass

from kubectl_dr.errors import VerificationError
from kubectl_dr.volumes.entries import BLOCKDEV, CHAR, DIR, FIFO, FILE, SOCKET, SYMLINK
from kubectl_dr.volumes.tar_reader import ENCODING, ERRORS

STAT_FORMAT = "%f %s %h %i %u %g %Y %b %B %t %T %n"
# restic's rule for reusing a file's content from the parent snapshot also compares the change time.
STAT_FORMAT_CTIME = "%f %s %h %i %u %g %Y %b %B %t %T %Z %n"
_FIELDS = 11
# A line's fields, each up to the next space (the name after them may hold anything but a NUL): one match
# per line instead of a find per field, which made parsing the largest item of a restore's own CPU (three
# listings of every entry).
_LINES = {n: re.compile(rb"([^ ]*) " * n) for n in (_FIELDS, _FIELDS + 1)}
_KINDS = {st.S_IFREG: FILE, st.S_IFDIR: DIR, st.S_IFLNK: SYMLINK, st.S_IFIFO: FIFO, st.S_IFCHR: CHAR,
          st.S_IFBLK: BLOCKDEV, st.S_IFSOCK: SOCKET}


class ListingChanged(VerificationError):
    """The volume changed between the listing's two walks (a running app): list again, or stop it."""


@dataclass(slots=True)
class Found:
    """One entry as `stat` saw it in the pod."""

    path: str
    kind: str
    mode: int  # permission bits
    size: int
    links: int
    inode: int
    uid: int
    gid: int
    mtime: int
    blocks: int  # allocated 512-byte blocks
    rdev: tuple[int, int] = (0, 0)
    ctime: int = 0  # seconds; listed only when asked for (restic repositories)


def normalise(raw: bytes) -> str:
    """`./a/b` (as find prints it) → `a/b`; `.` → `` (the root)."""
    if raw == b".":
        return ""
    if not raw.startswith(b"./"):
        raise VerificationError(f"the pod's listing holds a name find does not print: {raw[:200]!r}")
    return raw[2:].decode(ENCODING, ERRORS)


def parse(stream: bytes, *, ctime: bool = False) -> dict[str, Found]:
    """The listing's bytes (trailing zero padding allowed) → every entry, in walk order. `ctime`: the lines
    were printed with STAT_FORMAT_CTIME."""
    wanted = _FIELDS + (1 if ctime else 0)
    split = stream.find(b"\0")
    if split < 0:
        raise VerificationError("the pod's listing of the volume is incomplete (no name list)")
    names = stream[split + 1:].split(b"\0")
    while names and names[-1] == b"":
        names.pop()  # the end of the last name, and the zeros that pad the stream to whole blocks
    found: dict[str, Found] = {}
    cursor = 0
    line = _LINES[wanted]
    for name in names:
        fields = line.match(stream, cursor, split)
        if fields is None:
            raise ListingChanged("the volume changed while it was listed (a listing line is cut short)")
        cursor = fields.end()
        end = cursor + len(name)
        if end >= split or stream[cursor:end] != name or stream[end] != 0x0A:
            raise ListingChanged("the volume changed while it was listed (the two walks of the listing differ)")
        cursor = end + 1
        try:
            mode = int(fields[1], 16)
            entry = Found(normalise(name), _KINDS.get(st.S_IFMT(mode), "unknown"), mode & 0o7777, int(fields[2]),
                          int(fields[3]), int(fields[4]), int(fields[5]), int(fields[6]), int(fields[7]),
                          int(fields[8]) * int(fields[9]) // 512, (int(fields[10], 16), int(fields[11], 16)),
                          int(fields[12]) if ctime else 0)
        except ValueError:
            raise VerificationError(f"the pod's listing has an unreadable line for {name[:200]!r}: "
                                    f"{b' '.join(fields.groups())[:200]!r}") from None
        found[entry.path] = entry
    if cursor != split:
        raise ListingChanged("the volume changed while it was listed (the walks listed different entries)")
    return found
