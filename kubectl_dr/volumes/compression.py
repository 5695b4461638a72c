"""Compression of the exec stream where the link is slow: `--compress auto|none|gzip` (and `xz` for restores).

Only the link carries compressed bytes. A backup's pod compresses with busybox `gzip` (the one compressor
busybox 1.37 has that we can read without another library) and we decompress as the frames arrive; a
restore compresses here (zlib's gzip, or xz) and the pod decompresses (`gzip -d`, `xz -d`: busybox can
only decompress xz). The repository keeps the tar as it always did, and every check stays on the
uncompressed stream: the pod counts and hashes what tar wrote or what tar reads, we count and hash the
same bytes here, so a damaged compressed stream is caught by the comparison whichever tool misread it.

`auto` measures the link first (a few MiB through the pod, `transfer.link_rate`): below what the pod's
gzip can keep up with, compression pays on anything compressible. Samples say whether the data is: a
backup's pod gzips the first MiB of the largest files, a restore compresses samples of the archive here;
data that does not shrink by a fifth is sent as it is.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubectl_dr.errors import UsageError, VerificationError
from kubectl_dr.units import rate

NONE, GZIP, XZ, AUTO = "none", "gzip", "xz", "auto"
BACKUP_METHODS = (AUTO, NONE, GZIP)
RESTORE_METHODS = (AUTO, NONE, GZIP, XZ)
# busybox gzip (fixed level 6) compresses 25-30 MB/s on one core of the development machine, text or
# random data alike: on a link slower than that the pod's gzip does not hold the stream back.
AUTO_BELOW = 20 * (1 << 20)  # bytes per second
# A restore compresses here at zlib level 1: 125 MB/s on text, 32 MB/s on random data (one core); the
# samples say which, and data that does not shrink by a fifth is sent as it is.
LEVEL = 1
WORTH = 0.8
SAMPLE, SAMPLES = 1 << 20, 4
OUT = 1 << 20  # the most a decompressor hands over at once: memory stays flat even for runs of zeros


@dataclass(frozen=True)
class Choice:
    """What a transfer uses and why: recorded in the manifest (backup) and the result (restore)."""

    method: str
    requested: str
    why: str
    link_rate: float | None = None  # bytes per second, when measured

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "requested": self.requested, "why": self.why,
                "linkBytesPerSecond": round(self.link_rate) if self.link_rate is not None else None}


def check(requested: str, methods: tuple[str, ...], option: str = "--compress") -> str:
    if requested not in methods:
        raise UsageError(f"{option} takes one of {', '.join(methods)}, not {requested!r}",
                      hint="xz is for restores only: busybox cannot compress xz in the pod." if requested == XZ
                      else None)
    return requested


def choose(requested: str, link_rate: float | None, ratio: float | None = None) -> Choice:
    """`auto` → gzip on a link slower than the pod's gzip (and, for a restore, data that shrinks)."""
    if requested != AUTO:
        return Choice(requested, requested, "as asked")
    if link_rate is None:
        return Choice(NONE, AUTO, "the link's rate could not be measured")
    measured = f"the link moved {rate(link_rate)}"
    if link_rate >= AUTO_BELOW:
        return Choice(NONE, AUTO, f"{measured}, faster than gzip in the pod", link_rate)
    if ratio is not None and ratio > WORTH:
        return Choice(NONE, AUTO, f"{measured}, but samples of the archive shrink only to {ratio:.0%}", link_rate)
    return Choice(GZIP, AUTO, f"{measured}, slower than gzip in the pod", link_rate)


def sample_ratio(path: Path, size: int) -> float:
    """How far samples spread over the archive shrink at the level a restore compresses with."""
    taken = packed = 0
    with open(path, "rb") as f:
        for i in range(SAMPLES):
            f.seek(max(0, size - SAMPLE) * i // max(1, SAMPLES - 1))
            data = f.read(SAMPLE)
            taken += len(data)
            packed += len(zlib.compress(data, LEVEL))
    return packed / taken if taken else 1.0


class _Encoder:
    def __init__(self, method: str) -> None:
        if method == GZIP:
            self._z: Any = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)  # 31: a gzip member, as `gzip -d` reads
        elif method == XZ:
            # CRC32: the check every xz decoder has (busybox's may lack CRC64 and SHA-256); preset 1 keeps
            # the dictionary (and the pod's memory) small.
            self._z = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=1)
        else:
            raise ValueError(method)

    def compress(self, data: bytes | memoryview) -> bytes:
        return bytes(self._z.compress(data))

    def flush(self) -> bytes:
        return bytes(self._z.flush())


def compressed(chunks: Iterable[bytes | memoryview], method: str, counter: list[int] | None = None,
               piece: int = 1 << 20) -> Iterator[bytes]:
    """`chunks` compressed with `method`, in pieces of about `piece` bytes (few, full frames on the link).

    `counter[0]` adds up the compressed bytes, which is what crossed the link.
    """
    encoder = _Encoder(method)
    pending = bytearray()
    for chunk in chunks:
        pending += encoder.compress(chunk)
        if len(pending) >= piece:
            if counter is not None:
                counter[0] += len(pending)
            yield bytes(pending)
            pending.clear()
    pending += encoder.flush()
    if counter is not None:
        counter[0] += len(pending)
    if pending:
        yield bytes(pending)


class Decoder:
    """A gzip stream from the pod, decompressed into `sink` as it arrives; `finish` demands its whole end.

    The output goes in pieces of at most `OUT` bytes: a frame of compressed zeros can stand for many MiB.
    """

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink = sink
        self.wire = 0
        self._z = zlib.decompressobj(31)

    def feed(self, data: bytes) -> None:
        self.wire += len(data)
        if self._z.eof:
            raise VerificationError("the compressed stream from the rescue pod goes on after its end")
        try:
            out = self._z.decompress(data, OUT)
            while True:
                if out:
                    self.sink(out)
                if not self._z.unconsumed_tail or self._z.eof:
                    break
                out = self._z.decompress(self._z.unconsumed_tail, OUT)
        except zlib.error as exc:
            raise VerificationError(f"the compressed stream from the rescue pod is damaged: {exc}") from None
        if self._z.unused_data or (self._z.eof and self._z.unconsumed_tail):
            raise VerificationError("the compressed stream from the rescue pod goes on after its end")

    def finish(self) -> None:
        if not self._z.eof:
            raise VerificationError("the compressed stream from the rescue pod was cut short (no gzip end)")
