"""restic 0.18 prune's repack flags (--max-repack-size, --repack-uncompressed, --repack-small, --repack-smaller-than,
--repack-cacheable-only), judged by the real restic: on the same repository, `restic prune --dry-run` with the
same flags would repack exactly the blobs and bytes ours repacks; after ours, restic finds nothing left to do
(or, under --max-repack-size, exactly the next share ours would take); `restic check --read-data` passes and the
kept snapshots restore unchanged."""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kubectl_dr.repo.restic import localfs, prune
from kubectl_dr.repo.restic.backend import LocalBackend
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.retention import Policy
from tests.cli_runner import clean_env, dr
from tests.restic.oracle import PASSWORD, restic, restic_binary, restic_json

PW = PASSWORD.encode()


def _restic_bytes(n: int) -> str:
    """restic's ui.FormatBytes."""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.3f} {unit}"
    return f"{n} B"


def _restic_plan(repo_dir: Path, flags: list[str]) -> tuple[str, str]:
    """restic prune --dry-run's "to repack" and "total prune" lines ("0 blobs / 0 B": nothing)."""
    proc = subprocess.run([restic_binary(), "-r", str(repo_dir), "prune", "--dry-run", *flags],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "RESTIC_PASSWORD": PASSWORD,
                               "RESTIC_CACHE_DIR": str(repo_dir.parent / ".cache")})
    assert proc.returncode == 0, proc.stderr
    found = dict(re.findall(r"^(to repack|total prune):\s+(.+?)\s*$", proc.stdout, re.M))
    assert set(found) == {"to repack", "total prune"}, proc.stdout
    return found["to repack"], found["total prune"]


def _options(flags: list[str]) -> prune.RepackOptions:
    args = {flag: flags[i + 1] if i + 1 < len(flags) else "" for i, flag in enumerate(flags)}
    smaller = prune.parse_size(args["--repack-smaller-than"], "x") if "--repack-smaller-than" in args else None
    return prune.RepackOptions(
        max_unused=prune.parse_max_unused(args["--max-unused"]) if "--max-unused" in args else None,
        max_repack_bytes=prune.parse_size(args["--max-repack-size"], "x") if "--max-repack-size" in args else None,
        repack_uncompressed="--repack-uncompressed" in flags, repack_small="--repack-small" in flags or bool(smaller),
        small_pack_bytes=smaller, cacheable_only="--repack-cacheable-only" in flags)


def _ours(repo_dir: Path, flags: list[str], *, dry_run: bool) -> prune.PruneResult:
    return prune.prune(Repository.open(LocalBackend(repo_dir), PW), Policy(), dry_run=dry_run,
                       repack=_options(flags))


