"""An incremental restore from a restic repository against the loopback cluster: only what the volume lacks
crosses the wire (counted exactly), what a uid-1000 app changed behind the same size and mtime is caught
by the hashes computed in the pod, and the volume then matches the snapshot as the app and `restic restore`
see it. An interrupted incremental restore leaves the app stopped, and a rerun finishes it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from kubectl_dr import units
from tests import tables
from tests.cli_runner import clean_env, dr, executable
from tests.datasets import build_app_tree, differences, make_claim, managed_pods, new_namespace, snapshot, volume_dir
from tests.polling import eventually
from tests.restic.oracle import PASSWORD, restic

ENV = {"RESTIC_PASSWORD": PASSWORD}
FILE = 256 * 1024


PROGRESS_ENV = {"KUBECTL_DR_PROGRESS_INTERVAL": "1", **ENV}


def app_write(path: Path, data: bytes, *, keep_time: bool = False) -> None:
    """What an app running as uid 1000 writes: its owner, and with `keep_time` the old mtime put back."""
    old = os.lstat(path) if keep_time else None
    path.write_bytes(data)
    os.chown(path, 1000, 2000)
    if old is not None:
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))


def without_lost(tree: dict[bytes, Any]) -> dict[bytes, Any]:
    return {k: v for k, v in tree.items() if not k.startswith(b"lost+found")}


def test_an_incremental_restore_sends_only_what_differs_and_the_volume_matches(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "rinc")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    build_app_tree(vol)
    for i in range(30):
        app_write(vol / f"f{i:02d}", os.urandom(FILE))
    # A file changed within a second of the backup's listing is never trusted later (its change time could
    # hide a second write in the same tick), so the data must be older than that for the exact counts below.
    time.sleep(2.1)
    repo = tmp_path / "repo"
    backup = dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "-o", "json", cluster=cluster,
                extra_env=PROGRESS_ENV, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    snap = json.loads(backup.stdout)["id"]
    before = snapshot(vol)

    app_write(vol / "f03", os.urandom(FILE), keep_time=True)  # same size, same mtime: only a hash tells
    os.chmod(vol / "f04", 0o600)  # content matches, mode does not: set, not sent
    os.utime(vol / "f06", (1_000, 1_000))  # and a time
    os.unlink(vol / "f05")
    os.unlink(vol / "node_modules" / ".bin" / "tool")  # a symlink of the same length pointing elsewhere
    os.symlink("../tool/bin.jz", vol / "node_modules" / ".bin" / "tool")
    os.unlink(vol / "data.db.hardlink")  # the same bytes, but no longer a hard link of data.db
    app_write(vol / "data.db.hardlink", (vol / "data.db").read_bytes())
    app_write(vol / "extra", b"the app's own file, not in the snapshot")
    (vol / "extra-dir").mkdir()

    kept = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
              "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert kept.returncode == 0, kept.stderr
    inc = json.loads(kept.stdout)["incremental"]
    # Exact accounting: f03 (hash), f05 (missing) and data.db with its link (their hard link broken).
    assert (inc["filesSent"], inc["bytesSent"]) == (3, 2 * FILE + 4000), inc
    # f03 was hashed and sent; data.db's broken link decided without a hash. f03, f04 and f06 changed since
    # the backup (their change times say so: a write, a chmod, a utime) and only they were hashed; the files
    # nobody touched since the backup listed them are those very files (inode, size, mtime, change time).
    assert inc["filesHashedInPod"] == 3 and inc["filesTrusted"] == inc["filesSkipped"] - 2, inc
    assert "are the very files the snapshot's backup read" in kept.stderr
    assert inc["keptExtras"] == 2 and "keeping 2 entries that are not in what is restored" in kept.stderr
    assert "'extra'" in kept.stderr and "'extra-dir'" in kept.stderr
    assert inc["streamBytes"] < 2 * FILE + 4000 + 64 * 1024, inc  # headers of symlinks and the sent files only
    after = snapshot(vol)
    assert after.pop(b"extra").content and after.pop(b"extra-dir").kind == "dir"
    # The root's mtime changed when extra and extra-dir were made; everything else is as backed up.
    assert differences({k: v for k, v in before.items() if k != b"."},
                       {k: v for k, v in after.items() if k != b"."}) == []

    clean = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
               "--clean", "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert clean.returncode == 0, clean.stderr
    second = json.loads(clean.stdout)
    assert second["removed"] == ["extra", "extra-dir"] and second["incremental"]["filesSent"] == 0
    assert differences(before, snapshot(vol)) == []
    restic(repo, "restore", snap, "--target", str(tmp_path / "out"))
    assert differences(without_lost(before), snapshot(tmp_path / "out" / "data")) == []

    full = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
              "--full", "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout)["incremental"] is None
    assert json.loads(full.stdout)["size"] > 30 * FILE
    assert differences(before, snapshot(vol)) == []
    # As a user reads it: SIZE is what the volume holds from the snapshot, SENT how little of it crossed.
    again = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
               cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert again.returncode == 0, again.stderr
    row = tables.rows(again.stdout)[0]
    whole = second["incremental"]["bytesSent"] + second["incremental"]["bytesSkipped"]
    assert row["SIZE"] == units.size(whole), row
    assert ": 0 files sent, " in row["SENT"] and row["SENT"].endswith(" already there"), row
    plain = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", str(tmp_path / "plain"),
               "--from", "latest", "--full", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert plain.returncode == 2 and "--full applies to restic repositories" in plain.stderr

    # Into another claim holding the same files: nothing there is trusted by its metadata (it is no volume the
    # snapshot's backup read), every file of the same size is hashed, and nothing needs sending.
    make_claim(cluster, ns, "copy")
    copy = volume_dir(cluster, ns, "copy")
    subprocess.run(["cp", "-a", f"{vol}/.", str(copy)], check=True)
    other = dr("--yes", "pvc", "restore", "copy", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
               "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert other.returncode == 0, other.stderr
    elsewhere = json.loads(other.stdout)["incremental"]
    assert elsewhere["filesTrusted"] == 0 and elsewhere["filesSent"] == 0, elsewhere
    assert elsewhere["filesHashedInPod"] == elsewhere["filesSkipped"], elsewhere


def deployment(ns: str) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}}})


def replicas(cluster: Any, ns: str) -> tuple[int, dict[str, str]]:
    obj = json.loads(cluster.kubectl("get", "deployment/app", "-n", ns, "-o", "json").stdout)
    notes = {k: v for k, v in (obj["metadata"].get("annotations") or {}).items() if k.startswith("kubectl-dr.io/")}
    return int(obj["spec"]["replicas"]), notes


def restore_until(cluster: Any, ns: str, repo: Path, progress: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`pvc restore data --from latest` started, its messages read until a progress line that starts with
    `progress` and is not the last one (the transfer is under way); returns the process and the lines."""
    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_PROGRESS_INTERVAL": "0", **ENV})
    proc = subprocess.Popen([executable(), "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}",
                             "--from", "latest", "--yes"], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 180
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(progress) and "(done)" not in line:
            return proc, seen
        assert time.monotonic() < deadline, seen
    raise AssertionError(f"the restore ended before {progress!r} was seen: {seen}")


def test_an_interrupted_incremental_restore_leaves_the_app_stopped_and_a_rerun_finishes(cluster: Any,
                                                                                       tmp_path: Path) -> None:
    ns = new_namespace(cluster, "rint")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns))
    vol = volume_dir(cluster, ns)
    payload = os.urandom(48 << 20)
    app_write(vol / "big", payload)
    for i in range(200):
        app_write(vol / f"small{i:03d}", os.urandom(4096))
    repo = tmp_path / "repo"
    backup = dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "-o", "json", cluster=cluster,
                extra_env=PROGRESS_ENV, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    app_write(vol / "big", os.urandom(48 << 20), keep_time=True)  # caught only by its hash: sent again
    eventually(lambda: "Running" in cluster.kubectl("get", "pods", "-n", ns, "-l", "app=app", "-o",
                                                    "jsonpath={.items[*].status.phase}").stdout, what="app running")

    proc, seen = restore_until(cluster, ns, repo, f"restore {ns}/data: ")
    assert any("200 files" in s and "already match" in s for s in seen), seen
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    count, records = replicas(cluster, ns)
    assert count == 0 and records, rest  # a half-written volume is never handed to the app
    assert "partly restored" in rest
    hinted = shlex.split(rest.split("To finish the restore, run it again:\n", 1)[1].splitlines()[0])
    # Pinned to the snapshot being restored: `latest` could name a backup of the half-restored volume by then.
    snapshot_id = json.loads(backup.stdout)["id"]
    assert hinted[hinted.index("--from") + 1].startswith(snapshot_id[:8]) and "latest" not in hinted, hinted
    again = dr(*hinted[2:], "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert again.returncode == 0, again.stderr
    assert (vol / "big").read_bytes() == payload
    assert json.loads(again.stdout)["incremental"]["filesSkipped"] == 200
    assert replicas(cluster, ns) == (1, {})
    assert managed_pods(cluster, ns) == []


def test_a_snapshot_restic_made_is_compared_chunk_by_chunk_at_restics_own_boundaries(cluster: Any,
                                                                                     tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b"):
        (src / name).write_bytes(os.urandom(5 * (1 << 20) + 3))  # several of restic's content-defined chunks
    (src / "small").write_bytes(b"one chunk")
    (src / "empty").write_bytes(b"")
    repo = tmp_path / "repo"
    restic(repo, "init")
    restic(repo, "backup", str(src))
    ns = new_namespace(cluster, "rcdc")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    first = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", "latest",
               "--clean", "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    # latest of this claim is host NS/data; restic's snapshot has this machine's host: named by ID instead.
    assert first.returncode == 1
    snap = json.loads(restic(repo, "snapshots", "--json").stdout)[0]["short_id"]
    done = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
              "--clean", "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert done.returncode == 0, done.stderr
    assert differences(snapshot(src), snapshot(vol)) == []

    with open(vol / "b", "r+b") as f:  # one byte deep inside, same size, same mtime
        old = os.fstat(f.fileno())
        f.seek(4 << 20)
        byte = f.read(1)
        f.seek(4 << 20)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(vol / "b", ns=(old.st_atime_ns, old.st_mtime_ns))
    again = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
               "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert again.returncode == 0, again.stderr
    inc = json.loads(again.stdout)["incremental"]
    assert (inc["filesSent"], inc["bytesSent"], inc["filesSkipped"]) == (1, 5 * (1 << 20) + 3, 3), inc
    assert inc["filesHashedInPod"] == 3  # a, b and small; the empty file is equal by its size
    assert differences(snapshot(src), snapshot(vol)) == []
