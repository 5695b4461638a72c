"""Forget and prune of a restic repository, judged by the real restic CLI: the same snapshots kept as
`restic forget` keeps, `restic check --read-data` passes after a prune and after a prune cut before any
of its writes or removals, and what the kept snapshots hold restores unchanged."""

from __future__ import annotations

import dataclasses
import filecmp
import json
import os
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kubectl_dr.repo.restic import localfs, prune
from kubectl_dr.repo.restic.backend import DATA, LOCKS, LocalBackend
from kubectl_dr.repo.restic.nodes import NS
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.retention import Duration, Policy
from tests.cli_runner import clean_env, dr
from tests.restic.oracle import PASSWORD, restic, restic_binary, restic_json

PW = PASSWORD.encode()
DAY = 86_400 * NS


class _Cut(Exception):
    pass


class CutAfter(LocalBackend):
    """A local backend whose process 'dies' (raises) instead of making its n-th change (a file written
    or removed); its lock still goes, as it does when a prune is interrupted by a signal."""

    def __init__(self, root: Path, changes: int) -> None:
        super().__init__(root)
        self.left = changes

    def _step(self, what: str) -> None:
        if self.left == 0:
            raise _Cut(f"cut before {what}")
        self.left -= 1

    def save(self, kind: str, name: str, data: bytes) -> None:
        if kind != LOCKS:
            self._step(f"writing {kind}/{name[:8]}")
        super().save(kind, name, data)

    def remove(self, kind: str, name: str) -> None:
        if kind != LOCKS:
            self._step(f"removing {kind}/{name[:8]}")
        super().remove(kind, name)


