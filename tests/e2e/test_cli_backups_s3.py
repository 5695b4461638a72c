"""`kubectl dr backups` (and an etcd snapshot) with S3 repositories, encryption and retention, run as the
installed executable against a real SeaweedFS server."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyrage

from kubectl_dr.repo import LocalRepository, open_repository
from tests import tables
from tests.cli_runner import clean_env, executable
from tests.cli_runner import dr as run_cli
from tests.s3server import S3Server

T0 = datetime(2026, 3, 1, 0, 30, tzinfo=timezone.utc)


def _env(server: S3Server, **extra: str) -> dict[str, str]:
    return clean_env({**server.env(), "KUBECTL_DR_CONFIG": os.devnull, "TZ": "UTC", **extra})


def _dr(env: dict[str, str], *args: str, timeout: float = 180, process: bool = False
        ) -> subprocess.CompletedProcess[str]:
    """In-process against the S3 server; `process` for the runs that start pods in the cluster."""
    return run_cli(*args, env=env, timeout=timeout, subprocess=process)


def _ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout) if result.stdout.startswith("{") else result.stdout


def _fill(url: str, server: S3Server, hours: list[int], claim: str = "db") -> list[str]:
    """Backups of one claim taken at T0 + each hour (an injected clock: no sleeping)."""
    moments = iter([T0 + timedelta(hours=h) for h in hours for _ in range(2)])
    repo = open_repository(url, {**os.environ, **server.env(), "KUBECTL_DR_CONFIG": os.devnull},
                           clock=lambda: next(moments))
    ids = []
    for h in hours:
        with repo.create("pvc", {"namespace": "shop", "pvc": claim, "consumers": [f"StatefulSet/db-{h}"]},
                         f"shop-{claim}") as writer:
            with writer.open_part("data.tar") as part:
                part.write(b"hour %d" % h)
            ids.append(writer.commit({}).id)
    return ids


def test_list_show_verify_delete_on_s3(seaweedfs: S3Server) -> None:
    url = f"s3://{seaweedfs.new_bucket()}/prod"
    env = _env(seaweedfs, KUBECTL_DR_REPO=url)
    ids = _fill(url, seaweedfs, [0, 1])
    listed = _ok(_dr(env, "backups", "list", "-o", "json"))
    assert listed["repository"] == url and [i["id"] for i in listed["items"]] == ids[::-1]
    assert listed["items"][0]["location"] == f"{url}/{ids[1]}"
    table = _ok(_dr(env, "backups", "list"))
    assert table.splitlines()[0].split() == ["ID", "NAME", "TYPE", "SOURCE", "SIZE", "ENC", "SKIPPED", "VERIFIED",
                                             "AGE", "CLUSTER"]
    # A client dry run checks as much and writes nothing under the prefix, not even its outcome.
    dry = _dr(env, "backups", "verify", ids[1], "--dry-run=client")
    assert dry.returncode == 0 and tables.rows(dry.stdout)[0]["RECORDED"] == "no", dry.stdout
    assert "the outcome was not recorded (dry run)" in dry.stderr
    assert _ok(_dr(env, "backups", "show", ids[1], "-o", "json"))["lastVerification"] is None
    assert list(tables.rows(_ok(_dr(env, "backups", "verify", ids[0])))[0].values()) == [
        ids[0], "ok", "1", "6 B", "size,sha256", "yes"]
    shown = _ok(_dr(env, "backups", "show", ids[0], "-o", "json"))
    assert shown["lastVerification"]["ok"] is True
    verified = {row["ID"]: row["VERIFIED"] for row in tables.rows(_ok(_dr(env, "backups", "list")))}
    assert verified == {ids[0]: "ok", ids[1]: "-"}  # the record is read back from the bucket too
    assert _ok(_dr(env, "backups", "delete", ids[0], "--yes")) == f'backup "{ids[0]}" deleted\n'
    assert [i["id"] for i in _ok(_dr(env, "backups", "list", "-o", "json"))["items"]] == [ids[1]]

    # Errors in words: a bucket that is not there, an endpoint that does not answer.
    missing = _dr(env, "backups", "list", "--repo", "s3://no-such-bucket-here/x")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr or "NoSuchBucket" in missing.stderr, missing.stderr
    assert "unexpected" not in missing.stderr
    down = _dr(env, "backups", "list", "--s3-endpoint", "http://127.0.0.1:9", timeout=300)
    assert down.returncode == 1 and "cannot reach the S3 endpoint http://127.0.0.1:9" in down.stderr, down.stderr


def test_prune_by_count_and_time_buckets(seaweedfs: S3Server) -> None:
    url = f"s3://{seaweedfs.new_bucket()}/prod"
    env = _env(seaweedfs, KUBECTL_DR_REPO=url)
    # Every 6 hours for 3 days, and one backup of another claim.
    ids = _fill(url, seaweedfs, [6 * i for i in range(12)])
    other = _fill(url, seaweedfs, [100], claim="cache")

    dry = _ok(_dr(env, "backups", "prune", "--keep-last", "1", "--keep-daily", "3", "--dry-run=client", "-o",
                  "json"))
    # The last of each of the 3 days (18:30, one also being the newest), per series; the other claim stays.
    kept = {ids[11], ids[7], ids[3]} | set(other)
    assert set(dry["kept"]) == kept and set(dry["removed"]) == set(ids) - kept
    assert dry["keptBecause"][ids[11]] == ["last", "daily"]
    assert len(_ok(_dr(env, "backups", "list", "-o", "json"))["items"]) == 13  # a dry run removes nothing

    refused = _dr(env, "backups", "prune", "--keep-daily", "3")
    assert refused.returncode == 1 and "without confirmation" in refused.stderr
    done = _ok(_dr(env, "backups", "prune", "--keep-last", "1", "--keep-daily", "3", "--yes"))
    assert done.count("deleted") == 9
    assert {i["id"] for i in _ok(_dr(env, "backups", "list", "-o", "json"))["items"]} == kept

    # --keep-last 0: everything but the newest verified backup of each series, which is said.
    last = _ok(_dr(env, "backups", "prune", "--keep-last", "0", "--yes"))
    assert f'backup "{ids[11]}" kept: the newest verified backup of pvc shop/db' in last
    assert {i["id"] for i in _ok(_dr(env, "backups", "list", "-o", "json"))["items"]} == {ids[11], *other}
    usage = _dr(env, "backups", "prune")
    assert usage.returncode == 2 and "at least one of --keep-last" in usage.stderr


def test_copy_both_ways_with_encryption_from_the_config_file(seaweedfs: S3Server, tmp_path: Path) -> None:
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "age.txt"
    key.write_text(f"{identity}\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"encryption:\n  recipients: [{identity.to_public()}]\n  identities: [{key}]\n")
    local = LocalRepository(tmp_path / "local")
    with local.create("etcd-snapshot", {"cluster": "https://cp:6443", "member": "m1"}, "cp") as writer:
        with writer.open_part("snapshot.db") as part:
            part.write(b"every Secret" * 1000)
        backup_id = writer.commit({}).id
    url = f"s3://{seaweedfs.new_bucket()}/offsite"
    plain_env = _env(seaweedfs)

    # An unencrypted etcd snapshot to a remote repository: refused without a terminal or --yes.
    refused = _dr(plain_env, "backups", "copy", backup_id, "--repo", str(local.path), "--to", url)
    assert refused.returncode == 1 and "holds every Secret of the cluster" in refused.stderr, refused.stderr
    assert "--encrypt-to" in refused.stderr

    # With the config file's recipients it is encrypted on the way.
    env = _env(seaweedfs, KUBECTL_DR_CONFIG=str(config))
    copied = _ok(_dr(env, "backups", "copy", backup_id, "--repo", str(local.path), "--to", url))
    assert copied.splitlines()[1].split() == [backup_id, "copied", "(encrypted)", f"{url}/{backup_id}"]
    again = _ok(_dr(env, "backups", "copy", "--all", "--repo", str(local.path), "--to", url, "-o", "json"))
    assert again["present"] == [backup_id] and again["copied"] == []
    listed = _ok(_dr(env, "backups", "list", "--repo", url))
    assert tables.rows(listed)[0]["ENC"] == "age"

    # Verify without a key: refused, or --stored-only; with the config file's identity: contents checked.
    no_key = _env(seaweedfs)
    refused = _dr(no_key, "backups", "verify", backup_id, "--repo", url)
    assert refused.returncode == 1 and "is encrypted (age, to age1" in refused.stderr, refused.stderr
    stored = _dr(no_key, "backups", "verify", backup_id, "--repo", url, "--stored-only")
    assert stored.returncode == 0 and tables.rows(stored.stdout)[0]["CHECKED"] == "stored-only", stored.stdout
    assert "its contents were not decrypted (pass --identity to check them)" in stored.stderr
    checked = _ok(_dr(env, "backups", "verify", backup_id, "--repo", url))
    assert tables.rows(checked)[0]["CHECKED"] == "decrypted"
    keyed = _ok(_dr(no_key, "backups", "verify", backup_id, "--repo", url, "--identity", str(key)))
    assert tables.rows(keyed)[0]["CHECKED"] == "decrypted"

    # And back, S3 → a new local repository (copied as stored: still encrypted there).
    back = tmp_path / "back"
    assert _ok(_dr(env, "backups", "copy", "latest", "--repo", url, "--to", str(back))).splitlines()[1].split() == [
        backup_id, "copied", str(back / backup_id)]
    assert (back / backup_id / "snapshot.db.age").is_file()
    _ok(_dr(env, "backups", "verify", backup_id, "--repo", str(back)))


def test_etcd_snapshot_into_s3(cluster: Any, seaweedfs: S3Server, tmp_path: Path) -> None:
    """A real snapshot through a pod, into S3: unencrypted only with --yes; encrypted with --encrypt-to,
    then verified with the identity."""
    url = f"s3://{seaweedfs.new_bucket()}/etcd"
    env = _env(seaweedfs, KUBECONFIG=str(cluster.kubeconfig), KUBECTL_DR_REPO=url)
    refused = _dr(env, "etcd", "snapshot", process=True)
    assert refused.returncode == 1 and "refusing to write an etcd snapshot unencrypted" in refused.stderr
    assert "saving a snapshot" not in refused.stderr  # asked before anything ran in the cluster

    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "age.txt"
    key.write_text(f"{identity}\n")
    made = _ok(_dr(env, "etcd", "snapshot", "--encrypt-to", str(identity.to_public()), "-o", "json", process=True))
    assert made["location"] == f"{url}/{made['id']}" and made["repository"] == url and "path" not in made
    assert made["encryption"]["recipients"] == [str(identity.to_public())]
    assert any(k.endswith("/snapshot.db.age") for k in seaweedfs.objects(url.split("/")[2]))
    _ok(_dr(env, "backups", "verify", made["id"], "--identity", str(key), process=True))
    # A restore reads it from S3, decrypted into a private staging directory that is gone afterwards
    # (a client dry run: staged, checked and planned, nothing in the cluster changed).
    staging = tmp_path / "tmp"
    staging.mkdir()
    restore_env = {**env, "TMPDIR": str(staging)}
    locked = _dr(restore_env, "etcd", "restore", "--from", made["id"], "--dry-run=client", process=True)
    assert locked.returncode == 1 and "encrypted" in locked.stderr, locked.stderr
    planned = _ok(_dr(restore_env, "etcd", "restore", "--from", made["id"], "--dry-run=client", "-i", str(key),
                      "-o", "json", process=True))
    assert planned["dryRun"] == "client" and "snapshot restore" in planned["runbook"]
    assert list(staging.iterdir()) == []
    plain = _ok(_dr(env, "etcd", "snapshot", "--yes", "-o", "json", process=True))
    _ok(_dr(env, "backups", "verify", plain["id"], process=True))

    # --copy-to: a second copy as part of the run, checked before the cluster is touched. The target is an
    # existing directory shared with a group: its mode is the user's, and stays.
    second = tmp_path / "second"
    second.mkdir()
    second.chmod(0o2750)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a directory should be\n")
    bad = _dr(env, "etcd", "snapshot", "--yes", "--copy-to", str(blocked / "repo"), process=True)
    assert bad.returncode != 0 and "saving a snapshot" not in bad.stderr, bad.stderr
    both = _ok(_dr(env, "etcd", "snapshot", "--encrypt-to", str(identity.to_public()), "--copy-to", str(second),
                   "-o", "json", process=True))
    assert both["copies"] == [{"repository": str(second), "location": str(second / both["id"]), "encrypted": True}]
    assert second.stat().st_mode & 0o7777 == 0o2750
    local = _ok(_dr({**env, "KUBECTL_DR_REPO": str(second)}, "backups", "verify", both["id"], "-i", str(key),
                    process=True))
    assert both["id"] in str(local)


def test_pvc_backup_into_s3_encrypted(cluster: Any, seaweedfs: S3Server, tmp_path: Path) -> None:
    """A volume backup (files written as uid 1000) streamed into S3 with encryption, large enough for a
    multipart upload; checked with its identity, refused without it; restored from S3 with the identity
    (decrypted into a private staging directory that is gone afterwards), refused without it before the
    cluster is touched."""
    from tests.datasets import make_claim, managed_pods, new_namespace, volume_dir

    ns = new_namespace(cluster, "s3pvc")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    (vol / "big.bin").write_bytes(os.urandom(40 << 20))
    (vol / "dir").mkdir()
    (vol / "dir" / "note.txt").write_text("hello\n")
    os.symlink("dir/note.txt", vol / "link")
    for path in (vol / "big.bin", vol / "dir", vol / "dir" / "note.txt"):
        os.chown(path, 1000, 1000)
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "age.txt"
    key.write_text(f"{identity}\n")
    url = f"s3://{seaweedfs.new_bucket()}/volumes"
    env = _env(seaweedfs, KUBECONFIG=str(cluster.kubeconfig), KUBECTL_DR_REPO=url)

    made = _ok(_dr(env, "pvc", "backup", "data", "-n", ns, "--encrypt-to", str(identity.to_public()), "-o", "json",
                   timeout=300, process=True))
    assert made["location"] == f"{url}/{made['id']}" and made["repository"] == url and "path" not in made
    assert made["details"]["archive"]["entries"] >= 4 and made["size"] == made["parts"][0]["size"]
    part = made["parts"][0]
    assert part["stored"]["file"] == "data.tar.age" and part["size"] > 40 << 20
    refused = _dr(env, "backups", "verify", made["id"], process=True)
    assert refused.returncode == 1 and "is encrypted" in refused.stderr
    _ok(_dr(env, "backups", "verify", made["id"], "--identity", str(key), process=True))
    assert managed_pods(cluster, ns) == []

    staging = tmp_path / "tmp"
    staging.mkdir()
    env["TMPDIR"] = str(staging)
    (vol / "dir" / "note.txt").write_text("changed by the app after the backup\n")
    (vol / "big.bin").unlink()
    refused = _dr(env, "pvc", "restore", "data", "-n", ns, "--from", made["id"], "--yes", process=True)
    assert refused.returncode == 1 and "encrypted" in refused.stderr, refused.stderr
    assert "starting rescue pod" not in refused.stderr and managed_pods(cluster, ns) == []
    assert list(staging.iterdir()) == []

    restored = _ok(_dr(env, "pvc", "restore", "data", "-n", ns, "--from", made["id"], "--yes", "-i", str(key),
                       "-o", "json", timeout=300, process=True))
    assert restored["backup"] == made["id"]
    assert (vol / "dir" / "note.txt").read_text() == "hello\n" and (vol / "big.bin").stat().st_size == 40 << 20
    assert (vol / "dir" / "note.txt").stat().st_uid == 1000 and os.readlink(vol / "link") == "dir/note.txt"
    assert list(staging.iterdir()) == [] and managed_pods(cluster, ns) == []


def test_ctrl_c_during_a_copy_to_s3_leaves_nothing(seaweedfs: S3Server, tmp_path: Path) -> None:
    import signal

    local = LocalRepository(tmp_path / "local")
    with local.create("pvc", {"namespace": "shop", "pvc": "db"}, "db") as writer:
        with writer.open_part("data.tar") as part:
            block = os.urandom(1 << 20)
            for _ in range(400):  # seconds of upload: the signal comes at its first progress line
                part.write(block)
        backup_id = writer.commit({}).id
    bucket = seaweedfs.new_bucket()
    env = _env(seaweedfs, KUBECTL_DR_PROGRESS_INTERVAL="0.1")
    proc = subprocess.Popen([executable(), "backups", "copy", backup_id, "--repo", str(local.path), "--to",
                             f"s3://{bucket}/x"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(f"copy {backup_id}: ") and " MiB of " in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert seaweedfs.objects(bucket) == {} and seaweedfs.uploads(bucket) == []