@pytest.fixture(scope="module")
def many_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Twelve backups of a growing directory, each adding a 1 MiB random file (incompressible: stored
    uncompressed, as restic would not) and replacing one, the first six forgotten: a dozen small data packs,
    small tree packs, partly used packs."""
    base = tmp_path_factory.mktemp("repack")
    repo_dir, src = base / "repo", base / "src"
    src.mkdir()
    Repository.init(LocalBackend(repo_dir), PW)
    parent = None
    for i in range(12):
        (src / f"add-{i:02d}").write_bytes(os.urandom(1 << 20))
        (src / "changing").write_bytes(os.urandom(300_000))
        (src / "text").write_text("compressible line\n" * (2000 + i))
        parent = localfs.backup_dir(Repository.open(LocalBackend(repo_dir), PW), src, snapshot_path="/src",
                                    hostname="shop/db", parent=parent)
    assert parent is not None
    prune.prune(Repository.open(LocalBackend(repo_dir), PW), Policy(last=6), dry_run=False,
                repack=prune.RepackOptions(max_unused=prune.parse_max_unused("unlimited"), max_repack_bytes=0))
    return repo_dir, src, parent.id


@pytest.mark.parametrize("flags", [
    ["--max-unused", "0%"],
    ["--repack-small"],
    ["--repack-smaller-than", "2M"],
    ["--repack-uncompressed"],
    ["--repack-cacheable-only", "--max-unused", "0%"],
    ["--repack-small", "--repack-uncompressed", "--max-unused", "0%"],
], ids=lambda f: " ".join(f))
def test_repack_flags_agree_with_restic_prune(many_small: tuple[Path, Path, str], tmp_path: Path,
                                              flags: list[str]) -> None:
    original, src, latest = many_small
    repo_dir = tmp_path / "repo"
    shutil.copytree(original, repo_dir)
    theirs = _restic_plan(repo_dir, flags)[0]
    planned = _ours(repo_dir, flags, dry_run=True)
    assert f"{planned.blobs_repacked} blobs / {_restic_bytes(planned.bytes_repacked)}" == theirs, flags
    done = _ours(repo_dir, flags, dry_run=False)
    assert done.packs_repacked == planned.packs_repacked
    assert _restic_plan(repo_dir, flags) == ("0 blobs / 0 B", "0 blobs / 0 B")
    restic(repo_dir, "check", "--read-data")
    restic(repo_dir, "restore", latest, "--target", str(tmp_path / "out"))
    cmp = filecmp.dircmp(src, tmp_path / "out" / "src")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only


def test_the_flags_make_a_difference_here(many_small: tuple[Path, Path, str]) -> None:
    """The data above is one where each flag changes the plan (else agreeing with restic would prove little)."""
    repo_dir = many_small[0]
    default = _ours(repo_dir, [], dry_run=True).blobs_repacked
    small = _ours(repo_dir, ["--repack-small"], dry_run=True).blobs_repacked
    uncompressed = _ours(repo_dir, ["--repack-uncompressed"], dry_run=True).blobs_repacked
    everything = _ours(repo_dir, ["--max-unused", "0%"], dry_run=True).blobs_repacked
    cacheable = _ours(repo_dir, ["--repack-cacheable-only", "--max-unused", "0%"], dry_run=True).blobs_repacked
    assert small > default and uncompressed > default and everything > cacheable


def test_max_repack_size_stops_where_restic_stops_and_the_next_run_goes_on(many_small: tuple[Path, Path, str],
                                                                           tmp_path: Path) -> None:
    original, src, latest = many_small
    repo_dir = tmp_path / "repo"
    shutil.copytree(original, repo_dir)
    flags = ["--repack-uncompressed", "--max-repack-size", "3M"]
    unbounded = _ours(repo_dir, ["--repack-uncompressed"], dry_run=True)
    runs = 0
    while True:
        theirs = _restic_plan(repo_dir, flags)[0]
        planned = _ours(repo_dir, flags, dry_run=True)
        assert f"{planned.blobs_repacked} blobs / {_restic_bytes(planned.bytes_repacked)}" == theirs
        assert planned.bytes_repacked < 3 << 20
        assert planned.max_repack_reached or runs > 0  # the first plan is cut by the limit
        if not planned.packs_repacked:
            assert not planned.max_repack_reached  # nothing left to repack: the limit is not what stopped it
            break
        _ours(repo_dir, flags, dry_run=False)
        restic(repo_dir, "check", "--read-data")
        runs += 1
        assert runs < 20
    assert runs >= 2 and unbounded.bytes_repacked > 3 << 20  # the limit did split the work
    assert _restic_plan(repo_dir, ["--repack-uncompressed"])[0] == "0 blobs / 0 B"
    restic(repo_dir, "restore", latest, "--target", str(tmp_path / "out"))
    assert not filecmp.dircmp(src, tmp_path / "out" / "src").diff_files


def test_the_cli_takes_restics_flags_and_refuses_what_cannot_work(many_small: tuple[Path, Path, str],
                                                                   tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    shutil.copytree(many_small[0], repo_dir)
    env = clean_env({"RESTIC_PASSWORD": PASSWORD})
    at = ["--repo", f"restic:{repo_dir}"]
    dry = dr("backups", "prune", "--repack-small", "--repack-uncompressed", *at, "--dry-run=client", "-o", "json",
             env=env)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["repackSmall"] and plan["repackUncompressed"] and plan["blobsRepacked"] > 0
    assert f"{plan['blobsRepacked']} blobs / {_restic_bytes(plan['bytesRepacked'])}" == _restic_plan(
        repo_dir, ["--repack-small", "--repack-uncompressed"])[0]
    # restic 0.18 takes --repack-smaller-than 0 as --repack-small with its own small-pack size.
    zero = dr("backups", "prune", "--repack-smaller-than", "0", *at, "--dry-run=client", "-o", "json", env=env)
    assert zero.returncode == 0, zero.stderr
    zero_plan = json.loads(zero.stdout)
    assert f"{zero_plan['blobsRepacked']} blobs / {_restic_bytes(zero_plan['bytesRepacked'])}" == _restic_plan(
        repo_dir, ["--repack-smaller-than", "0"])[0] == _restic_plan(repo_dir, ["--repack-small"])[0]
    # The summary says whether --max-repack-size was reached.
    for size, reached in (("1G", False), ("1M", True)):
        got = dr("backups", "prune", "--repack-small", "--max-repack-size", size, *at, "--dry-run=client", env=env)
        assert got.returncode == 0, got.stderr
        assert f"--max-repack-size {size} {'reached' if reached else 'not reached'}" in got.stdout, got.stdout
    done = dr("backups", "prune", "--repack-small", "--repack-uncompressed", *at, "--yes", "-o", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert _restic_plan(repo_dir, ["--repack-small", "--repack-uncompressed"])[0] == "0 blobs / 0 B"
    restic(repo_dir, "check", "--read-data")
    assert len(restic_json(repo_dir, "snapshots")) == 6

    plain = dr("backups", "prune", "--repack-small", "--repo", str(tmp_path / "plain"), env=env)
    assert plain.returncode == 2 and "--repack-small applies to restic repositories" in plain.stderr
    for bad, says in ((["--max-repack-size", "lots"], "--max-repack-size 'lots'"),
                      (["--repack-smaller-than", "20M"], "at most the pack size")):
        got = dr("backups", "prune", *bad, *at, env=env)
        assert got.returncode == 2 and says in got.stderr, got.stderr
    helped = dr("backups", "prune", "--help", env=env)
    assert "--repack-cacheable-only" in helped.stdout and "--max-repack-size" in helped.stdout
