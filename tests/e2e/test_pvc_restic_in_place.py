"""A restore from a restic repository of a large file that differs in part, against the loopback cluster: a
100 MiB "database" an app (uid 1000) changed in a few pages, grew or truncated gets only the differing 1 MiB
chunks written in place (counted exactly on the wire), a hard-linked large file is sent whole, and the volume
then equals the snapshot byte for byte and in metadata. A rescue pod killed while it writes in place leaves
the app stopped; the rerun finishes the file exactly."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest

from kubectl_dr import units
from kubectl_dr.errors import VerificationError
from kubectl_dr.repo.restic.backend import LocalBackend
from kubectl_dr.repo.restic.packs import DATA_BLOB
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.ui.console import TerminalConsole
from kubectl_dr.volumes import restic_in_place, transfer
from kubectl_dr.volumes.incremental_restore import InPlace
from kubectl_dr.volumes.rescue_pod import RescuePod
from kubectl_dr.volumes.scripts import DATA
from tests import tables
from tests.cli_runner import dr
from tests.cluster.fixture import Cluster
from tests.datasets import differences, make_claim, managed_pods, new_namespace, snapshot, volume_dir
from tests.e2e.test_exec_layer import kube_for
from tests.e2e.test_pvc_restic_restore import deployment, replicas, restore_until
from tests.e2e.test_pvc_transfer_checks import rescue  # noqa: F401 (the fixture: a rescue-style pod)
from tests.polling import eventually
from tests.restic.oracle import PASSWORD

MIB = 1 << 20
PAGE = 4096
ENV = {"RESTIC_PASSWORD": PASSWORD}


PROGRESS_ENV = {"KUBECTL_DR_PROGRESS_INTERVAL": "1", **ENV}


def app_file(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))
    os.chown(path, 1000, 1000)
    os.utime(path, (1_500_000_000, 1_500_000_123))


def write_pages(path: Path, offsets: list[int], *, keep_time: bool = True) -> None:
    """What a database does: rewrite pages in place (the owner, uid 1000, stays); with the old mtime put back,
    as an app may, so that only the hashes tell."""
    old = os.stat(path)
    with open(path, "r+b") as f:
        for offset in offsets:
            f.seek(offset)
            f.write(os.urandom(PAGE))
    if keep_time:
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))


def restore(cluster: Any, ns: str, repo: Path, snap: str) -> dict[str, Any]:
    done = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
              "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert done.returncode == 0, done.stderr
    inc: dict[str, Any] = json.loads(done.stdout)["incremental"]
    return inc


def test_a_large_file_changed_in_part_gets_only_its_differing_chunks_written_in_place(cluster: Any,
                                                                                      tmp_path: Path) -> None:
    ns = new_namespace(cluster, "rinplace")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    (vol / "pgdata").mkdir()
    os.chown(vol / "pgdata", 1000, 1000)
    db = vol / "pgdata" / "base.db"
    app_file(db, 100)
    linked = vol / "pgdata" / "wal.seg"
    app_file(linked, 70)
    os.link(linked, vol / "pgdata" / "wal.link")
    (vol / "pgdata" / "small.conf").write_text("shared_buffers = 128MB\n")
    os.chown(vol / "pgdata" / "small.conf", 1000, 1000)
    repo = tmp_path / "repo"
    backup = dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "-o", "json", cluster=cluster,
                extra_env=PROGRESS_ENV, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    snap = json.loads(backup.stdout)["id"]
    before = snapshot(vol)

    # Pages in chunks 3, 49 and 50 (one straddles them) and 99; 10 KiB appended (cut off again); and a page
    # of the hard-linked file (sent whole: writing its inode in place would change both names anyway, but a
    # link group is restored as a whole by tar).
    write_pages(db, [3 * MIB + 5 * PAGE, 50 * MIB - PAGE // 2, 99 * MIB + 17 * PAGE])
    with open(db, "ab") as f:
        f.write(os.urandom(10 * 1024))
    write_pages(linked, [7 * MIB])
    inc = restore(cluster, ns, repo, snap)
    assert inc["filesInPlace"] == 1, inc
    assert (inc["bytesWrittenInPlace"], inc["bytesReusedInPlace"]) == (4 * MIB, 96 * MIB), inc
    assert inc["inPlaceStreamBytes"] == 4 * MIB, inc  # exactly the chunks (whole 512-byte blocks already)
    assert (inc["filesSent"], inc["bytesSent"]) == (2, 4 * MIB + 70 * MIB), inc
    assert inc["streamBytes"] > 70 * MIB  # the linked file, whole, in the tar stream
    assert differences(before, snapshot(vol)) == []

    # Only appended to: every chunk is there, so no chunk is written and no stream sent; the file is cut.
    with open(db, "ab") as f:
        f.write(os.urandom(3 * MIB + 5))
    cut = restore(cluster, ns, repo, snap)
    assert cut["filesInPlace"] == 1 and (cut["bytesWrittenInPlace"], cut["inPlaceStreamBytes"]) == (0, 0), cut
    assert cut["bytesReusedInPlace"] == 100 * MIB, cut
    assert differences(before, snapshot(vol)) == []

    # Truncated and a page changed: chunk 10, and chunks 80 (cut) to 99 written; the file extended first.
    os.truncate(db, 80 * MIB + 123)
    write_pages(db, [10 * MIB + PAGE], keep_time=False)
    again = restore(cluster, ns, repo, snap)
    assert (again["bytesWrittenInPlace"], again["bytesReusedInPlace"]) == (21 * MIB, 79 * MIB), again
    assert again["inPlaceStreamBytes"] == 21 * MIB and again["streamBytes"] < 64 * 1024, again
    assert differences(before, snapshot(vol)) == []

    # Nothing differs: nothing written in place, nothing sent but the tar stream's end.
    same = restore(cluster, ns, repo, snap)
    assert same["filesInPlace"] == 0 and same["filesSent"] == 0, same

    # As a user reads it: SENT says what crossed and how much of the large file was reused in place.
    write_pages(db, [30 * MIB])
    shown = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
               cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert shown.returncode == 0, shown.stderr
    row = tables.rows(shown.stdout)[0]
    assert row["SENT"].endswith(f", {units.size(99 * MIB)} of 1 large file reused in place"), row
    assert ": 1 file sent, " in row["SENT"], row  # the large file: its one chunk of 1 MiB
    assert "99.0 MiB of them already match" in shown.stderr, shown.stderr

    # --full sends everything, as before.
    write_pages(db, [20 * MIB])
    full = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
              "--full", "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout)["incremental"] is None and json.loads(full.stdout)["size"] > 170 * MIB
    assert differences(before, snapshot(vol)) == []

    # Where the snapshot has the large file the volume holds a symlink (to the app's other file, which a write
    # through it would change) or a directory: never written in place, restored whole and exactly.
    conf = (vol / "pgdata" / "small.conf").read_bytes()
    db.unlink()
    db.symlink_to("small.conf")
    linked_back = restore(cluster, ns, repo, snap)
    assert linked_back["filesInPlace"] == 0 and linked_back["bytesSent"] == 100 * MIB, linked_back
    assert (vol / "pgdata" / "small.conf").read_bytes() == conf
    assert differences(before, snapshot(vol)) == []
    db.unlink()
    db.mkdir()
    (db / "inside").write_bytes(os.urandom(70 * MIB))
    dir_back = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
                  "--clean", "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert dir_back.returncode == 0, dir_back.stderr
    assert json.loads(dir_back.stdout)["incremental"]["filesInPlace"] == 0, dir_back.stdout
    assert differences(before, snapshot(vol)) == []


def test_a_read_only_large_file_is_sent_whole_by_a_rescue_pod_that_is_not_root(cluster: Any, tmp_path: Path) -> None:
    """In a namespace enforcing Pod Security "restricted" the rescue pod runs as the app's uid: it can replace a
    read-only file (tar unlinks it; the directory is the app's) but cannot open it for writing, so that file is
    sent whole, while the app's writable large file still gets only its differing chunk written in place."""
    ns = new_namespace(cluster, "rinro", {"pod-security.kubernetes.io/enforce": "restricted"})
    make_claim(cluster, ns)
    restricted = {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True,
                  "seccompProfile": {"type": "RuntimeDefault"}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}}, "spec": {
                     "securityContext": restricted, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"],
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "capabilities": {"drop": ["ALL"]}},
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}}}))
    vol = volume_dir(cluster, ns)
    os.chown(vol, 1000, 1000)
    frozen, live = vol / "frozen.db", vol / "live.db"
    app_file(frozen, 65)
    app_file(live, 65)
    frozen.chmod(0o444)
    repo = tmp_path / "repo"
    backup = dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "-o", "json", cluster=cluster,
                extra_env=PROGRESS_ENV, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    snap = json.loads(backup.stdout)["id"]
    before = snapshot(vol)
    frozen.chmod(0o644)
    write_pages(frozen, [5 * MIB])
    frozen.chmod(0o444)
    write_pages(live, [7 * MIB])
    done = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", snap,
              "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["securityContext"]["pod"]["runAsUser"] == 1000, done.stdout
    inc = json.loads(done.stdout)["incremental"]
    assert (inc["filesInPlace"], inc["bytesWrittenInPlace"]) == (1, MIB), inc  # live.db's one chunk
    assert (inc["filesSent"], inc["bytesSent"]) == (2, 65 * MIB + MIB), inc  # frozen.db whole
    assert differences(before, snapshot(vol)) == []
    assert replicas(cluster, ns) == (1, {})


