"""`kubectl dr pvc backup` → wipe → `restore` gives back the exact tree, checked on the volume's disk."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests import tables
from tests.cli_runner import dr
from tests.datasets import (
    build_roundtrip,
    differences,
    make_claim,
    managed_pods,
    new_namespace,
    snapshot,
    volume_dir,
    wipe,
)

PROGRESS = {"KUBECTL_DR_PROGRESS_INTERVAL": "1"}


def test_backup_wipe_restore_is_identical(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ns = new_namespace(cluster, "rt")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    build_roundtrip(vol, big_bytes=24 << 20)
    before = snapshot(vol)
    repo = tmp_path / "repo"

    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "--name", "first", "-o", "json",
                cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    result = json.loads(backup.stdout)
    part = result["parts"][0]
    transfer = result["details"]["transfer"]
    assert transfer["sha256Pod"] == transfer["sha256Local"] == part["sha256"]
    assert transfer["size"] == part["size"] == (repo / result["id"] / "data.tar").stat().st_size
    assert result["source"]["pvc"] == "data" and result["source"]["namespace"] == ns
    assert result["source"]["accessModes"] == ["ReadWriteOnce"]
    assert result["details"]["archive"]["hardLinks"] == 3
    assert result["details"]["rescuePod"]["image"].startswith("busybox")
    assert f"backup {ns}/data:" in backup.stderr and "(done)" in backup.stderr  # progress on stderr
    assert managed_pods(cluster, ns) == []
    assert snapshot(vol) == before  # a backup changes nothing

    # The archive busybox wrote is a tar GNU tar reads back into the same tree. It holds the volume's
    # entries, not its root directory (whose owner, mode and time are in the entry record).
    gnu = tmp_path / "gnu"
    gnu.mkdir()
    subprocess.run(["tar", "-x", "-p", "--numeric-owner", "-f", str(repo / result["id"] / "data.tar"),
                    "-C", str(gnu)], check=True)
    assert differences({k: v for k, v in before.items() if k != b"."}, snapshot(gnu, root_entry=False)) == []
    assert [p["name"] for p in result["parts"]] == ["data.tar", "entries.jsonl"]

    # Without --clean, what the archive does not contain stays.
    wipe(vol)
    (vol / "not-in-backup").write_text("stays")
    restore = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", "--yes",
                 "-o", "json", cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert restore.returncode == 0, restore.stderr
    assert json.loads(restore.stdout)["backup"] == result["id"]
    assert "verifying backup" in restore.stderr and f"restore {ns}/data:" in restore.stderr
    after = snapshot(vol)
    assert after.pop(b"not-in-backup").content
    before_root, after_root = before.pop(b"."), after.pop(b".")
    assert differences(before, after) == []
    assert (before_root.mode, before_root.uid, before_root.gid) == (after_root.mode, after_root.uid, after_root.gid)

    # With --clean, the volume ends up exactly as backed up.
    (vol / "small" / "d00" / "extra").write_text("goes")
    clean = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", result["id"], "--yes",
               "--clean", cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert clean.returncode == 0, clean.stderr
    assert differences({b".": before_root, **before}, snapshot(vol)) == []
    assert managed_pods(cluster, ns) == []


def test_restore_without_yes_and_terminal_refuses(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ns = new_namespace(cluster, "rty")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    (vol / "file").write_text("one")
    repo = tmp_path / "repo"
    assert dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), cluster=cluster, extra_env=PROGRESS,
              subprocess=True).returncode == 0
    (vol / "file").write_text("two")
    refused = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", cluster=cluster,
                 extra_env=PROGRESS)
    assert refused.returncode == 1
    assert "error: refusing to restore " in refused.stderr, refused.stderr
    assert "without confirmation: there is no terminal to ask on and --yes was not given" in refused.stderr
    assert "ANOTHER claim" not in refused.stderr
    assert (vol / "file").read_text() == "two"
    assert managed_pods(cluster, ns) == []

    # A backup of one claim named by its ID for another: said in the plan and in the question, loudly.
    make_claim(cluster, ns, "db")
    listed = dr("backups", "list", "--repo", str(repo), "-o", "json", cluster=cluster)
    backup_id = json.loads(listed.stdout)["items"][0]["id"]
    plan = dr("pvc", "restore", "db", "-n", ns, "--repo", str(repo), "--from", backup_id, "--dry-run=client",
              cluster=cluster)
    assert plan.returncode == 0, plan.stderr
    assert f"from backup {backup_id} (of {ns}/data) into {ns}/db" in plan.stdout
    assert f"the backup is of another claim, {ns}/data" in plan.stdout
    asked = dr("pvc", "restore", "db", "-n", ns, "--repo", str(repo), "--from", backup_id, cluster=cluster)
    assert asked.returncode == 1 and f"into {ns}/db from a backup of ANOTHER claim, {ns}/data" in asked.stderr
    assert managed_pods(cluster, ns) == []


def test_backup_and_restore_print_their_results_as_tables(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """kubectl get's shape for results: one header, one row, the same facts as -o json; SHA256 ties them."""
    ns = new_namespace(cluster, "shape")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    (vol / "file").write_text("one")
    repo = tmp_path / "repo"
    made = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "--name", "before-upgrade", cluster=cluster,
              extra_env=PROGRESS, subprocess=True)
    assert made.returncode == 0, made.stderr
    [backup] = tables.rows(made.stdout)
    assert list(backup) == ["ID", "NAME", "ENTRIES", "SKIPPED", "SIZE", "SHA256"]
    assert (backup["NAME"], backup["ENTRIES"], backup["SKIPPED"]) == ("before-upgrade", "2", "0"), made.stdout
    assert backup["ID"].endswith("-pvc-before-upgrade") and "note:" not in made.stderr

    (vol / "file").write_text("two")
    restored = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", backup["ID"], "--yes",
                  cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert restored.returncode == 0, restored.stderr
    [row] = tables.rows(restored.stdout)
    assert list(row) == ["PVC", "FROM", "ENTRIES", "REMOVED", "SIZE", "SHA256", "ORIGIN"]
    assert list(row.values()) == [f"{ns}/data", backup["ID"], "2", "0", backup["SIZE"], backup["SHA256"], "-"]
    assert (vol / "file").read_text() == "one"


