"""`kubectl dr backups` run as the installed executable against a repository of real backups."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
from pathlib import Path

import pytest

from kubectl_dr.errors import DrError
from kubectl_dr.repo import LocalRepository, Repository
from tests import tables
from tests.cli_runner import clean_env, dr, executable


def _make(repo: Repository, type: str, source: dict[str, str], hint: str, data: bytes) -> str:
    with repo.create(type, source, hint) as writer:
        with writer.open_part("data.tar") as part:
            part.write(data)
        return writer.commit({"files": 1}).id


@pytest.fixture()
def repo(tmp_path: Path) -> Repository:
    return LocalRepository(tmp_path / "repo")


@pytest.fixture()
def filled(repo: Repository) -> dict[str, str]:
    ids = {}
    ids["a1"] = _make(repo, "pvc", {"namespace": "shop", "pvc": "data-db-0"}, "shop-data-db-0", b"one" * 1000)
    ids["a2"] = _make(repo, "pvc", {"namespace": "shop", "pvc": "data-db-0"}, "shop-data-db-0", b"two" * 1000)
    ids["s1"] = _make(repo, "etcd-snapshot", {"server": "https://cp:6443", "member": "cp-1"}, "cp", b"s" * 64)
    return ids


HEADERS = ["ID", "NAME", "TYPE", "SOURCE", "SIZE", "ENC", "SKIPPED", "VERIFIED", "AGE", "CLUSTER"]


def test_list_table_json_and_env_var(repo: Repository, filled: dict[str, str]) -> None:
    result = dr("backups", "list", "--repo", str(repo.path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == HEADERS
    assert {line.split()[0] for line in lines[1:]} == set(filled.values())
    assert any(line.split()[1:4] == ["shop/data-db-0", "pvc", "shop/data-db-0"] for line in lines[1:])

    env = clean_env({"KUBECTL_DR_REPO": str(repo.path)})
    as_json = dr("backups", "list", "-o", "json", "--type", "pvc", env=env)
    assert as_json.returncode == 0, as_json.stderr
    items = json.loads(as_json.stdout)["items"]
    assert [i["id"] for i in items] == [m.id for m in repo.list(type="pvc")]
    assert all(i["apiVersion"] == "kubectl-dr/v1" and i["parts"][0]["name"] == "data.tar" for i in items)


def test_list_shows_name_skipped_entries_and_verification(repo: Repository, filled: dict[str, str]) -> None:
    """NAME is --name (else what the source names), SKIPPED counts the entries left out as unreadable (not
    lost+found, left out by design), VERIFIED the last check: ok, damaged, or - never checked."""
    skipped = [{"path": "lost+found", "why": "lost+found at the volume root (mkfs and fsck make it again)"},
               {"path": "locked", "why": "unreadable file for uid 1000 (owner 0:0, mode 0600)"},
               {"path": "secret", "why": "unreadable directory (and its contents) for uid 1000 (owner 0:0, mode 0700)"}]
    with repo.create("pvc", {"namespace": "shop", "pvc": "data-db-0"}, "before-upgrade") as writer:
        with writer.open_part("data.tar") as part:
            part.write(b"named" * 100)
        named = writer.commit({"name": "before-upgrade", "skipped": skipped}).id
    repo.verify(filled["a1"])
    part = repo.path / filled["a2"] / "data.tar"
    part.write_bytes(part.read_bytes()[:-1] + b"X")
    with pytest.raises(DrError):
        repo.verify(filled["a2"])

    result = dr("backups", "list", "--repo", str(repo.path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [name for name, _ in tables.columns(lines[0])] == HEADERS
    rows = {row["ID"]: row for row in tables.rows(result.stdout)}
    assert {i: (r["NAME"], r["SKIPPED"], r["VERIFIED"]) for i, r in rows.items()} == {
        named: ("before-upgrade", "2", "-"),
        filled["a1"]: ("shop/data-db-0", "-", "ok"),
        filled["a2"]: ("shop/data-db-0", "-", "damaged"),
        filled["s1"]: ("cp-1", "-", "-"),
    }

    listed = dr("backups", "list", "--repo", str(repo.path), "-o", "json")
    assert listed.returncode == 0, listed.stderr
    items = {i["id"]: i for i in json.loads(listed.stdout)["items"]}
    assert (items[named]["name"], items[named]["skippedUnreadable"]) == ("before-upgrade", 2)
    assert items[named]["lastVerification"] is None and items[filled["s1"]]["skippedUnreadable"] is None
    assert items[filled["a1"]]["lastVerification"]["ok"] is True
    assert items[filled["a2"]]["lastVerification"]["ok"] is False
    assert all("path" not in i and i["location"] == str(repo.path / i["id"]) for i in items.values())


def test_list_default_location_is_xdg(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    repo = LocalRepository(xdg / "kubectl-dr" / "backups")
    backup_id = _make(repo, "pvc", {"pvc": "x"}, "x", b"x")
    env = clean_env({"XDG_DATA_HOME": str(xdg)})
    result = dr("backups", "list", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert [i["id"] for i in json.loads(result.stdout)["items"]] == [backup_id]


def test_empty_repository(tmp_path: Path) -> None:
    result = dr("backups", "list", "--repo", str(tmp_path / "none"))
    assert result.returncode == 0
    assert result.stdout == ""
    assert "No backups found" in result.stderr


def test_show_by_prefix_and_unknown_id(repo: Repository, filled: dict[str, str]) -> None:
    result = dr("backups", "show", filled["s1"][:22], "--repo", str(repo.path), "-o", "json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["id"] == filled["s1"] and shown["type"] == "etcd-snapshot"
    assert shown["location"] == str(repo.path / filled["s1"]) and "path" not in shown

    missing = dr("backups", "show", "nope", "--repo", str(repo.path))
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f'error: backup "nope" not found in {repo.path}',
        'Run "kubectl dr backups list" to see the backups.',
    ]


def test_show_is_a_table_of_fields_then_parts(repo: Repository, filled: dict[str, str]) -> None:
    """Like every result, `backups show` is a table by default: FIELD/VALUE rows of the manifest's main
    fields, a blank line, then one row per part; its location once (no `path` beside it)."""
    repo.verify(filled["a1"])
    result = dr("backups", "show", filled["a1"], "--repo", str(repo.path))
    assert result.returncode == 0, result.stderr
    fields_text, parts_text = result.stdout.rstrip("\n").split("\n\n")
    fields = [line.split(None, 1) for line in fields_text.splitlines()]
    assert fields[0] == ["FIELD", "VALUE"]
    values = dict((f[0], f[1]) for f in fields[1:])
    manifest = repo.get(filled["a1"]).manifest
    assert values["id"] == filled["a1"] and values["type"] == "pvc" and values["source"] == "shop/data-db-0"
    assert values["name"] == "shop/data-db-0" and values["size"] == "2.9 KiB (3000 bytes)"
    assert values["location"] == str(repo.path / filled["a1"]) and "path" not in values
    assert values["verified"].startswith("ok at ") and values["encryption"] == "-"
    assert "apiVersion" not in result.stdout  # not the YAML of before
    assert tables.rows(parts_text) == [{"PART": "data.tar", "SIZE": "2.9 KiB",
                                        "SHA256": manifest.part("data.tar").sha256, "STORED": "as is"}]

    as_table = dr("backups", "show", filled["a1"], "--repo", str(repo.path), "-o", "table")
    assert as_table.stdout == result.stdout
    never = dr("backups", "show", filled["s1"], "--repo", str(repo.path))
    assert f"verified      - (never verified: kubectl dr backups verify {filled['s1']})\n" in never.stdout


def test_verify_catches_damage(repo: Repository, filled: dict[str, str]) -> None:
    assert dr("backups", "verify", filled["a1"], "--repo", str(repo.path)).returncode == 0
    part = repo.path / filled["a1"] / "data.tar"
    stored = part.read_bytes()
    part.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))  # a constant could equal the byte
    result = dr("backups", "verify", filled["a1"], "--repo", str(repo.path))
    assert result.returncode == 1
    assert f'backup "{filled["a1"]}" is damaged: part "data.tar" has SHA-256' in result.stderr


def test_verify_shows_progress(repo: Repository) -> None:
    """A large backup takes minutes to verify: the user sees bytes, speed and ETA, then the result."""
    backup_id = _make(repo, "pvc", {"namespace": "shop", "pvc": "big"}, "big", os.urandom(24 << 20))
    env = clean_env({"KUBECTL_DR_PROGRESS_INTERVAL": "0"})
    result = dr("backups", "verify", backup_id, "--repo", str(repo.path), env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"verify {backup_id}: ") and "of ~24.0 MiB" in line and "ETA" in line
               for line in lines), lines
    assert lines[-1].startswith(f"verify {backup_id}: 24.0 MiB in ") and lines[-1].endswith("(done)"), lines
    assert tables.rows(result.stdout) == [{"ID": backup_id, "VERIFIED": "ok", "PARTS": "1", "SIZE": "24.0 MiB",
                                           "CHECKED": "size,sha256", "RECORDED": "yes"}]


def test_progress_without_a_terminal_every_few_seconds(repo: Repository) -> None:
    """KUBECTL_DR_PROGRESS_SECONDS sets how often a line comes when stderr is no terminal (0: with every
    chunk); each line says the bytes so far of the total, a rate and an ETA, in binary units."""
    backup_id = _make(repo, "pvc", {"namespace": "shop", "pvc": "big"}, "big", os.urandom(8 << 20))
    env = clean_env({"KUBECTL_DR_PROGRESS_SECONDS": "0"})
    result = dr("backups", "verify", backup_id, "--repo", str(repo.path), env=env)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"verify {backup_id}: ")]
    assert any(re.fullmatch(rf"verify {backup_id}: \d+\.\d MiB of ~8\.0 MiB \(\d+%\), \d+\.\d [KMG]iB/s, ETA \S+",
                            line) for line in lines[:-1]), lines
    assert re.fullmatch(rf"verify {backup_id}: 8\.0 MiB in \S+, \d+\.\d [KMG]iB/s \(done\)", lines[-1]), lines


def test_list_and_delete_say_sizes_in_binary_units(repo: Repository) -> None:
    """One style for sizes in tables and sentences alike: `20.1 MiB`, the unit after a space."""
    backup_id = _make(repo, "pvc", {"namespace": "shop", "pvc": "data"}, "data", b"x" * (3 << 19))
    listed = dr("backups", "list", "--repo", str(repo.path))
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert dict(zip(re.split(r" {3,}", header), re.split(r" {3,}", row), strict=True))["SIZE"] == "1.5 MiB", row
    refused = dr("backups", "delete", backup_id, "--repo", str(repo.path), input=b"")
    assert refused.returncode == 1
    assert f'delete backup "{backup_id}" (1.5 MiB)' in refused.stderr, refused.stderr


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under root with its mode and contents: what a dry run must leave exactly as it was."""
    return {str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def test_verify_dry_run_records_nothing(repo: Repository, filled: dict[str, str]) -> None:
    """A client dry run checks the backup and says so, but writes no verification record, good or bad."""
    before = _tree(repo.path)
    checked = dr("backups", "verify", filled["a1"], "--repo", str(repo.path), "--dry-run=client")
    assert checked.returncode == 0, checked.stderr
    row = tables.rows(checked.stdout)[0]
    assert (row["ID"], row["VERIFIED"], row["RECORDED"]) == (filled["a1"], "ok", "no")
    assert "the outcome was not recorded (dry run)" in checked.stderr
    assert _tree(repo.path) == before

    part = repo.path / filled["a2"] / "data.tar"
    stored = part.read_bytes()
    part.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))
    before = _tree(repo.path)
    damaged = dr("backups", "verify", filled["a2"], "--repo", str(repo.path), "--dry-run=client")
    assert damaged.returncode == 1
    assert f'backup "{filled["a2"]}" is damaged' in damaged.stderr
    assert _tree(repo.path) == before
    shown = dr("backups", "show", filled["a2"], "--repo", str(repo.path), "-o", "json")
    assert json.loads(shown.stdout)["lastVerification"] is None  # the key is there, as in `backups list`


