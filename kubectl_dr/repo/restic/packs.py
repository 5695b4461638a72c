"""Pack files: `blob1 || … || blobN || encrypted header || header length (uint32 LE)`.

Each blob is encrypted on its own (IV, ciphertext, MAC). The header lists, for every blob, its type,
its stored (encrypted) length, in repository version 2 its plaintext length when the blob is zstd
compressed, and its ID (SHA-256 of the plaintext). A pack's name is the SHA-256 of all its bytes.
Blob types: 0 data / 1 tree stored as is, 2 data / 3 tree compressed.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from kubectl_dr.repo.restic import crypto
from kubectl_dr.repo.restic.nodes import ResticFormatError

DATA_BLOB, TREE_BLOB = "data", "tree"
_PLAIN_ENTRY = struct.Struct("<BI32s")
_COMPRESSED_ENTRY = struct.Struct("<BII32s")
_TYPE_CODE = {(DATA_BLOB, False): 0, (TREE_BLOB, False): 1, (DATA_BLOB, True): 2, (TREE_BLOB, True): 3}
_CODE_TYPE = {v: k for k, v in _TYPE_CODE.items()}
# restic's default pack size target (16 MiB); it accepts any size.
TARGET_PACK_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class BlobEntry:
    id: str
    type: str
    offset: int
    length: int  # stored bytes (IV + ciphertext + MAC)
    uncompressed_length: int  # 0 when stored uncompressed


class PackWriter:
    """Assembles one pack in one buffer (a pack is ≤ a few tens of MiB), hashing it as blobs are added.

    A blob is sealed straight into `buffer` (one of the repository's, reused from pack to pack, or a new
    one); a blob that is already sealed (copied from another pack) is copied in once. Joining separately
    sealed blobs into a new 16 MiB object at the end, and hashing that in one more pass, cost a copy into
    freshly allocated memory per blob and per pack, and held every pack twice in memory."""

    def __init__(self, key: crypto.Key, buffer: bytearray | None = None) -> None:
        self._key = key
        self.buffer = buffer if buffer is not None else bytearray()
        self._hash = hashlib.sha256()
        self.entries: list[BlobEntry] = []
        self.size = 0

    def add(self, blob_id: str, blob_type: str, sealed: bytes | bytearray, uncompressed_length: int) -> None:
        """A blob sealed elsewhere."""
        self.entries.append(BlobEntry(blob_id, blob_type, self.size, len(sealed), uncompressed_length))
        self._put(sealed)

    def seal(self, blob_id: str, blob_type: str, payload: bytes | bytearray | memoryview,
             uncompressed_length: int) -> None:
        """A blob's payload (its plaintext, or the zstd frame of it) encrypted into the pack."""
        start, end = self.size, self.size + len(payload) + crypto.OVERHEAD
        if len(self.buffer) < end:  # a new buffer grows pack by pack; a reused one holds a whole pack already
            self.buffer.extend(bytes(end - len(self.buffer)))
        with memoryview(self.buffer) as view, view[start:end] as sealed:
            self._key.seal_into(payload, sealed)
            self._hash.update(sealed)
        self.entries.append(BlobEntry(blob_id, blob_type, start, end - start, uncompressed_length))
        self.size = end

    def _put(self, data: bytes | bytearray) -> None:
        # In place over what a reused buffer held before; the buffer grows only past its old length.
        self.buffer[self.size:self.size + len(data)] = data
        self._hash.update(data)
        self.size += len(data)

    def finish(self) -> tuple[str, memoryview]:
        """(pack ID, the pack's bytes): a view of the buffer, valid until the buffer is reused; release it
        when stored."""
        header = b"".join(
            _COMPRESSED_ENTRY.pack(_TYPE_CODE[e.type, True], e.length, e.uncompressed_length, bytes.fromhex(e.id))
            if e.uncompressed_length else
            _PLAIN_ENTRY.pack(_TYPE_CODE[e.type, False], e.length, bytes.fromhex(e.id))
            for e in self.entries)
        sealed_header = self._key.seal(header)
        self._put(sealed_header)
        self._put(struct.pack("<I", len(sealed_header)))
        return self._hash.hexdigest(), memoryview(self.buffer)[:self.size]


def read_header(key: crypto.Key, tail: bytes, pack_size: int) -> list[BlobEntry]:
    """The blob list of a pack from its last bytes (`tail` must hold the whole header and its length)."""
    if len(tail) < 4:
        raise ResticFormatError("a pack is too short to hold a header")
    (hlen,) = struct.unpack("<I", tail[-4:])
    if hlen + 4 > len(tail) or hlen + 4 > pack_size:
        raise ResticFormatError(f"a pack's header length {hlen} does not fit the pack")
    header = key.open(tail[-4 - hlen:-4])
    entries: list[BlobEntry] = []
    offset, pos = 0, 0
    while pos < len(header):
        code = header[pos]
        if code not in _CODE_TYPE:
            raise ResticFormatError(f"a pack header has an unknown blob type {code}")
        blob_type, compressed = _CODE_TYPE[code]
        if compressed:
            _, length, ulen, raw_id = _COMPRESSED_ENTRY.unpack_from(header, pos)
            pos += _COMPRESSED_ENTRY.size
        else:
            _, length, raw_id = _PLAIN_ENTRY.unpack_from(header, pos)
            ulen = 0
            pos += _PLAIN_ENTRY.size
        entries.append(BlobEntry(raw_id.hex(), blob_type, offset, length, ulen))
        offset += length
    if offset + hlen + 4 != pack_size:
        raise ResticFormatError("a pack's blobs and header do not add up to its size")
    return entries
