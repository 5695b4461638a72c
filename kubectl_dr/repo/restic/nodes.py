"""Tree nodes and trees, in the JSON restic writes and reads (restic's `internal/data/node.go`).

Two encodings need care:
- `mode` is Go's `os.FileMode`, not a Unix st_mode: the permission bits stay in the low 9 bits, but the
  type and setuid/setgid/sticky are high flag bits (directory 1<<31, symlink 1<<27, setuid 1<<23, …).
- times are Go's RFC 3339 with nanoseconds and trailing zeros trimmed; we keep them as integer
  nanoseconds since the epoch (negative before 1970) so nothing is lost by a float on the way.

A tree is `{"nodes":[…]}` with the nodes sorted by name (bytewise, as Go compares strings); restic
refuses unsorted or duplicate names, and so do we when reading. Names are untrusted: a name that is
empty, `.`, `..` or holds `/` or NUL is refused before it can become a path.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from kubectl_dr.repo.errors import RepoError

FILE, DIR, SYMLINK, DEV, CHARDEV, FIFO, SOCKET, IRREGULAR = (
    "file", "dir", "symlink", "dev", "chardev", "fifo", "socket", "irregular")
NODE_TYPES = (FILE, DIR, SYMLINK, DEV, CHARDEV, FIFO, SOCKET, IRREGULAR)

# Go's os.FileMode bits (io/fs/fs.go).
GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27
GO_DEVICE = 1 << 26
GO_NAMED_PIPE = 1 << 25
GO_SOCKET = 1 << 24
GO_SETUID = 1 << 23
GO_SETGID = 1 << 22
GO_CHAR_DEVICE = 1 << 21
GO_STICKY = 1 << 20
GO_IRREGULAR = 1 << 19
_GO_TYPE = {DIR: GO_DIR, SYMLINK: GO_SYMLINK, DEV: GO_DEVICE, CHARDEV: GO_DEVICE | GO_CHAR_DEVICE,
            FIFO: GO_NAMED_PIPE, SOCKET: GO_SOCKET, FILE: 0, IRREGULAR: GO_IRREGULAR}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(Z|[+-]\d\d:\d\d)\Z")  # after the fraction
_ID = re.compile(r"[0-9a-f]{64}")
NS = 1_000_000_000


class ResticFormatError(RepoError):
    """A restic repository item that does not follow the format (or that we refuse as unsafe)."""


def go_mode(node_type: str, perm: int) -> int:
    """Go's FileMode for a node type and Unix permission bits (with setuid 0o4000, setgid 0o2000, sticky 0o1000)."""
    mode = _GO_TYPE[node_type] | (perm & 0o777)
    if perm & stat.S_ISUID:
        mode |= GO_SETUID
    if perm & stat.S_ISGID:
        mode |= GO_SETGID
    if perm & stat.S_ISVTX:
        mode |= GO_STICKY
    return mode


def unix_perm(mode: int) -> int:
    """The Unix permission bits (with setuid/setgid/sticky) of a Go FileMode."""
    perm = mode & 0o777
    if mode & GO_SETUID:
        perm |= stat.S_ISUID
    if mode & GO_SETGID:
        perm |= stat.S_ISGID
    if mode & GO_STICKY:
        perm |= stat.S_ISVTX
    return perm


def format_time(ns: int) -> str:
    """Go's time.Time JSON (RFC 3339, nanoseconds with trailing zeros trimmed) in UTC."""
    secs, frac = divmod(ns, NS)
    text = _format_seconds(secs)
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


@functools.lru_cache(maxsize=1 << 16)
def _format_seconds(secs: int) -> str:
    # Cached: a tree's nodes share their seconds often (mtime = atime, files written together), and a
    # volume's trees are encoded on every backup.
    when = _EPOCH + timedelta(seconds=secs)
    if not 1 <= when.year <= 9999:
        raise ResticFormatError(f"time {secs} s is outside the years restic can store")
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.year < 1000:
        text = f"{when.year:04d}" + text[text.index("-"):]
    return text


def parse_time(text: Any) -> int:
    """Nanoseconds since the epoch of a Go RFC 3339 time, any offset."""
    if not isinstance(text, str):
        raise ResticFormatError(f"not a restic time: {text!r}")
    # The whole seconds and the zone (the text without its fraction) parsed once each: reading a
    # volume's trees parses three times per node, and most nodes share their seconds with others.
    dot = text.find(".", 19)
    if dot < 0:
        return _parse_seconds(text) * NS
    end = dot + 1
    while end < len(text) and "0" <= text[end] <= "9" and end - dot <= 9:
        end += 1
    frac = text[dot + 1:end]
    if not frac:
        raise ResticFormatError(f"not a restic time: {text!r}")
    return _parse_seconds(text[:dot] + text[end:]) * NS + int(frac.ljust(9, "0"))