def test_a_rescue_pod_killed_while_writing_in_place_leaves_the_app_stopped_and_a_rerun_finishes(
        cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "rinkill")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns))
    vol = volume_dir(cluster, ns)
    db = vol / "base.db"
    app_file(db, 100)
    repo = tmp_path / "repo"
    backup = dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{repo}", "-o", "json", cluster=cluster,
                extra_env=PROGRESS_ENV, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    before = snapshot(vol)
    write_pages(db, list(range(0, 100 * MIB, MIB)))  # a page in every chunk: all 100 MiB written in place
    eventually(lambda: "Running" in cluster.kubectl("get", "pods", "-n", ns, "-l", "app=app", "-o",
                                                    "jsonpath={.items[*].status.phase}").stdout, what="app running")

    proc, seen = restore_until(cluster, ns, repo, f"restore {ns}/data (chunks in place): ")
    pods = managed_pods(cluster, ns)
    assert pods, seen
    cluster.kubectl("delete", "pod", "-n", ns, *pods, "--grace-period=0", "--force", "--wait=false")
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 1, "".join(seen) + rest
    count, records = replicas(cluster, ns)
    assert count == 0 and records, rest  # a half-written file is never handed to the app
    assert "partly restored" in rest
    hinted = shlex.split(rest.split("To finish the restore, run it again:\n", 1)[1].splitlines()[0])
    again = dr(*hinted[2:], "-o", "json", cluster=cluster, extra_env=PROGRESS_ENV, subprocess=True)
    assert again.returncode == 0, again.stderr
    inc = json.loads(again.stdout)["incremental"]
    assert inc["filesInPlace"] == 1 and inc["bytesWrittenInPlace"] <= 100 * MIB, inc
    assert differences(before, snapshot(vol)) == []
    assert replicas(cluster, ns) == (1, {})
    assert managed_pods(cluster, ns) == []


