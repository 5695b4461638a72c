"""Retention with restic's meaning, per series, on a real repository with an injected clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kubectl_dr.repo import BackupCorruptError, LocalRepository, Manifest, Policy, RepoError
from kubectl_dr.repo.retention import plan, series_key

UTC = timezone.utc


def _manifest(moment: datetime, type: str = "pvc", **source: str) -> Manifest:
    return Manifest(id=moment.strftime("%Y%m%dT%H%M%SZ"), type=type, created_at=moment, tool_version="t",
                    source=source or {"namespace": "shop", "pvc": "db"})


def _kept(manifests: list[Manifest], policy: Policy) -> list[str]:
    return [d.manifest.id for d in plan(manifests, policy, tz=UTC) if d.keep]


def test_restic_rules_by_count_and_by_time_bucket() -> None:
    start = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    # Every 6 hours for 70 days: 4 a day.
    every = [_manifest(start + timedelta(hours=6 * i)) for i in range(4 * 70)]
    newest = every[-1]
    assert _kept(every, Policy(last=3)) == [m.id for m in every[-3:]][::-1]
    # hourly 5: the newest of each of the 5 most recent hours that have a backup (6 hours apart here).
    assert _kept(every, Policy(hourly=5)) == [m.id for m in every[-5:]][::-1]
    daily = _kept(every, Policy(daily=3))
    assert daily == [m.id for m in (every[-1], every[-5], every[-9])]
    assert all(m.endswith("T183000Z") for m in daily)  # the last of each day
    weekly = _kept(every, Policy(weekly=2))
    assert weekly[0] == newest.id and len(weekly) == 2
    # 2026-03-11 is a Wednesday: the week before ends on Sunday 2026-03-08, with its last backup at 18:30.
    assert weekly[1] == "20260308T183000Z"
    monthly = _kept(every, Policy(monthly=3))
    assert monthly == [newest.id, "20260228T183000Z", "20260131T183000Z"]
    assert _kept(every, Policy(yearly=1)) == [newest.id]
    # A backup kept by any rule is kept; the rules add up.
    combined = _kept(every, Policy(last=2, daily=3, monthly=3))
    assert set(combined) == set(_kept(every, Policy(last=2))) | set(daily) | set(monthly)
    assert len(combined) == 2 + 2 + 2  # the newest counts for all three, the second for last only


def test_only_buckets_that_have_a_backup_count() -> None:
    days = [datetime(2026, 5, d, 12, tzinfo=UTC) for d in (1, 2, 9, 20)]
    assert _kept([_manifest(d) for d in days], Policy(daily=3)) == ["20260520T120000Z", "20260509T120000Z",
                                                                    "20260502T120000Z"]


def test_series_are_what_a_backup_is_of() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    a1 = _manifest(t, namespace="shop", pvc="db", server="https://old:6443", capacity="1Gi")
    a2 = _manifest(t + timedelta(hours=1), namespace="shop", pvc="db", server="https://new:6443", capacity="2Gi")
    assert series_key(a1) == series_key(a2) == "pvc shop/db"
    s = _manifest(t, "etcd-snapshot", cluster="https://cp:6443", member="m1", node="cp-1")
    assert series_key(s) == "etcd-snapshot https://cp:6443 m1"
    direct = _manifest(t, "etcd-snapshot", etcdCluster="8e9e05c52164694d", endpoint="https://10.0.0.1:2379",
                       member="m1")
    assert series_key(direct) == "etcd-snapshot 8e9e05c52164694d m1"
    other = _manifest(t, "control-plane", cluster="prod", node="cp-1")
    assert series_key(other) == 'control-plane {"cluster": "prod", "node": "cp-1"}'
    # Each node's files are their own series: cp-2's newer backup does not count against cp-1's only one.
    cp2 = _manifest(t + timedelta(hours=1), "control-plane", cluster="prod", node="cp-2")
    assert sorted(_kept([other, cp2], Policy(last=1))) == sorted([other.id, cp2.id])
    assert _kept([a1, a2], Policy(last=1)) == [a2.id]


def test_the_newest_verified_backup_is_never_removed(tmp_path: Path) -> None:
    """A series whose newest backup was found damaged keeps the next one that is intact, whatever the
    rules say; --keep-last 0 keeps exactly that one."""
    moments = iter(datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=i) for i in range(100))
    repo = LocalRepository(tmp_path / "repo", clock=lambda: next(moments))
    ids = []
    for i in range(3):
        with repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "db") as w:
            with w.open_part("data.tar") as part:
                part.write(b"%d" % i)
            ids.append(w.commit().id)
    newest = repo.path / ids[2] / "data.tar"
    newest.write_bytes(b"X")
    with pytest.raises(BackupCorruptError):
        repo.verify(ids[2])
    result = repo.prune(keep_last=1)
    assert result.kept == [ids[2], ids[1]] and result.reasons[ids[1]] == ["newest verified"]
    assert result.removed == [ids[0]]
    assert [m.id for m in repo.list()] == [ids[2], ids[1]]
    result = repo.prune(keep_last=0)
    assert result.removed == [ids[2]] and [m.id for m in repo.list()] == [ids[1]]
    with pytest.raises(RepoError, match="no retention rule given"):
        repo.prune(Policy())
