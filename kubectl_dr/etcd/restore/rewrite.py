"""Restore a snapshot's keys into a running etcd through its client API (external etcd).

Where the members' data dirs are out of reach (etcd on hosts that are not nodes of the cluster) the restore
writes the snapshot's state instead: under the API server's prefix, every key the snapshot lacks is deleted
and every key whose value differs is put, in transactions of at most `MAX_OPS` operations and `MAX_BYTES`
bytes (etcd's defaults refuse more than 128 operations or 1.5 MiB per request). The result is the
snapshot's state at a revision above everything any client has seen, which is what `--bump-revision`
achieves for a data-dir restore: watchers see ordinary events, nothing goes back in time.

It is idempotent: run again (after an interruption) it writes only what still differs. A key on a lease is
put on a new lease of the snapshot's TTL (a lease ID belongs to the cluster that granted it), so two keys
compare equal when their values match and both have a lease or both have none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubectl_dr import units
from kubectl_dr.etcd.client import REQUEST_TIMEOUT, Endpoint
from kubectl_dr.etcd.keyspace import Keyspace, Value

MAX_OPS = 100
MAX_BYTES = 1 << 20
PAGE = 1000
WRITE_TIMEOUT = 30.0
Progress = Callable[[str], None]


@dataclass
class Changes:
    put: int = 0
    deleted: int = 0
    unchanged: int = 0
    leases: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"put": self.put, "deleted": self.deleted, "unchanged": self.unchanged, "leasesGranted": self.leases}


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key with this prefix" (clientv3.GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def live(ep: Endpoint, prefix: bytes) -> dict[bytes, Value]:
    """Every key under ``prefix`` now (linearizable reads, a page at a time)."""
    found: dict[bytes, Value] = {}
    start, end = prefix, prefix_end(prefix)
    while True:
        resp = ep.client.kvstub.Range(ep.rpc.RangeRequest(key=start, range_end=end, limit=PAGE), REQUEST_TIMEOUT)
        for kv in resp.kvs:
            found[bytes(kv.key)] = Value(bytes(kv.value), int(kv.lease))
        if not resp.more or not resp.kvs:
            return found
        start = bytes(resp.kvs[-1].key) + b"\0"


def _same(a: Value, b: Value) -> bool:
    return a.data == b.data and bool(a.lease) == bool(b.lease)


def digest(keys: dict[bytes, Value]) -> str:
    """SHA-256 over the sorted keys and values: equal digests, equal keyspaces."""
    h = hashlib.sha256()
    for key in sorted(keys):
        value = keys[key].data
        h.update(len(key).to_bytes(8, "big") + key + len(value).to_bytes(8, "big") + value)
    return h.hexdigest()


def differences(target: Keyspace, now: dict[bytes, Value]) -> tuple[list[bytes], list[bytes], int]:
    """(keys to put, keys to delete, keys already equal)."""
    put = [k for k, v in target.keys.items() if k not in now or not _same(now[k], v)]
    delete = [k for k in now if k not in target.keys]
    return sorted(put), sorted(delete), len(target.keys) - len(put)


def rewrite(ep: Endpoint, target: Keyspace, prefix: bytes, say: Progress) -> Changes:
    """Make the keys under ``prefix`` equal the target's; returns what was written."""
    target = target.under(prefix)
    put, delete, unchanged = differences(target, live(ep, prefix))
    changes = Changes(unchanged=unchanged)
    say(f"{units.count(len(put), 'key')} to write, {len(delete)} to delete, {unchanged} already as in the snapshot")
    leases: dict[int, int] = {}
    for old in sorted({target.keys[k].lease for k in put if target.keys[k].lease}):
        ttl = max(target.lease_ttls.get(old, 0), 60)  # a lease the snapshot does not list: short-lived anyway
        resp = ep.client.leasestub.LeaseGrant(ep.rpc.LeaseGrantRequest(TTL=ttl, ID=0), REQUEST_TIMEOUT)
        leases[old] = int(resp.ID)
        changes.leases += 1
    ops: list[Any] = [ep.rpc.RequestOp(request_delete_range=ep.rpc.DeleteRangeRequest(key=k)) for k in delete]
    for k in put:
        v = target.keys[k]
        ops.append(ep.rpc.RequestOp(request_put=ep.rpc.PutRequest(key=k, value=v.data, lease=leases.get(v.lease, 0))))
    done = 0
    for batch in _batches(ops):
        ep.client.kvstub.Txn(ep.rpc.TxnRequest(compare=[], success=batch, failure=[]), WRITE_TIMEOUT)
        done += len(batch)
        if len(ops) > MAX_OPS:
            say(f"written {done}/{len(ops)}")
    changes.put, changes.deleted = len(put), len(delete)
    return changes


def _batches(ops: list[Any]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    size = 0
    for op in ops:
        n = op.ByteSize()
        if batch and (len(batch) >= MAX_OPS or size + n > MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(op)
        size += n
    if batch:
        yield batch
