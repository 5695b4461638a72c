"""`backups list | ls | cat --repo restic:REPO` on repositories restic wrote (no cluster needed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests import cli_runner, datasets, tables
from tests.cli_runner import clean_env, executable
from tests.restic.oracle import PASSWORD, restic, restic_json


def dr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli_runner.dr(*args, env=clean_env({"RESTIC_PASSWORD": PASSWORD, **(env or {})}), timeout=120)


def test_list_ls_and_cat_read_a_snapshot_restic_wrote(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    big = os.urandom(3 * (1 << 20) + 1)
    (src / "etc" / "app.conf").write_bytes(big)
    os.symlink("app.conf", src / "etc" / "link")
    os.chown(src / "etc" / "app.conf", 1000, 2000)
    repo = tmp_path / "repo"
    restic(repo, "init")
    restic(repo, "backup", str(src), "--host", "laptop", "--tag", "nightly")
    (snap,) = restic_json(repo, "snapshots")

    listed = dr("backups", "list", "--repo", f"restic:{repo}")
    assert listed.returncode == 0, listed.stderr
    rows = tables.rows(listed.stdout)
    assert [(r["ID"], r["HOST"], r["TAGS"], r["WRITER"]) for r in rows] == [(snap["short_id"], "laptop", "nightly",
                                                                            "restic")]

    ls = dr("backups", "ls", snap["short_id"], "etc", "--repo", f"restic:{repo}", "-o", "json")
    assert ls.returncode == 0, ls.stderr
    items = {i["path"]: i for i in json.loads(ls.stdout)["items"]}
    assert items["etc/app.conf"]["uid"] == 1000 and items["etc/app.conf"]["size"] == len(big)
    assert items["etc/link"]["target"] == "app.conf" and items["etc/link"]["mode"].startswith("l")

    out = tmp_path / "out"
    with open(out, "wb") as f:
        proc = subprocess.run([executable(), "backups", "cat", "latest", "etc/app.conf", "--repo",
                                             f"restic:{repo}"], stdout=f, stderr=-1,
                                            env=clean_env({"RESTIC_PASSWORD": PASSWORD}), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == big

    missing = dr("backups", "cat", "latest", "etc/nope", "--repo", f"restic:{repo}")
    assert missing.returncode == 1 and "not in the backup" in missing.stderr
    # The paths `restic ls` shows (under the snapshot's directory) name the same entries.
    shown = dr("backups", "ls", "latest", f"{src}/etc/link", "--repo", f"restic:{repo}", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    assert [i["path"] for i in json.loads(shown.stdout)["items"]] == ["etc/link"]
    elsewhere = dr("backups", "cat", "latest", "/etc/app.conf", "--repo", f"restic:{repo}")
    assert elsewhere.returncode == 1 and f"are under {src}" in elsewhere.stderr, elsewhere.stderr
    wrong = dr("backups", "list", "--repo", f"restic:{repo}", env={"RESTIC_PASSWORD": "nope"})
    assert wrong.returncode == 1 and "wrong password" in wrong.stderr


def test_restore_to_a_local_directory_whole_or_some_paths(tmp_path: Path) -> None:
    src = tmp_path / "src"
    datasets.build_app_tree(src)
    repo = tmp_path / "repo"
    restic(repo, "init")
    restic(repo, "backup", str(src))
    (snap,) = restic_json(repo, "snapshots")

    whole = dr("pvc", "restore", "data", "--repo", f"restic:{repo}", "--from", snap["short_id"], "--to-dir",
               str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    assert datasets.differences(datasets.snapshot(src, root_entry=False),
                                datasets.snapshot(tmp_path / "whole", root_entry=False)) == []

    some = dr("pvc", "restore", "data", "--repo", f"restic:{repo}", "--from", snap["short_id"], "--to-dir",
              str(tmp_path / "some"), "--include", "node_modules/tool", "--include", "./old", "-o", "json")
    assert some.returncode == 0, some.stderr
    assert json.loads(some.stdout) == {"kind": "PvcRestoreToDir", "dryRun": "none", "from": snap["id"],
                                       "directory": str(tmp_path / "some"), "include": ["node_modules/tool", "old"],
                                       "files": 2}
    got = sorted(os.fsdecode(p) for p in datasets.snapshot(tmp_path / "some", root_entry=False))
    assert got == ["node_modules", "node_modules/tool", "node_modules/tool/bin.js", "old"]

    escape = dr("pvc", "restore", "data", "--repo", f"restic:{repo}", "--from", snap["short_id"], "--to-dir",
                str(tmp_path / "x"), "--include", "../etc")
    assert escape.returncode == 1 and "inside the backup" in escape.stderr
    again = dr("pvc", "restore", "data", "--repo", f"restic:{repo}", "--from", snap["short_id"], "--to-dir",
               str(tmp_path / "some"))
    assert again.returncode == 1 and "not empty" in again.stderr


def test_verify_reads_every_blob_of_a_snapshot_and_finds_damage(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(3 << 20))
    repo = tmp_path / "repo"
    restic(repo, "init")
    restic(repo, "backup", str(src))
    ok = dr("backups", "verify", "latest", "--repo", f"restic:{repo}", "-o", "json")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["verified"] and result["dataBytes"] == 3 << 20 and result["unreadBlobs"] == 0
    assert result["readDataSubset"] == "100%"

    packs = sorted((repo / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    biggest = packs[-1]  # the data pack
    biggest.chmod(0o600)
    data = bytearray(biggest.read_bytes())
    data[100] ^= 0xFF
    biggest.write_bytes(bytes(data))
    bad = dr("backups", "verify", "latest", "--repo", f"restic:{repo}")
    assert bad.returncode == 1 and ("verification failed" in bad.stderr or "damaged" in bad.stderr), bad.stderr


def test_verify_reads_a_subset_as_restic_spells_it(tmp_path: Path) -> None:
    """`--read-data-subset n/t` reads group n of t: the t groups together read every data blob exactly once, so a
    nightly `1/5` … `5/5` covers the snapshot in five nights. `x%` and a fraction read a random share."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(24):  # small files: one data blob each
        (src / f"f{i}").write_bytes(os.urandom(1000 + i))
    repo = tmp_path / "repo"
    restic(repo, "init")
    restic(repo, "backup", str(src))
    groups = []
    for n in (1, 2, 3):
        run = dr("backups", "verify", "latest", "--repo", f"restic:{repo}", "--read-data-subset", f"{n}/3",
                 "-o", "json")
        assert run.returncode == 0, run.stderr
        groups.append(json.loads(run.stdout))
    assert [g["readDataSubset"] for g in groups] == ["1/3", "2/3", "3/3"]
    assert sum(g["dataBlobs"] for g in groups) == 24 and all(g["dataBlobs"] + g["unreadBlobs"] == 24 for g in groups)
    assert sum(g["dataBytes"] for g in groups) == sum(1000 + i for i in range(24))
    share = dr("backups", "verify", "latest", "--repo", f"restic:{repo}", "--read-data-subset", "50%", "-o", "json")
    assert share.returncode == 0, share.stderr
    assert json.loads(share.stdout)["readDataSubset"] == "50%"
    for wrong, says in (("4/3", "n must be 1 to t"), ("0%", "more than 0"), ("half", "is not a subset")):
        bad = dr("backups", "verify", "latest", "--repo", f"restic:{repo}", "--read-data-subset", wrong)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
    plain = dr("backups", "verify", "latest", "--repo", str(tmp_path / "plain"), "--read-data-subset", "1/5")
    assert plain.returncode == 2 and "checked whole" in plain.stderr, plain.stderr