def test_a_file_that_changed_after_it_was_hashed_fails_the_check_and_is_removed_for_a_whole_rerun(
        cluster: Cluster, rescue: RescuePod, tmp_path: Path) -> None:  # noqa: F811 (the imported fixture)
    """Writing in place trusts the chunks hashed before as equal; if one changed meanwhile (an app that was not
    stopped), the hashes of every chunk afterwards tell, the file is removed (a rerun finds it missing and
    sends it whole) and the restore fails."""
    kube = kube_for(cluster)
    console = TerminalConsole(yes=True)
    repo = Repository.init(LocalBackend(tmp_path / "repo"), b"pw")
    lengths = [300_001, 250_000, 77_777]
    pieces = [os.urandom(n) for n in lengths]
    chunks = list(zip(repo.save_blobs(DATA_BLOB, pieces), lengths, strict=True))
    repo.flush()
    want = b"".join(pieces)

    def volume(content: bytes) -> None:
        transfer.capture(kube, rescue, f"cat > {DATA}/db", stdin=content, what="writing the volume's file")

    def volume_hash() -> bytes:
        out, _ = transfer.capture(kube, rescue, f"sha256sum {DATA}/db || echo missing", what="hashing")
        return out

    # Chunk 0 equal, chunk 1 differs, chunk 2 missing (the volume copy is shorter): written, then checked.
    volume(pieces[0] + os.urandom(lengths[1]))
    good = InPlace("db", len(want), lengths[0] + lengths[1], chunks, [True, False])
    assert restic_in_place.write(kube, rescue, [good], repo.load_blob, console, "test") == 512 * (
        (lengths[1] + lengths[2] + 511) // 512)
    assert volume_hash().startswith(hashlib.sha256(want).hexdigest().encode())

    # Chunk 0 was hashed equal, then changed before the writes: the check after them catches it.
    volume(os.urandom(lengths[0]) + pieces[1] + pieces[2] + b"longer")
    stale = InPlace("db", len(want), len(want) + 6, chunks, [True, True, False])
    with pytest.raises(VerificationError, match="do not hash to the snapshot's chunks") as err:
        restic_in_place.write(kube, rescue, [stale], repo.load_blob, console, "test")
    assert err.value.hint is not None and "sends these files whole" in err.value.hint
    assert volume_hash().strip() == b"missing"