def test_a_backup_of_an_empty_volume_restores_without_allow_empty(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An empty volume is what the user backed up: its entry record says so, and the restore takes it as it is
    (with --clean: the volume emptied). The same archive as a plain tar file has no record: --allow-empty."""
    ns = new_namespace(cluster, "empty")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    repo = tmp_path / "repo"
    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster,
                extra_env=PROGRESS, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    backup_id = json.loads(backup.stdout)["id"]
    (vol / "written-later").write_text("goes with --clean")

    plan = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", "--clean",
              "--dry-run=client", cluster=cluster, extra_env=PROGRESS)
    assert plan.returncode == 0, plan.stderr
    assert "the backup holds an empty volume" in plan.stdout, plan.stdout
    assert (vol / "written-later").exists()

    restore = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", "--clean",
                 "--yes", cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert restore.returncode == 0, restore.stderr
    assert "the backup holds an empty volume" in restore.stderr
    assert list(vol.iterdir()) == []
    assert managed_pods(cluster, ns) == []

    plain = tmp_path / "empty.tar"
    plain.write_bytes((repo / backup_id / "data.tar").read_bytes())
    refused = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", str(plain), "--yes",
                 cluster=cluster, extra_env=PROGRESS)
    assert refused.returncode == 1
    assert "holds no entries" in refused.stderr and "--allow-empty" in refused.stderr


def test_diff_against_a_tar_file_reads_like_diff_u(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ns = new_namespace(cluster, "diff")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    (vol / "grows").write_text("a")
    (vol / "extra").write_text("x")
    os.utime(vol / "grows", (1_764_590_400, 1_764_590_400))
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "new").write_text("n")
    (src / "grows").write_text("abc")
    os.utime(src / "grows", (1_764_590_460, 1_764_590_460))
    tar = tmp_path / "volume.tar"
    subprocess.run(["tar", "--format=ustar", "-cf", str(tar), "-C", str(src), "grows", "dir"], check=True)

    text = dr("pvc", "diff", "data", "-n", ns, "--from", str(tar), cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        f"--- volume {ns}/data (live)",
        f"+++ tar file {tar} (what a restore writes)",
        "+ dir/",
        "+ dir/new",
        "- extra",
        "~ grows  size 1 → 3, mtime 2025-12-01T12:00:00Z → 2025-12-01T12:01:00Z",
        f"a restore would write the 3 entries of the tar file {tar}: 2 new, 1 changed, 0 as they are; "
        "with --clean it would also remove 1 entry only the volume holds",
    ]
    assert "restoring" not in text.stderr

    as_json = json.loads(dr("pvc", "diff", "data", "-n", ns, "--from", str(tar), "-o", "json", cluster=cluster,
                            extra_env=PROGRESS, subprocess=True).stdout)
    assert as_json["file"] == str(tar) and as_json["backup"] is None
    assert as_json["summary"] == {"entries": 3, "added": 2, "changed": 1, "unchanged": 0, "removed": 1,
                                  "needsClean": 0}
    assert as_json["differences"][-1]["fields"]["size"] == {"old": 1, "new": 3}
    # --exit-code: 1 when they differ, as kubectl diff; 0 once the volume holds the tar file exactly.
    differs = dr("pvc", "diff", "data", "-n", ns, "--from", str(tar), "--exit-code", cluster=cluster)
    assert differs.returncode == 1 and "a restore would write" in differs.stdout, differs.stderr
    restored = dr("pvc", "restore", "data", "-n", ns, "--from", str(tar), "--clean", "--yes", cluster=cluster)
    assert restored.returncode == 0, restored.stderr
    same = dr("pvc", "diff", "data", "-n", ns, "--from", str(tar), "--exit-code", "-o", "json", cluster=cluster)
    assert same.returncode == 0 and json.loads(same.stdout)["identical"] is True, same.stdout + same.stderr

    # The restore plan counts the same entries.
    plan = dr("pvc", "restore", "data", "-n", ns, "--from", str(tar), "--dry-run=client", cluster=cluster,
              extra_env=PROGRESS)
    assert plan.returncode == 0, plan.stderr
    assert "would restore 3 entries" in plan.stdout
    assert managed_pods(cluster, ns) == []