def _volume(root: Path, seed: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (root / f"f{i}").write_bytes(os.urandom(200_000 + seed * 1000 + i))
    (root / "shared").write_bytes(b"same in every backup" * 5000)
    return root


def _three_backups(tmp_path: Path) -> Path:
    repo_dir = tmp_path / "repo"
    Repository.init(LocalBackend(repo_dir), PW)
    parent = None
    for seed in range(3):
        repo = Repository.open(LocalBackend(repo_dir), PW)
        parent = localfs.backup_dir(repo, _volume(tmp_path / "v", seed), snapshot_path="/v", hostname="shop/db",
                                    parent=parent)
    return repo_dir


def test_forget_keeps_what_restic_forget_keeps(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    repo = Repository.init(LocalBackend(repo_dir), PW)
    first = localfs.backup_dir(repo, _volume(tmp_path / "v", 0), snapshot_path="/v", hostname="shop/db")
    base = first.time - 400 * DAY
    # Two claims; several snapshots a day, across weeks, months and a year boundary.
    offsets = [0, 1, 2, 3, 7, 8, 14, 15, 30, 31, 45, 60, 61, 90, 200, 365, 366, 380, 399]
    for host in ("shop/db", "shop/cache"):
        for k, days in enumerate(offsets):
            for hour in (1, 13) if k % 3 == 0 else (5,):
                tags = ["nightly", "keep"] if k % 5 == 0 else ["nightly"] if k % 2 == 0 else []
                snap = dataclasses.replace(first, time=base + days * DAY + hour * 3600 * NS + k, id="",
                                           hostname=host, tags=tags)
                repo.save_snapshot(snap)
    within = Duration.parse
    policies = [Policy(last=3), Policy(daily=4, weekly=3), Policy(last=1, monthly=5, yearly=2),
                Policy(hourly=5, daily=2), Policy(weekly=40),
                # restic's --keep-within counts back from each group's newest snapshot, months as Go's AddDate
                Policy(within=within("30d")), Policy(within=within("1m5d")), Policy(within=within("1y1m")),
                Policy(within=within("36h"), weekly=2), Policy(within=within("2m10d12h"), last=2),
                # --keep-tag: all of a list's tags, any of the lists; an empty tag keeps untagged snapshots
                Policy(tags=(("keep",),)), Policy(tags=(("nightly", "keep"), ("absent",)), last=2),
                Policy(tags=(("",),)), Policy(tags=(("nightly",),), within=within("3m"), monthly=2)]
    for policy in policies:
        flags = [a for rule in ("last", "hourly", "daily", "weekly", "monthly", "yearly")
                 if getattr(policy, rule) for a in (f"--keep-{rule}", str(getattr(policy, rule)))]
        flags += ["--keep-within", str(policy.within)] if policy.within else []
        flags += [a for tags in policy.tags for a in ("--keep-tag", ",".join(tags))]
        groups = restic_json(repo_dir, "forget", "--dry-run", *flags)
        theirs = {s["id"] for g in groups for s in g["keep"] or []}
        ours = {d.snapshot.id for d in prune.forget.apply(repo.snapshots(), policy) if d.keep}
        assert ours == theirs, policy
        assert 0 < len(ours) < len(repo.snapshots())


def test_prune_removes_what_only_forgotten_snapshots_used(tmp_path: Path) -> None:
    repo_dir = _three_backups(tmp_path)
    before = sum(size for _, size in LocalBackend(repo_dir).list(DATA))
    repo = Repository.open(LocalBackend(repo_dir), PW)
    plan = prune.prune(repo, Policy(last=1), dry_run=True)
    assert len(plan.forgotten) == 2 and len(restic_json(repo_dir, "snapshots")) == 3  # a dry run changes nothing
    done = prune.prune(repo, Policy(last=1), dry_run=False)
    assert done.packs_removed >= 1 and done.bytes_freed > 0
    restic(repo_dir, "check", "--read-data")
    after = sum(size for _, size in LocalBackend(repo_dir).list(DATA))
    assert after < before * 0.6, (before, after)  # two of three volumes' unique data went
    snaps = restic_json(repo_dir, "snapshots")
    assert len(snaps) == 1
    restic(repo_dir, "restore", snaps[0]["id"], "--target", str(tmp_path / "out"))
    cmp = filecmp.dircmp(tmp_path / "v", tmp_path / "out" / "v")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    # restic finds nothing left to prune, and a second prune of ours changes nothing
    again = prune.prune(Repository.open(LocalBackend(repo_dir), PW), Policy(last=1), dry_run=False)
    assert again.packs_removed == 0 and not again.forgotten


def test_a_prune_cut_at_every_step_leaves_a_valid_repository(tmp_path: Path) -> None:
    cuts = 0
    for changes in range(0, 40):
        repo_dir = _three_backups(tmp_path / str(changes))
        try:
            prune.prune(Repository.open(CutAfter(repo_dir, changes), PW), Policy(last=1), dry_run=False,
                        repack_over=0.0)
        except _Cut:
            cuts += 1
            restic(repo_dir, "check", "--read-data")
            assert list(LocalBackend(repo_dir).list(LOCKS)) == []
            # whatever step it stopped at, running the prune again finishes it
            prune.prune(Repository.open(LocalBackend(repo_dir), PW), Policy(last=1), dry_run=False)
            restic(repo_dir, "check", "--read-data")
            assert len(restic_json(repo_dir, "snapshots")) == 1
            continue
        restic(repo_dir, "check", "--read-data")
        break  # this run needed fewer changes than allowed: every cut point has been tried
    assert cuts >= 5  # two snapshots, a new pack, the index, old indexes, old packs


def test_durations_read_as_restic_reads_them_and_count_back_as_go_does() -> None:
    assert Duration.parse("1y2m3d4h") == Duration(1, 2, 3, 4) and str(Duration.parse(" 14d ")) == "14d"
    assert Duration.parse("2d3d") == Duration(days=3)  # a unit given twice: the last counts, as in restic
    for bad in ("", "7", "7w", "d", "-1d", "1.5d", "1d 2h"):
        with pytest.raises(ValueError, match="not a duration"):
            Duration.parse(bad)
    march31 = int(datetime(2025, 3, 31, 12, tzinfo=timezone.utc).timestamp()) * NS + 7
    # Go's AddDate(0, -1, 0) of March 31 is "February 31", which is March 3 (2025 is no leap year)
    march3 = int(datetime(2025, 3, 3, 12, tzinfo=timezone.utc).timestamp()) * NS + 7
    assert Duration(months=1).before_ns(march31) == march3
    assert Duration(days=1, hours=13).before_ns(march31) == march31 - 37 * 3600 * NS
    assert Duration(years=3000).before_ns(march31) is None


def _restic_would_prune(repo_dir: Path, max_unused: str) -> tuple[str, str]:
    """What `restic prune --dry-run --max-unused LIMIT` would repack and in total prune ("0 blobs / 0 B": nothing)."""
    # not through tests.restic.oracle.restic: its -q silences the very summary read here
    proc = subprocess.run([restic_binary(), "-r", str(repo_dir), "prune", "--dry-run", "--max-unused", max_unused],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "RESTIC_PASSWORD": PASSWORD,
                               "RESTIC_CACHE_DIR": str(repo_dir.parent / ".cache")})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    found = dict(re.findall(r"^(to repack|total prune):\s+(.+?)\s*$", out, re.M))
    assert set(found) == {"to repack", "total prune"}, out
    return found["to repack"], found["total prune"]


def test_max_unused_repacks_as_restic_prune_does_and_restic_finds_nothing_left(tmp_path: Path) -> None:
    """Three files in one pack; a second backup replaces one; the first is forgotten, which leaves that pack
    a third unused. Under --max-unused 50 % it stays (restic agrees there is nothing to do); under 0 % it is
    repacked (and restic agrees again); the CLI takes the flag alone (no --keep rule: nothing forgotten)."""
    repo_dir = tmp_path / "repo"
    src = tmp_path / "v"
    src.mkdir()
    for name in ("a", "b", "c"):
        (src / name).write_bytes(os.urandom(3_000_000))
    repo = Repository.init(LocalBackend(repo_dir), PW)
    first = localfs.backup_dir(repo, src, snapshot_path="/v", hostname="shop/db")
    (src / "b").write_bytes(os.urandom(3_000_000))
    second = localfs.backup_dir(Repository.open(LocalBackend(repo_dir), PW), src, snapshot_path="/v",
                                hostname="shop/db", parent=first)
    packs_before = {name for name, _ in LocalBackend(repo_dir).list(DATA)}

    half = prune.prune(Repository.open(LocalBackend(repo_dir), PW), Policy(last=1), dry_run=False,
                       max_unused=prune.parse_max_unused("50%"))
    assert [d.snapshot.id for d in half.forgotten] == [first.id]
    assert half.packs_repacked == 0 and half.unused_kept >= 3_000_000
    restic(repo_dir, "check", "--read-data")
    assert _restic_would_prune(repo_dir, "50%") == ("0 blobs / 0 B", "0 blobs / 0 B")
    # ours and restic's decide alike around the share left unused (a quarter of the repository here)
    for limit in ("0%", "10%", "20%", "30%", "40%", "8M", "1M", "unlimited"):
        ours = prune.prune(Repository.open(LocalBackend(repo_dir), PW), Policy(), dry_run=True,
                           max_unused=prune.parse_max_unused(limit))
        theirs = _restic_would_prune(repo_dir, limit)[0]
        assert (ours.packs_repacked > 0) == (theirs != "0 blobs / 0 B"), (limit, ours, theirs)

    env = clean_env({"RESTIC_PASSWORD": PASSWORD})
    bad = dr("backups", "prune", "--max-unused", "120%", "--repo", f"restic:{repo_dir}", env=env)
    assert bad.returncode == 2 and "below 100" in bad.stderr, bad.stderr
    plain = dr("backups", "prune", "--max-unused", "5%", "--repo", str(tmp_path / "plain"), env=env)
    assert plain.returncode == 2 and "restic repositories" in plain.stderr, plain.stderr
    done = dr("backups", "prune", "--max-unused", "0%", "--repo", f"restic:{repo_dir}", "--yes", "-o", "json",
              env=env)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["packsRepacked"] >= 1 and data["unusedBytesKept"] == 0 and data["maxUnused"] == "0%"
    assert all(s["keep"] for s in data["snapshots"])  # no --keep rule: nothing forgotten
    restic(repo_dir, "check", "--read-data")
    assert _restic_would_prune(repo_dir, "0%") == ("0 blobs / 0 B", "0 blobs / 0 B")
    assert packs_before - {name for name, _ in LocalBackend(repo_dir).list(DATA)}  # the partly used pack went
    restic(repo_dir, "restore", second.id, "--target", str(tmp_path / "out"))
    cmp = filecmp.dircmp(src, tmp_path / "out" / "v")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only


def test_max_unused_reads_restics_forms() -> None:
    assert prune.parse_max_unused("5%")(95_000) == 5_000
    assert prune.parse_max_unused("0%")(10**9) == 0
    assert prune.parse_max_unused("100M")(1) == 100 << 20 and prune.parse_max_unused("2k")(0) == 2048
    assert prune.parse_max_unused("unlimited")(0) > 10**18
    for bad in ("100%", "-1%", "x%", "5 MB", ""):
        with pytest.raises(ValueError, match="max-unused"):
            prune.parse_max_unused(bad)