def test_prune_applies_restic_forget_per_claim_and_restic_check_passes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    restic(repo, "init")
    src = tmp_path / "src"
    src.mkdir()
    for host in ("shop/db", "shop/cache"):
        for _ in range(3):
            (src / "data").write_bytes(os.urandom(300_000))
            restic(repo, "backup", str(src), "--host", host)
    before = restic_json(repo, "snapshots")
    expected = {s["id"] for g in restic_json(repo, "forget", "--dry-run", "--keep-last", "2") for s in g["keep"]}

    dry = dr("backups", "prune", "--keep-last", "2", "--repo", f"restic:{repo}", "--dry-run=client", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert {s["id"] for s in planned["snapshots"] if s["keep"]} == expected and planned["dryRun"]
    assert len(restic_json(repo, "snapshots")) == len(before)  # nothing changed

    refused = dr("backups", "prune", "--keep-last", "2", "--repo", f"restic:{repo}")
    assert refused.returncode == 1 and "--yes" in refused.stderr, refused.stderr
    done = dr("backups", "prune", "--keep-last", "2", "--repo", f"restic:{repo}", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"group shop/db {src}: keep 2, forgot 1" in done.stdout, done.stdout
    assert re.search(r"^removed [1-9][0-9]* packs? \(", done.stdout, re.M), done.stdout
    assert {s["id"] for s in restic_json(repo, "snapshots")} == expected
    restic(repo, "check", "--read-data")
    again = dr("backups", "prune", "--keep-last", "2", "--repo", f"restic:{repo}", "--yes", "-o", "json")
    assert again.returncode == 0 and json.loads(again.stdout)["packsRemoved"] == 0, again.stderr


def test_prune_keep_within_and_keep_tag_keep_what_restic_forget_keeps(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    restic(repo, "init")
    src = tmp_path / "src"
    src.mkdir()
    for i, (when, tag) in enumerate([("2026-01-01 10:00:00", "monthly"), ("2026-02-20 10:00:00", "x"),
                                     ("2026-03-01 10:00:00", "x"), ("2026-03-05 10:00:00", "x")]):
        (src / "data").write_bytes(os.urandom(100_000 + i))
        restic(repo, "backup", str(src), "--host", "shop/db", "--time", when, "--tag", tag)
    flags = ["--keep-within", "10d", "--keep-tag", "monthly"]
    expected = {s["id"] for g in restic_json(repo, "forget", "--dry-run", *flags) for s in g["keep"]}
    assert len(expected) == 3  # 2026-02-20 is 13 days before the newest: forgotten
    done = dr("backups", "prune", *flags, "--repo", f"restic:{repo}", "--yes", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert {s["id"] for s in restic_json(repo, "snapshots")} == expected
    reasons = {r for s in json.loads(done.stdout)["snapshots"] for r in s["reasons"]}
    assert {"within 10d", "has tags [monthly]"} <= reasons, reasons
    restic(repo, "check", "--read-data")

    bad = dr("backups", "prune", "--keep-within", "10 days", "--repo", f"restic:{repo}")
    assert bad.returncode == 2 and "--keep-within" in bad.stderr and "7d" in bad.stderr, bad.stderr
    plain = dr("backups", "prune", "--keep-within", "10d", "--repo", str(tmp_path / "plain"))
    assert plain.returncode == 2 and "restic repositories" in plain.stderr, plain.stderr
