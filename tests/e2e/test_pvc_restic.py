"""`pvc backup --repo restic:REPO` against the loopback cluster, with the real restic CLI as the judge:
the snapshot passes `restic check --read-data`, and `restic restore` gives back the volume exactly
(owners of uid 1000 and past 2^24, symlink owners, hard links, times before 1970 and after 2038, modes)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from tests.cli_runner import dr
from tests.datasets import build_app_tree, differences, make_claim, new_namespace, snapshot, volume_dir
from tests.restic.oracle import PASSWORD, restic, restic_json

PROGRESS = {"KUBECTL_DR_PROGRESS_INTERVAL": "1"}
WITH_PASSWORD = {**PROGRESS, "RESTIC_PASSWORD": PASSWORD}


def test_backup_into_a_restic_repository_restic_checks_and_restores_exactly(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "restic")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    build_app_tree(vol)
    (vol / "blob").write_bytes(os.urandom(3 * (1 << 20) + 5))
    os.chown(vol / "blob", 1000, 2000)
    os.utime(vol / "blob", (1_600_000_000, 1_600_000_000))
    before = snapshot(vol)
    repo = tmp_path / "repo"
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")

    # No repository yet and no terminal: refused without --yes, and nothing is created.
    refused = dr("pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "--password-file", str(pw),
                 cluster=cluster, extra_env=PROGRESS)
    assert refused.returncode == 1 and "restic init" in refused.stderr, refused.stderr
    assert not repo.exists()

    done = dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}",
              "--password-file", str(pw), "-o", "json", cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["hostname"] == f"{ns}/data" and result["paths"] == ["/data"]
    assert f"namespace={ns}" in result["tags"] and "claim=data" in result["tags"] and "kind=pvc" in result["tags"]

    restic(repo, "check", "--read-data")
    (listed,) = restic_json(repo, "snapshots")
    assert listed["id"] == result["id"]
    restic(repo, "restore", result["id"], "--target", str(tmp_path / "out"))
    got = tmp_path / "out" / "data"
    lost = {k for k in before if k.startswith(b"lost+found")}
    assert differences({k: v for k, v in before.items() if k not in lost}, snapshot(got)) == []
    assert os.lstat(got / "big-uid" / "link").st_uid == 1_000_680_000
    assert stat.S_IMODE(os.stat(got / "setuid-tool").st_mode) == 0o4755
    assert os.stat(got / "data.db").st_ino == os.stat(got / "data.db.hardlink").st_ino

    # The password from the environment, as restic reads it; a second backup names the first as parent.
    again = dr("pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "-o", "json",
               extra_env=WITH_PASSWORD, cluster=cluster, subprocess=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["parent"] == result["id"]
    wrong = dr("pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", cluster=cluster,
               extra_env={**PROGRESS, "RESTIC_PASSWORD": "no"})
    assert wrong.returncode == 1 and "wrong password" in wrong.stderr
    restic(repo, "check", "--read-data")

    # And back through kubectl dr: the app's volume damaged, restored from its latest snapshot with --clean.
    (vol / "data.db").write_bytes(b"damaged")
    os.unlink(vol / "old")
    (vol / "extra").write_text("new")
    back = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", "latest",
              "--clean", extra_env=WITH_PASSWORD, cluster=cluster, subprocess=True)
    assert back.returncode == 0, back.stderr
    assert differences(before, snapshot(vol)) == []


def test_a_snapshot_restic_made_of_a_directory_is_restored_into_a_claim(cluster: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_app_tree(src)
    (src / "blob").write_bytes(os.urandom(2 * (1 << 20) + 9))
    os.utime(src / "blob", (1_500_000_000, 1_500_000_000))
    repo = tmp_path / "repo"
    restic(repo, "init")
    restic(repo, "backup", str(src), "--host", "laptop")
    (theirs,) = restic_json(repo, "snapshots")
    ns = new_namespace(cluster, "restic")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    (vol / "stray").write_text("not in the snapshot")

    done = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from",
              theirs["short_id"], "--clean", extra_env=WITH_PASSWORD, cluster=cluster, subprocess=True)
    assert done.returncode == 0, done.stderr
    assert differences(snapshot(src), snapshot(vol)) == []

    # latest of this claim means a snapshot of host NS/data: restic's own has another host.
    none = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", "latest",
              extra_env=WITH_PASSWORD, cluster=cluster)
    assert none.returncode == 1 and f"no snapshot of {ns}/data" in none.stderr, none.stderr


def test_an_incremental_backup_reads_only_what_changed(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "restic")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    build_app_tree(vol)
    for i in range(40):
        (vol / f"f{i:02d}").write_bytes(os.urandom(256 * 1024))
        os.chown(vol / f"f{i:02d}", 1000, 2000)
    # A file changed within a second of a backup's listing is read again by the next backup (its change time
    # could hide a second write in the same tick): the data must be older than that to be reused.
    time.sleep(2.1)
    repo = f"restic:{tmp_path / 'repo'}"
    env = WITH_PASSWORD
    first = dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", repo, "-o", "json", extra_env=env,
               cluster=cluster, subprocess=True)
    assert first.returncode == 0, first.stderr
    full = json.loads(first.stdout)
    assert not full["incremental"]

    (vol / "f07").write_bytes(os.urandom(256 * 1024))  # changed content, same size
    (vol / "new").write_text("a new file")
    os.unlink(vol / "f08")
    os.symlink("f09", vol / "new-link")
    second = dr("pvc", "backup", "data", "-n", ns, "--repo", repo, "-o", "json", extra_env=env, cluster=cluster,
                subprocess=True)
    assert second.returncode == 0, second.stderr
    inc = json.loads(second.stdout)
    assert inc["incremental"] and inc["parent"] == full["id"]
    assert inc["receivedBytes"] < full["receivedBytes"] / 10, (inc["receivedBytes"], full["receivedBytes"])
    assert "unchanged files" in second.stderr

    restic(tmp_path / "repo", "check", "--read-data")
    restic(tmp_path / "repo", "restore", inc["id"], "--target", str(tmp_path / "out"))
    before = snapshot(vol)
    assert differences({k: v for k, v in before.items() if not k.startswith(b"lost+found")},
                       snapshot(tmp_path / "out" / "data")) == []

    forced = dr("pvc", "backup", "data", "-n", ns, "--repo", repo, "--force", "-o", "json", extra_env=env,
                cluster=cluster, subprocess=True)
    assert forced.returncode == 0, forced.stderr
    assert not json.loads(forced.stdout)["incremental"] and json.loads(forced.stdout)["storedBytes"] < 100_000


def test_include_restores_only_some_paths_into_a_claim(cluster: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_app_tree(src)
    repo = tmp_path / "repo"
    restic(repo, "init")
    restic(repo, "backup", str(src))
    (theirs,) = restic_json(repo, "snapshots")
    ns = new_namespace(cluster, "restic")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    (vol / "keep-me").write_text("outside the included paths: untouched")
    done = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from",
              theirs["short_id"], "--include", "node_modules/tool", "--include", "old",
              extra_env=WITH_PASSWORD, cluster=cluster, subprocess=True)
    assert done.returncode == 0, done.stderr
    got = snapshot(vol, root_entry=False)
    want = snapshot(src, root_entry=False)
    assert sorted(os.fsdecode(p) for p in got) == ["keep-me", "node_modules", "node_modules/tool",
                                                    "node_modules/tool/bin.js", "old"]
    for key in (b"node_modules/tool/bin.js", b"old", b"node_modules/tool"):
        assert got[key] == want[key], key
    clean = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from",
               theirs["short_id"], "--include", "old", "--clean", extra_env=WITH_PASSWORD, cluster=cluster,
               subprocess=True)
    assert clean.returncode == 2 and "exclude each other" in clean.stderr


def test_a_client_dry_run_creates_no_repository_and_no_pod(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "restic")
    make_claim(cluster, ns)
    repo = tmp_path / "repo"
    plan = dr("--dry-run=client", "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "-o", "json",
              extra_env=WITH_PASSWORD, cluster=cluster)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["dryRun"] == "client" and json.loads(plan.stdout)["repository"] == f"restic:{repo}"
    assert not repo.exists()
    pods = cluster.kubectl("get", "pods", "-n", ns, "-o", "name").stdout
    assert pods.strip() == ""
    # A plan or result may be pasted into a ticket: a rest: server's password is not in it (it once was).
    rest = dr("--dry-run=client", "pvc", "backup", "data", "-n", ns, "--repo", "restic:rest:http://u:s3cret@h:1/r/",
              "-o", "json", extra_env=WITH_PASSWORD, cluster=cluster)
    assert rest.returncode == 0 and "s3cret" not in rest.stdout + rest.stderr, rest.stdout + rest.stderr
    assert json.loads(rest.stdout)["repository"] == "restic:rest:http://u:***@h:1/r/"


def test_a_wrong_claim_name_creates_no_repository(cluster: Any, tmp_path: Path) -> None:
    """Even with --yes: the claim is looked up before the repository is opened or created (restic init)."""
    ns = new_namespace(cluster, "restic")
    repo = tmp_path / "repo"
    wrong = dr("--yes", "pvc", "backup", "nosuch", "-n", ns, "--repo", f"restic:{repo}", "-o", "json",
               extra_env=WITH_PASSWORD, cluster=cluster)
    assert wrong.returncode == 1 and 'persistentvolumeclaims "nosuch" not found' in wrong.stderr, wrong.stderr
    assert wrong.stdout == ""
    assert not repo.exists()