@functools.lru_cache(maxsize=1 << 16)
def _parse_seconds(text: str) -> int:
    m = _TIME.match(text)
    if not m:
        raise ResticFormatError(f"not a restic time: {text!r}")
    y, mo, d, h, mi, s, zone = m.groups()
    offset = 0 if zone == "Z" else (int(zone[1:3]) * 60 + int(zone[4:6])) * (1 if zone[0] == "+" else -1)
    try:
        when = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc)
    except ValueError as exc:
        raise ResticFormatError(f"not a restic time: {text!r}") from exc
    delta = when - _EPOCH - timedelta(minutes=offset)
    return delta.days * 86400 + delta.seconds


def check_node_name(name: Any) -> str:
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise ResticFormatError(f"unsafe or invalid name in a restic tree: {name!r}")
    return name


@dataclass
class Node:
    name: str
    type: str
    mode: int = 0  # Go FileMode
    mtime: int = 0  # ns since the epoch
    atime: int = 0
    ctime: int = 0
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    inode: int = 0
    device_id: int = 0  # st_dev: with inode, what makes hard links one file
    size: int = 0
    links: int = 0
    linktarget: str = ""
    device: int = 0  # st_rdev of a device node
    content: list[str] = field(default_factory=list)  # data blob IDs of a file, in order
    subtree: str | None = None  # tree blob ID of a directory

    @property
    def perm(self) -> int:
        return unix_perm(self.mode)

    def to_json(self) -> dict[str, Any]:
        # Field order and omitempty exactly as restic's struct tags: uid, gid and content are always written.
        doc: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.mode:
            doc["mode"] = self.mode
        doc["mtime"] = format_time(self.mtime)
        doc["atime"] = format_time(self.atime)
        doc["ctime"] = format_time(self.ctime)
        doc["uid"] = self.uid
        doc["gid"] = self.gid
        for key, value in (("user", self.user), ("group", self.group), ("inode", self.inode),
                           ("device_id", self.device_id), ("size", self.size), ("links", self.links),
                           ("linktarget", self.linktarget), ("device", self.device)):
            if value:
                doc[key] = value
        doc["content"] = list(self.content) if self.type == FILE else None
        if self.subtree is not None:
            doc["subtree"] = self.subtree
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> Node:
        if not isinstance(doc, dict):
            raise ResticFormatError("a tree node is not a JSON object")
        name = check_node_name(doc.get("name"))
        node_type = doc.get("type")
        if node_type not in NODE_TYPES:
            raise ResticFormatError(f"node {name!r} has an unknown type {node_type!r}")
        try:
            node = cls(
                name=name, type=node_type, mode=_uint(doc.get("mode", 0), 32),
                mtime=_time(doc.get("mtime")), atime=_time(doc.get("atime")), ctime=_time(doc.get("ctime")),
                uid=_uint(doc.get("uid", 0), 32), gid=_uint(doc.get("gid", 0), 32),
                user=_str(doc.get("user", "")), group=_str(doc.get("group", "")),
                inode=_uint(doc.get("inode", 0), 64), device_id=_uint(doc.get("device_id", 0), 64),
                size=_uint(doc.get("size", 0), 64), links=_uint(doc.get("links", 0), 64),
                linktarget=_str(doc.get("linktarget", "")), device=_uint(doc.get("device", 0), 64),
                content=[check_id(c) for c in (doc.get("content") or [])],
                subtree=check_id(doc["subtree"]) if doc.get("subtree") is not None else None,
            )
        except (TypeError, ValueError) as exc:
            raise ResticFormatError(f"node {name!r}: {exc}") from exc
        if node.type == DIR and node.subtree is None:
            raise ResticFormatError(f"directory node {name!r} has no subtree")
        if node.type != FILE and node.content:
            raise ResticFormatError(f"{node.type} node {name!r} has content")
        return node


def check_id(value: Any) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ResticFormatError(f"not a restic ID: {value!r}")
    return value


def encode_tree(nodes: list[Node]) -> bytes:
    ordered = sorted(nodes, key=lambda n: n.name.encode("utf-8", "surrogateescape"))
    for a, b in itertools.pairwise(ordered):
        if a.name == b.name:
            raise ResticFormatError(f"two nodes named {a.name!r} in one tree")
    body = ",".join(json.dumps(n.to_json(), separators=(",", ":"), ensure_ascii=False) for n in ordered)
    return ('{"nodes":[' + body + "]}\n").encode("utf-8")


def decode_tree(data: bytes) -> list[Node]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ResticFormatError(f"a tree is not JSON ({exc})") from exc
    raw = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(raw, list):
        if isinstance(doc, dict) and raw is None:
            return []
        raise ResticFormatError("a tree has no node list")
    nodes = [Node.from_json(n) for n in raw]
    names = [n.name.encode("utf-8", "surrogateescape") for n in nodes]
    if any(a >= b for a, b in itertools.pairwise(names)):
        raise ResticFormatError("a tree's nodes are not sorted by name, or a name repeats")
    return nodes


def _time(value: Any) -> int:
    return 0 if value is None else parse_time(value)


def _uint(value: Any, bits: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**bits:
        raise ValueError(f"{value!r} is not an unsigned {bits}-bit number")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value
