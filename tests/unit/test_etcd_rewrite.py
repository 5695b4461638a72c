"""A snapshot's keyspace, read from the file and written back into a live etcd (3.4 and 3.5, real members)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubectl_dr.etcd.client import Endpoint
from kubectl_dr.etcd.keyspace import Value, read
from kubectl_dr.etcd.restore.rewrite import digest, live, rewrite
from kubectl_dr.etcd.topology import Direct
from tests.cluster import etcd_versions
from tests.cluster.etcd_proc import EtcdProcess, start_etcd


@pytest.fixture(params=sorted(etcd_versions.VERSIONS))
def member(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EtcdProcess]:
    version = etcd_versions.VERSIONS[request.param]
    if not version.etcd.exists():
        pytest.fail(f"etcd {request.param} is not installed at {version.etcd}: run scripts/quickstart.sh")
    proc = start_etcd(tmp_path / "etcd", binary=version.etcd, extra_args=["--max-request-bytes=2097152"])
    yield proc
    proc.stop()


def _endpoint(proc: EtcdProcess) -> Endpoint:
    return Endpoint(proc.client_url, Direct((proc.client_url,)))


def _snapshot(ep: Endpoint, path: Path) -> Path:
    with open(path, "wb") as out:
        ep.snapshot(out.write)
    return path


def test_round_trip_writes_only_the_difference_and_keeps_other_prefixes(member: EtcdProcess, tmp_path: Path) -> None:
    with _endpoint(member) as ep:
        c = ep.client
        lease = c.lease(600)
        c.put("/registry/pods/a", b"A" * 10)
        c.put("/registry/events/b", b"event", lease=lease)
        c.put("/registry/pods/c", b"C")
        c.put("/registry/pods/gone", b"deleted before the snapshot")
        c.delete("/registry/pods/gone")
        big = os.urandom(300_000)  # spans bbolt overflow pages
        c.put("/registry/secrets/big", big)
        c.put("/other/x", b"before")
        expected = {k: v.data for k, v in live(ep, b"/registry/").items()}
        snap = _snapshot(ep, tmp_path / "snap.db")
        before = ep.status().revision

        space = read(snap)
        assert space.revision == before
        assert {k: v.data for k, v in space.under(b"/registry/").keys.items()} == expected
        assert b"/registry/pods/gone" not in space.keys
        assert space.keys[b"/registry/events/b"].lease == lease.id
        assert space.lease_ttls[lease.id] == 600

        # After the snapshot: one deleted, one changed (and off its lease), one created, one outside the prefix.
        c.delete("/registry/pods/a")
        c.put("/registry/events/b", b"changed")
        c.put("/registry/pods/new", b"made after the snapshot")
        c.put("/other/x", b"after")
        lines: list[str] = []
        changes = rewrite(ep, space, b"/registry/", lines.append)
        assert (changes.put, changes.deleted, changes.unchanged, changes.leases) == (2, 1, 2, 1)
        now = live(ep, b"/registry/")
        assert digest(now) == digest(space.under(b"/registry/").keys)
        assert now[b"/registry/events/b"].lease not in (0, lease.id)  # a new lease
        ttl = c.get_lease_info(now[b"/registry/events/b"].lease)
        assert 500 < int(ttl.TTL) <= 600
        assert c.get("/other/x")[0] == b"after"  # not the API server's keys: untouched
        assert ep.status().revision > before  # forward, never back: watchers see events

        again = rewrite(ep, space, b"/registry/", lines.append)
        assert (again.put, again.deleted) == (0, 0)
        # Counted in words, as every message counts: "2 keys", "1 key", never "key(s)".
        assert lines[0] == "2 keys to write, 1 to delete, 2 already as in the snapshot"
        assert lines[-1] == "0 keys to write, 0 to delete, 4 already as in the snapshot"


def test_many_and_large_keys_go_in_several_transactions(member: EtcdProcess, tmp_path: Path) -> None:
    with _endpoint(member) as ep:
        c = ep.client
        for i in range(250):
            c.put(f"/registry/configmaps/ns/cm-{i:04d}", f"value {i}".encode())
        for i in range(3):
            c.put(f"/registry/secrets/ns/big-{i}", os.urandom(700_000))
        snap = _snapshot(ep, tmp_path / "snap.db")
        space = read(snap)
        for i in range(250):
            c.delete(f"/registry/configmaps/ns/cm-{i:04d}")
        c.delete_prefix("/registry/secrets/")
        for i in range(150):
            c.put(f"/registry/pods/ns/p-{i}", b"x")
        lines: list[str] = []
        changes = rewrite(ep, space, b"/registry/", lines.append)
        assert (changes.put, changes.deleted) == (253, 150)
        assert any(line.startswith("written ") for line in lines)
        assert digest(live(ep, b"/registry/")) == digest(space.under(b"/registry/").keys)


def test_value_equality_ignores_lease_ids_but_not_having_one(member: EtcdProcess, tmp_path: Path) -> None:
    with _endpoint(member) as ep:
        c = ep.client
        lease = c.lease(300)
        c.put("/registry/leased", b"v", lease=lease)
        space = read(_snapshot(ep, tmp_path / "snap.db"))
        c.put("/registry/leased", b"v")  # same value, no lease now: still put back on a lease
        changes = rewrite(ep, space, b"/registry/", lambda _: None)
        assert changes.put == 1 and live(ep, b"/registry/")[b"/registry/leased"].lease != 0
        assert rewrite(ep, space, b"/registry/", lambda _: None).put == 0
        assert space.keys[b"/registry/leased"] == Value(b"v", lease.id)
