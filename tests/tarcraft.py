"""Hand-made tar archives, byte by byte: the malformed and the unusual ones no tar program writes.

Used to hold kubectl dr's archive reader against the real busybox tar and GNU tar.
"""

from __future__ import annotations

BLOCK = 512
POSIX = b"ustar\x0000"
GNU = b"ustar  \x00"


def octal(value: int, width: int) -> bytes:
    """Zero-padded digits and a NUL; a value that needs every byte gets no NUL (busybox writes that)."""
    digits = f"{value:o}"
    if len(digits) == width:
        return digits.encode()
    if len(digits) > width:
        raise ValueError(f"{value} does not fit {width} octal digits")
    return digits.rjust(width - 1, "0").encode() + b"\0"


def base256(value: int, width: int) -> bytes:
    raw = value.to_bytes(width, "big", signed=True)
    return bytes([raw[0] | 0x80]) + raw[1:] if value >= 0 else raw


def header(name: bytes, *, type: bytes = b"0", size: int = 0, mode: int = 0o644, uid: int = 1000, gid: int = 1000,
           mtime: int = 1_600_000_000, link: bytes = b"", magic: bytes = GNU, fields: dict[int, bytes] | None = None,
           checksum: int | None = None) -> bytes:
    """One 512-byte header; `fields` overwrites bytes at offsets (after the defaults, before the checksum)."""
    block = bytearray(BLOCK)
    block[0:len(name)] = name[:100]
    block[100:108] = octal(mode, 8)
    block[108:116] = octal(uid, 8)
    block[116:124] = octal(gid, 8)
    block[124:136] = octal(size, 12)
    block[136:148] = octal(mtime, 12)
    block[156:157] = type
    block[157:157 + len(link)] = link[:100]
    block[257:265] = magic
    block[265:269] = b"root"
    block[297:301] = b"root"
    for offset, raw in (fields or {}).items():
        block[offset:offset + len(raw)] = raw
    block[148:156] = b" " * 8
    total = sum(block) if checksum is None else checksum
    block[148:156] = f"{total:06o}".encode() + b"\0 "
    assert len(block) == BLOCK, "a field overflowed"
    return bytes(block)


def data(content: bytes) -> bytes:
    return content + bytes(-len(content) % BLOCK)


def entry(name: bytes, content: bytes = b"", **kw: object) -> bytes:
    return header(name, size=len(content), **kw) + data(content)  # type: ignore[arg-type]


def longname(name: bytes, kind: bytes = b"L") -> bytes:
    raw = name + b"\0"
    return header(b"././@LongLink", type=kind, size=len(raw), mode=0o644, uid=0, gid=0, mtime=0) + data(raw)


END = bytes(2 * BLOCK)
