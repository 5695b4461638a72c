"""Index files: which pack holds each blob, at which offset, how long, and (v2) its plaintext length.

    {"supersedes": [...], "packs": [{"id": PACK, "blobs": [{"id", "type", "offset", "length",
                                                            "uncompressed_length"?}]}]}

The repository's index is the union of every index file. A blob may sit in more than one pack (two
backups that raced, or a repack); any copy will do, so the first one seen is kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubectl_dr.repo.restic.nodes import ResticFormatError, check_id
from kubectl_dr.repo.restic.packs import DATA_BLOB, TREE_BLOB, BlobEntry


@dataclass(frozen=True)
class Location:
    pack: str
    type: str
    offset: int
    length: int
    uncompressed_length: int


class Index:
    def __init__(self) -> None:
        self.blobs: dict[str, Location] = {}
        self.packs: set[str] = set()

    def __contains__(self, blob_id: str) -> bool:
        return blob_id in self.blobs

    def add_pack(self, pack: str, entries: Iterable[BlobEntry]) -> None:
        self.packs.add(pack)
        for e in entries:
            self.blobs.setdefault(e.id, Location(pack, e.type, e.offset, e.length, e.uncompressed_length))

    def merge(self, data: bytes) -> None:
        for pack, entries in decode(data):
            self.add_pack(pack, entries)


def encode(packs: Iterable[tuple[str, list[BlobEntry]]]) -> bytes:
    doc = {"packs": [
        {"id": pack, "blobs": [
            {"id": e.id, "type": e.type, "offset": e.offset, "length": e.length,
             **({"uncompressed_length": e.uncompressed_length} if e.uncompressed_length else {})}
            for e in entries]}
        for pack, entries in packs]}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> list[tuple[str, list[BlobEntry]]]:
    try:
        doc: Any = json.loads(data)
        if isinstance(doc, list):  # repository version 1's first index format: a bare list of packs
            doc = {"packs": doc}
        result = []
        for pack in doc.get("packs") or []:
            entries = []
            for b in pack.get("blobs") or []:
                if b["type"] not in (DATA_BLOB, TREE_BLOB):
                    raise ResticFormatError(f"an index names an unknown blob type {b['type']!r}")
                vals = (b["offset"], b["length"], b.get("uncompressed_length", 0))
                if not all(isinstance(v, int) and 0 <= v < 2**32 for v in vals):
                    raise ResticFormatError("an index has an offset or length out of range")
                entries.append(BlobEntry(check_id(b["id"]), b["type"], *vals))
            result.append((check_id(pack["id"]), entries))
        return result
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ResticFormatError(f"an index file is malformed ({exc})") from exc