def test_delete_needs_yes_without_a_terminal(repo: Repository, filled: dict[str, str]) -> None:
    refused = dr("backups", "delete", filled["a1"], "--repo", str(repo.path))
    assert refused.returncode == 1
    assert "without confirmation: there is no terminal to ask on and --yes was not given" in refused.stderr
    assert (repo.path / filled["a1"]).is_dir()

    done = dr("backups", "delete", filled["a1"], "--repo", str(repo.path), "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f'backup "{filled["a1"]}" deleted\n'
    assert not (repo.path / filled["a1"]).exists()


def test_prune_keep_last(repo: Repository, filled: dict[str, str]) -> None:
    dry = dr("backups", "prune", "--keep-last", "1", "--repo", str(repo.path), "--dry-run=client", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["removed"] == [filled["a1"]] and plan["dryRun"] is True
    assert (repo.path / filled["a1"]).is_dir()

    result = dr("backups", "prune", "--keep-last", "1", "--repo", str(repo.path), "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f'backup "{filled["a1"]}" deleted\n'
    assert sorted(os.listdir(repo.path)) == sorted([filled["a2"], filled["s1"]])

    bad = dr("backups", "prune", "--keep-last", "-1", "--repo", str(repo.path))
    assert bad.returncode == 2


def test_prune_dry_run_shows_what_is_kept_and_the_rule_that_keeps_it(repo: Repository, filled: dict[str, str]
                                                                      ) -> None:
    """As `restic forget --dry-run`: per series, the backups kept with the rules that keep them, then the
    ones that would go; nothing is removed."""
    before = _tree(repo.path)
    prune = dr("backups", "prune", "--keep-last", "1", "--keep-daily", "1", "--repo", str(repo.path),
               "--dry-run=client")
    assert prune.returncode == 0, prune.stderr
    blocks = prune.stdout.rstrip("\n").split("\n\n")
    assert len(blocks) == 2, prune.stdout
    etcd, pvc = (block.splitlines() for block in blocks)  # series in name order
    assert pvc[0] == "series pvc shop/data-db-0: keep 1, would delete 1 (dry run)"
    assert pvc[1].split() == ["KEEP", "CREATED", "REASONS"]
    assert pvc[2].split()[0] == filled["a2"] and pvc[2].endswith("   last, daily")
    assert pvc[3].split() == ["DELETE", "CREATED"] and pvc[4].split()[0] == filled["a1"]
    assert etcd[0] == "series etcd-snapshot cp-1: keep 1, would delete 0 (dry run)"
    assert etcd[2].split()[0] == filled["s1"] and etcd[2].endswith("   last, daily") and len(etcd) == 3
    assert _tree(repo.path) == before


def test_dry_runs_say_would(repo: Repository, filled: dict[str, str], tmp_path: Path) -> None:
    """A dry run's results on stdout say what would happen, never that it happened; nothing changes."""
    before = _tree(repo.path)
    delete = dr("backups", "delete", filled["a1"], "--repo", str(repo.path), "--dry-run=client")
    assert delete.returncode == 0, delete.stderr
    assert delete.stdout == f'backup "{filled["a1"]}" would be deleted (dry run)\n'

    prune = dr("backups", "prune", "--keep-last", "1", "--repo", str(repo.path), "--dry-run=client")
    assert prune.returncode == 0, prune.stderr
    assert "would delete 1 (dry run)" in prune.stdout and " deleted" not in prune.stdout

    target = tmp_path / "copies"
    copy = dr("backups", "copy", filled["s1"], "--repo", str(repo.path), "--to", str(target), "--dry-run=client")
    assert copy.returncode == 0, copy.stderr
    assert [line.split() for line in copy.stdout.splitlines()] == [
        ["ID", "RESULT", "LOCATION"], [filled["s1"], "would", "copy", str(target / filled["s1"])]]
    assert not target.exists()
    assert _tree(repo.path) == before


def test_copy_dry_run_says_present_for_a_backup_the_target_has(repo: Repository, filled: dict[str, str],
                                                               tmp_path: Path) -> None:
    """A dry run's rows are what the real copy would print: `present`, not `would copy`, for one already there."""
    target = tmp_path / "copies"
    first = dr("backups", "copy", filled["a1"], "--repo", str(repo.path), "--to", str(target))
    assert first.returncode == 0, first.stderr
    before = _tree(target)
    copy = dr("backups", "copy", "--all", "--type", "pvc", "--repo", str(repo.path), "--to", str(target),
              "--dry-run=client")
    assert copy.returncode == 0, copy.stderr
    rows = {line.split()[0]: line.split()[1:-1] for line in copy.stdout.splitlines()[1:]}
    assert rows == {filled["a1"]: ["present"], filled["a2"]: ["would", "copy"]}
    assert json.loads(dr("backups", "copy", "--all", "--type", "pvc", "--repo", str(repo.path), "--to", str(target),
                         "--dry-run=client", "-o", "json").stdout)["present"] == [filled["a1"]]
    assert _tree(target) == before


def test_a_crafted_id_is_reported_and_never_copied_out(repo: Repository, filled: dict[str, str],
                                                       tmp_path: Path) -> None:
    """`../../evilid` in a manifest: listed as a problem, skipped by `copy --all`, nothing outside the target."""
    manifest = repo.path / filled["a1"] / "manifest.json"
    manifest.write_text(manifest.read_text().replace(f'"id": "{filled["a1"]}"', '"id": "../../evilid"'))
    listed = dr("backups", "list", "--repo", str(repo.path), "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert "evilid" not in listed.stdout and "invalid backup ID '../../evilid'" in listed.stderr
    target = tmp_path / "deep" / "er" / "target"
    copied = dr("backups", "copy", "--all", "--to", str(target), "--repo", str(repo.path), "-o", "json")
    assert copied.returncode == 0, copied.stderr
    assert sorted(json.loads(copied.stdout)["copied"]) == sorted([filled["a2"], filled["s1"]])
    assert sorted(os.listdir(target)) == sorted([filled["a2"], filled["s1"]])
    assert not list(tmp_path.rglob("evilid"))

    long = dr("backups", "show", "a" * 300, "--repo", str(repo.path))
    assert long.returncode == 1
    assert long.stderr.startswith("error: 'aaaa") and "is not a valid backup ID: it is 300 bytes long (at most 200)" \
        in long.stderr and "unexpected" not in long.stderr


def test_an_unknown_repository_scheme_is_a_usage_error(repo: Repository, filled: dict[str, str],
                                                       tmp_path: Path) -> None:
    """`--to gs://b/p` used to make a directory named `gs:` here and report a copy."""
    work = tmp_path / "work"
    work.mkdir()
    for args in (["backups", "copy", filled["a1"], "--repo", str(repo.path), "--to", "gs://b/p"],
                 ["backups", "list", "--repo", "gs://c/p"],
                 ["schedule", "print", "--crontab", "--what", "copy", "--repo", str(repo.path), "--to", "gs://b/p"]):
        refused = dr(*args, cwd=work)
        assert refused.returncode == 2, refused.stdout
        assert "unknown repository scheme" in refused.stderr and "s3://BUCKET/PREFIX" in refused.stderr
    env = clean_env({"KUBECTL_DR_REPO": "restic:/x"})
    refused = dr("backups", "list", env=env, cwd=work)
    assert refused.returncode == 2 and "KUBECTL_DR_REPO" in refused.stderr
    assert os.listdir(work) == []


@pytest.mark.parametrize("command", [["list"], ["prune", "--keep-last", "1", "--dry-run=client"]])
def test_an_unknown_type_is_a_usage_error_naming_the_valid_ones(
    repo: Repository, filled: dict[str, str], command: list[str]
) -> None:
    result = dr("backups", *command, "--type", "bogus", "--repo", str(repo.path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert "bogus" in result.stderr
    for valid in ("pvc", "etcd-snapshot", "control-plane"):
        assert valid in result.stderr
    assert "No backups found" not in result.stderr


def test_type_etcd_means_etcd_snapshots(repo: Repository, filled: dict[str, str]) -> None:
    result = dr("backups", "list", "--type", "etcd", "--repo", str(repo.path), "-o", "json")
    assert result.returncode == 0, result.stderr
    assert [i["id"] for i in json.loads(result.stdout)["items"]] == [filled["s1"]]


def test_verify_of_an_encrypted_backup_without_a_key_names_stored_only(repo: Repository, tmp_path: Path) -> None:
    import pyrage

    recipient = str(pyrage.x25519.Identity.generate().to_public())
    with repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "shop-db", recipients=[recipient]) as writer:
        with writer.open_part("data.tar") as part:
            part.write(b"secret" * 100)
        backup_id = writer.commit({"files": 1}).id
    env = clean_env({"XDG_CONFIG_HOME": str(tmp_path / "no-config")})
    refused = dr("backups", "verify", backup_id, "--repo", str(repo.path), env=env)
    assert refused.returncode == 1
    assert "--identity" in refused.stderr and "--stored-only" in refused.stderr, refused.stderr


def _on_terminal(args: list[str], answer: bytes) -> tuple[int, bytes]:
    """Run kubectl-dr with a pseudo-terminal as stdin and stderr, answer its question, return (exit, screen)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([executable(), *args], stdin=slave, stdout=subprocess.PIPE, stderr=slave,
                            env=clean_env())
    os.close(slave)
    screen = bytearray()
    answered = False
    while proc.poll() is None or select.select([master], [], [], 0.2)[0]:
        if select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        if not answered and b"[y/N]:" in screen:
            os.write(master, answer)
            answered = True
    proc.wait(timeout=30)
    os.close(master)
    return proc.returncode, bytes(screen)


def test_delete_asks_on_a_terminal(repo: Repository, filled: dict[str, str]) -> None:
    """The one gate asks on a terminal: no keeps the backup, yes deletes it."""
    args = ["backups", "delete", filled["a1"], "--repo", str(repo.path)]
    code, screen = _on_terminal(args, b"n\n")
    assert code == 1 and f'Delete backup "{filled["a1"]}"'.encode() in screen, screen
    assert b"aborted: nothing was changed" in screen
    assert (repo.path / filled["a1"]).is_dir()
    code, screen = _on_terminal(args, b"y\n")
    assert code == 0, screen
    assert not (repo.path / filled["a1"]).exists()
