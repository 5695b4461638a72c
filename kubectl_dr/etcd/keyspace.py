"""The keys and values an etcd snapshot holds at its last revision, read from the file itself.

etcd's MVCC store keeps every revision of every key in the bbolt bucket ``key``: the bucket key is the
revision (8-byte big-endian main revision, ``_``, 8-byte sub revision, and a trailing ``t`` for a
deletion), the value an ``mvccpb.KeyValue``. The bucket is ordered by revision, so the last record of a key
is its state at the snapshot's revision: a value, or a tombstone (deleted). Leases are in the bucket
``lease`` (``leasepb.Lease``: ID, TTL). This is what ``etcdutl snapshot restore`` replays, and what a
restore through the client API (external etcd, whose data dirs no pod can reach) writes back.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kubectl_dr.etcd import bbolt
from kubectl_dr.etcd.snapshot_file import TRAILER_SIZE, SnapshotCorruptError

_REVISION = struct.Struct(">q")


@dataclass(frozen=True)
class Value:
    data: bytes
    lease: int  # 0: no lease


@dataclass
class Keyspace:
    """Live keys at ``revision``, and the TTL of every lease one of them is attached to."""

    revision: int
    keys: dict[bytes, Value] = field(default_factory=dict)
    lease_ttls: dict[int, int] = field(default_factory=dict)

    def under(self, prefix: bytes) -> Keyspace:
        keys = {k: v for k, v in self.keys.items() if k.startswith(prefix)}
        used = {v.lease for v in keys.values() if v.lease}
        return Keyspace(self.revision, keys, {i: t for i, t in self.lease_ttls.items() if i in used})


def read(path: Path, *, has_trailer: bool = True, wanted: Callable[[bytes], bool] | None = None) -> Keyspace:
    """The keyspace of a snapshot file (verify it first: this reads, it does not check the trailer). With
    `wanted`, only the keys it accepts are kept: every value of a snapshot held at once is the database's
    size in memory, for a caller that needs one key."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size - (TRAILER_SIZE if has_trailer else 0)
        db = bbolt.BoltFile(fd, size)
        buckets = {bytes(e.key): e.bucket for e in db.root_entries() if e.bucket is not None}
        if b"key" not in buckets:
            raise SnapshotCorruptError(str(path), "the database has no \"key\" bucket: not an etcd v3 snapshot")
        space = Keyspace(revision=0)
        for entry in db.bucket_entries(b"key", buckets[b"key"]):
            if entry.value is None or len(entry.key) < 17:
                continue
            space.revision = _REVISION.unpack(entry.key[:8])[0]
            kv = _key_value(bytes(entry.value))
            key = kv.get(1, b"")
            assert isinstance(key, bytes)
            if wanted is not None and not wanted(key):
                continue
            if entry.key[17:18] == b"t":
                space.keys.pop(key, None)
            else:
                data, lease = kv.get(5, b""), kv.get(6, 0)
                assert isinstance(data, bytes) and isinstance(lease, int)
                space.keys[key] = Value(data, lease)
        if b"lease" in buckets:
            for entry in db.bucket_entries(b"lease", buckets[b"lease"]):
                if entry.value is not None:
                    record = _key_value(bytes(entry.value))
                    lease_id, ttl = record.get(1, 0), record.get(2, 0)
                    assert isinstance(lease_id, int) and isinstance(ttl, int)
                    space.lease_ttls[lease_id] = ttl
        return space
    except bbolt.BoltError as exc:
        raise SnapshotCorruptError(str(path), str(exc)) from None
    finally:
        os.close(fd)


def _key_value(raw: bytes) -> dict[int, bytes | int]:
    """The fields of a protobuf message: length-delimited ones as bytes, varints as signed int64."""
    fields: dict[int, bytes | int] = {}
    for number, value in _fields(raw):
        fields[number] = value
    return fields


def _fields(raw: bytes) -> Iterator[tuple[int, bytes | int]]:
    pos = 0
    while pos < len(raw):
        tag, pos = _varint(raw, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(raw, pos)
            yield number, value - (1 << 64) if value >= 1 << 63 else value
        elif wire == 2:
            length, pos = _varint(raw, pos)
            if pos + length > len(raw):
                raise bbolt.BoltError("a record of the key bucket is cut short")
            yield number, raw[pos : pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise bbolt.BoltError(f"a record of the key bucket has an unknown protobuf wire type {wire}")


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(raw) or shift > 63:
            raise bbolt.BoltError("a record of the key bucket holds a broken varint")
        byte = raw[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


_PROTOBUF_MAGIC = b"k8s\x00"  # kube-apiserver's protobuf storage encoding (runtime.Unknown after it)
_NAMESPACE_SUFFIX = b"/namespaces/kube-system"


def kube_system_uid(space: Keyspace) -> str | None:
    """The UID of the kube-system namespace stored in ``space`` (any prefix), as JSON or as protobuf.

    It is the cluster's identity (what the API shows as kube-system's metadata.uid), so a snapshot taken
    without the API still says which cluster it is of. None when the keyspace holds no single kube-system.
    """
    found = [v.data for k, v in space.keys.items() if is_kube_system_key(k)]
    return namespace_uid(found[0]) if len(found) == 1 else None


def is_kube_system_key(key: bytes) -> bool:
    """The key of a kube-system Namespace under any one-part prefix (/registry/namespaces/kube-system)."""
    return key.endswith(_NAMESPACE_SUFFIX) and key.count(b"/") == 3


def namespace_uid(data: bytes) -> str | None:
    """The metadata.uid of a Namespace as the API server stores it, JSON or protobuf; None if unreadable."""
    try:
        if data.startswith(_PROTOBUF_MAGIC):
            # runtime.Unknown{raw: 2} → Namespace{metadata: 1} → ObjectMeta{uid: 5}
            raw = _key_value(data[len(_PROTOBUF_MAGIC):]).get(2, b"")
            meta = _key_value(raw).get(1, b"") if isinstance(raw, bytes) else b""
            uid = _key_value(meta).get(5) if isinstance(meta, bytes) else None
            return uid.decode() if isinstance(uid, bytes) and uid else None
        value = json.loads(data).get("metadata", {}).get("uid")
        return str(value) if value else None
    except (bbolt.BoltError, ValueError, AttributeError, UnicodeDecodeError):
        return None
