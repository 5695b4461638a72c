"""`kubectl dr backups`, an etcd snapshot and `etcd snapshots pull` with Azure Blob repositories (Azurite),
run as the installed executable: credentials from the standard variables, --azure-endpoint, copies both
ways between local, S3 and Azure with encryption, retention, and errors in words."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyrage
import pytest

from kubectl_dr.repo import LocalRepository, open_repository
from kubectl_dr.repo.azureclient import DEV_ACCOUNT, DEV_KEY
from tests import tables
from tests.azurite import Azurite
from tests.cli_runner import clean_env, dr
from tests.polling import eventually
from tests.s3server import S3Server

T0 = datetime(2026, 3, 1, 0, 30, tzinfo=timezone.utc)


def _env(server: Azurite, **extra: str) -> dict[str, str]:
    """Account and key in the standard variables; the endpoint comes by --azure-endpoint (ENDPOINT)."""
    base = {k: v for k, v in clean_env().items() if not k.startswith("AZURE_STORAGE_")}
    return {**base, "AZURE_STORAGE_ACCOUNT": DEV_ACCOUNT, "AZURE_STORAGE_KEY": DEV_KEY,
            "KUBECTL_DR_CONFIG": os.devnull, "TZ": "UTC", **extra}


def _dr(env: dict[str, str], *args: str, timeout: float = 180, process: bool = False
        ) -> subprocess.CompletedProcess[str]:
    """In-process against Azurite; `process` for the runs that start pods in the cluster."""
    return dr(*args, env=env, timeout=timeout, input=b"", subprocess=process)


def _ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout) if result.stdout.startswith("{") else result.stdout


def _fill(url: str, server: Azurite, hours: list[int], claim: str = "db") -> list[str]:
    """Backups of one claim taken at T0 + each hour (an injected clock: no sleeping)."""
    moments = iter([T0 + timedelta(hours=h) for h in hours for _ in range(2)])
    repo = open_repository(url, {**os.environ, **server.env(), "KUBECTL_DR_CONFIG": os.devnull},
                           clock=lambda: next(moments))
    ids = []
    for h in hours:
        with repo.create("pvc", {"namespace": "shop", "pvc": claim}, f"shop-{claim}") as writer:
            with writer.open_part("data.tar") as part:
                part.write(b"hour %d" % h)
            ids.append(writer.commit({}).id)
    return ids


def test_list_verify_prune_delete_and_errors(azurite: Azurite) -> None:
    url = f"azure://{azurite.new_container()}/prod"
    env = _env(azurite, KUBECTL_DR_REPO=url)
    at = ("--azure-endpoint", azurite.endpoint)
    ids = _fill(url, azurite, [6 * i for i in range(8)])  # every 6 hours for 2 days
    listed = _ok(_dr(env, "backups", "list", *at, "-o", "json"))
    assert listed["repository"] == url and [i["id"] for i in listed["items"]] == ids[::-1]
    assert listed["items"][0]["location"] == f"{url}/{ids[-1]}"
    assert list(tables.rows(_ok(_dr(env, "backups", "verify", ids[0], *at)))[0].values()) == [
        ids[0], "ok", "1", "6 B", "size,sha256", "yes"]
    assert _ok(_dr(env, "backups", "show", ids[0], *at, "-o", "json"))["lastVerification"]["ok"] is True

    dry = _ok(_dr(env, "backups", "prune", *at, "--keep-last", "1", "--keep-daily", "2", "--dry-run=client",
                  "-o", "json"))
    kept = {ids[7], ids[3]}  # the last of each day (18:30)
    assert set(dry["kept"]) == kept and set(dry["removed"]) == set(ids) - kept
    assert len(_ok(_dr(env, "backups", "list", *at, "-o", "json"))["items"]) == 8  # a dry run removes nothing
    done = _ok(_dr(env, "backups", "prune", *at, "--keep-last", "1", "--keep-daily", "2", "--yes"))
    assert done.count("deleted") == 6
    assert _ok(_dr(env, "backups", "delete", ids[3], *at, "--yes")) == f'backup "{ids[3]}" deleted\n'
    assert [i["id"] for i in _ok(_dr(env, "backups", "list", *at, "-o", "json"))["items"]] == [ids[7]]
    assert set(azurite.blobs(url.split("/")[2])) == {f"prod/{ids[7]}/data.tar", f"prod/{ids[7]}/manifest.json"}

    # Errors in words, exit 1: a container that is not there, no credentials, a wrong key, no answer.
    missing = _dr(env, "backups", "list", *at, "--repo", "azure://no-such-container/x")
    assert missing.returncode == 1 and "the container 'no-such-container' does not exist" in missing.stderr
    assert "unexpected" not in missing.stderr
    bare = {k: v for k, v in env.items() if not k.startswith("AZURE_STORAGE_")}
    nokey = _dr({**bare, "AZURE_STORAGE_ACCOUNT": DEV_ACCOUNT}, "backups", "list", *at)
    assert nokey.returncode == 1 and f"no Azure credentials for {url}" in nokey.stderr
    assert "AZURE_STORAGE_SAS_TOKEN" in nokey.stderr
    wrong = _dr({**env, "AZURE_STORAGE_KEY": DEV_KEY.replace(DEV_KEY[:8], "A" * 8)}, "backups", "list", *at)
    assert wrong.returncode == 1 and ("access denied" in wrong.stderr or "refused the credentials" in wrong.stderr)
    down = _dr(env, "backups", "list", "--azure-endpoint", f"http://127.0.0.1:9/{DEV_ACCOUNT}", timeout=300)
    assert down.returncode == 1 and "cannot reach the Azure storage endpoint http://127.0.0.1:9" in down.stderr, \
        down.stderr
    bad = _dr(env, "backups", "list", "--repo", "azure://Bad_Name/x")
    assert bad.returncode == 1 and "not a valid container name" in bad.stderr


def test_copy_local_azure_s3_and_back_encrypted(azurite: Azurite, seaweedfs: S3Server, tmp_path: Path) -> None:
    """An etcd snapshot (every Secret) copied local → Azure (encrypted on the way by the config file's
    recipient), Azure → S3 and S3 → Azure as stored, and back to a local directory; verified everywhere."""
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "age.txt"
    key.write_text(f"{identity}\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"encryption:\n  recipients: [{identity.to_public()}]\n  identities: [{key}]\n"
                      f"azure:\n  endpoint: {azurite.endpoint}\n")
    local = LocalRepository(tmp_path / "local")
    with local.create("etcd-snapshot", {"cluster": "https://cp:6443", "member": "m1"}, "cp") as writer:
        with writer.open_part("snapshot.db") as part:
            for i in range(20):  # 20 MiB: five blocks
                part.write(bytes([i]) * (1 << 20))
        backup_id = writer.commit({}).id
    az = f"azure://{azurite.new_container()}/offsite"
    plain = _env(azurite, **seaweedfs.env(), KUBECTL_DR_CONFIG=os.devnull)

    refused = _dr(plain, "backups", "copy", backup_id, "--repo", str(local.path), "--to", az,
                  "--azure-endpoint", azurite.endpoint)
    assert refused.returncode == 1 and "holds every Secret of the cluster" in refused.stderr, refused.stderr

    env = {**plain, "KUBECTL_DR_CONFIG": str(config)}
    copied = _ok(_dr(env, "backups", "copy", backup_id, "--repo", str(local.path), "--to", az))
    assert copied.splitlines()[1].split() == [backup_id, "copied", "(encrypted)", f"{az}/{backup_id}"]
    assert tables.rows(_ok(_dr(env, "backups", "list", "--repo", az)))[0]["ENC"] == "age"
    assert tables.rows(_ok(_dr(env, "backups", "verify", backup_id, "--repo", az)))[0]["CHECKED"] == "decrypted"

    s3 = f"s3://{seaweedfs.new_bucket()}/from-azure"
    assert _ok(_dr(env, "backups", "copy", "--all", "--repo", az, "--to", s3, "-o", "json"))["copied"] == [backup_id]
    az2 = f"azure://{azurite.new_container()}/from-s3"
    assert _ok(_dr(env, "backups", "copy", backup_id, "--repo", s3, "--to", az2, "-o", "json"))["copied"] == [
        backup_id]
    again = _ok(_dr(env, "backups", "copy", "--all", "--repo", s3, "--to", az2, "-o", "json"))
    assert again["present"] == [backup_id] and again["copied"] == []
    back = tmp_path / "back"
    _ok(_dr(env, "backups", "copy", "latest", "--repo", az2, "--to", str(back)))
    assert (back / backup_id / "snapshot.db.age").is_file()
    _ok(_dr(env, "backups", "verify", backup_id, "--repo", str(back)))
    stored = _dr({**plain, "KUBECTL_DR_CONFIG": os.devnull}, "backups", "verify", backup_id, "--repo", az2,
                 "--azure-endpoint", azurite.endpoint, "--stored-only")
    assert stored.returncode == 0 and tables.rows(stored.stdout)[0]["CHECKED"] == "stored-only", stored.stderr


def test_schedule_print_names_the_account_never_the_key(tmp_path: Path) -> None:
    env = clean_env({"KUBECONFIG": str(tmp_path / "kubeconfig"), "KUBECTL_DR_CONFIG": os.devnull,
                     "AZURE_STORAGE_ACCOUNT": "drbackups", "AZURE_STORAGE_KEY": "never-printed",
                     "AZURE_STORAGE_CONNECTION_STRING": "AccountName=xyzacct;AccountKey=never-printed",
                     "XDG_STATE_HOME": str(tmp_path / "state")})
    text = dr("schedule", "print", "--crontab", "--what", "etcd-pull", "--what", "copy",
              "--repo", "azure://drb/prod", "--to", "azure://offsite/prod", env=env)
    assert text.returncode == 0, text.stderr
    assert "never-printed" not in text.stdout and "AZURE_STORAGE_ACCOUNT=drbackups" in text.stdout
    assert "etcd snapshots pull --repo azure://drb/prod --yes" in text.stdout
    assert "backups copy --all --to azure://offsite/prod --repo azure://drb/prod" in text.stdout


def test_schedule_print_carries_the_azure_endpoints(tmp_path: Path) -> None:
    env = clean_env({"KUBECONFIG": str(tmp_path / "kubeconfig"), "KUBECTL_DR_CONFIG": os.devnull,
                     "AZURE_STORAGE_ACCOUNT": "drbackups", "XDG_STATE_HOME": str(tmp_path / "state")})
    text = dr("schedule", "print", "--crontab", "--what", "etcd-pull", "--what", "copy",
              "--what", "prune", "--keep-last", "3", "--repo", "azure://drb/prod",
              "--azure-endpoint", "https://drbackups.blob.core.usgovcloudapi.net",
              "--to", "azure://offsite/prod", "--to-azure-endpoint", "http://127.0.0.1:10000/devstoreaccount1",
              env=env)
    assert text.returncode == 0, text.stderr
    near = "--repo azure://drb/prod --azure-endpoint https://drbackups.blob.core.usgovcloudapi.net"
    assert f"etcd snapshots pull {near} --yes" in text.stdout
    assert f"backups prune --keep-last 3 {near} --yes" in text.stdout
    assert (f"backups copy --all --to azure://offsite/prod {near} "
            "--to-azure-endpoint http://127.0.0.1:10000/devstoreaccount1") in text.stdout
    # A target endpoint without an Azure target, or an endpoint that is no URL, is refused before anything prints.
    wrong = dr("schedule", "print", "--crontab", "--what", "copy", "--repo", "azure://drb/prod",
               "--to", "s3://offsite/prod", "--to-azure-endpoint", "http://127.0.0.1:10000/x", env=env)
    assert wrong.returncode == 2 and "--to-azure-endpoint" in wrong.stderr and not wrong.stdout
    bad = dr("schedule", "print", "--crontab", "--repo", "azure://drb/prod",
             "--azure-endpoint", "drbackups.blob.core.windows.net", env=env)
    assert bad.returncode == 1 and "not an http(s) URL" in bad.stderr and not bad.stdout


def test_etcd_snapshot_into_azure_with_a_copy(cluster: Any, azurite: Azurite, seaweedfs: S3Server,
                                              tmp_path: Path) -> None:
    """A real snapshot through a pod into Azure, encrypted, with --copy-to S3; verified with the identity."""
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "age.txt"
    key.write_text(f"{identity}\n")
    url = f"azure://{azurite.new_container()}/etcd"
    s3 = f"s3://{seaweedfs.new_bucket()}/etcd"
    env = _env(azurite, **seaweedfs.env(), KUBECONFIG=str(cluster.kubeconfig), KUBECTL_DR_REPO=url)
    at = ("--azure-endpoint", azurite.endpoint)
    refused = _dr(env, "etcd", "snapshot", *at, process=True)
    assert refused.returncode == 1 and "refusing to write an etcd snapshot unencrypted" in refused.stderr
    made = _ok(_dr(env, "etcd", "snapshot", *at, "--encrypt-to", str(identity.to_public()), "--copy-to", s3,
                   "-o", "json", process=True))
    assert made["location"] == f"{url}/{made['id']}" and made["repository"] == url
    assert made["copies"] == [{"repository": s3, "location": f"{s3}/{made['id']}", "encrypted": True}]
    assert f"etcd/{made['id']}/snapshot.db.age" in azurite.blobs(url.split("/")[2])
    _ok(_dr(env, "backups", "verify", made["id"], *at, "--identity", str(key), process=True))
    _ok(_dr(env, "backups", "verify", made["id"], "--repo", s3, "--identity", str(key), process=True))
    # An Azure --copy-to beside a local repository, checked before the cluster is touched.
    nowhere = _dr({**env, "KUBECTL_DR_REPO": str(tmp_path / "repo")}, "etcd", "snapshot", "--yes", *at,
                  "--copy-to", "azure://no-such-container/x", process=True)
    assert nowhere.returncode == 1 and "does not exist" in nowhere.stderr
    assert "saving a snapshot" not in nowhere.stderr


@pytest.fixture(scope="module")
def fast(cluster_factory: Any) -> Iterator[Any]:
    # The shape of tests/e2e/test_schedules.py's cluster (2 s cron minutes), so that one cluster serves both.
    yield cluster_factory(control_planes=1, workers=1, cron_period_seconds=2.0)


@pytest.mark.slow
def test_etcd_snapshots_pull_into_azure(fast: Any, azurite: Azurite) -> None:
    """Snapshots a schedule took on the node, pulled into Azure, each verified; a second pull copies nothing."""
    c = fast
    name, directory = "dr-azure-pull", "/var/lib/kubectl-dr/azure-snapshots"
    env = _env(azurite, KUBECONFIG=str(c.kubeconfig))
    _ok(_dr(env, "schedule", "create", "etcd-snapshot", "--name", name, "--cron", "* * * * *", "--keep", "2",
            "--dir", directory, process=True))
    try:
        def complete() -> list[dict[str, Any]]:
            found = _ok(_dr(env, "etcd", "snapshots", "list", "--dir", directory, "-o", "json", process=True))
            return [s for s in found["items"] if s["complete"]]

        eventually(complete, 120, "a complete snapshot from the schedule", interval=1.0)
        c.kubectl("patch", "cronjob", "-n", "kube-system", name, "--type", "merge", "-p", '{"spec":{"suspend":true}}')
        url = f"azure://{azurite.new_container()}/etcd"
        at = ("--azure-endpoint", azurite.endpoint)
        pulled = _ok(_dr(env, "etcd", "snapshots", "pull", "--to", url, *at, "--dir", directory, "--yes", "-o",
                         "json", process=True))
        assert pulled["pulled"] and pulled["alreadyInRepository"] == []
        backups = _ok(_dr(env, "backups", "list", "--repo", url, *at, "--type", "etcd-snapshot", "-o", "json",
                          process=True))
        assert {b["id"] for b in backups["items"]} == {p["id"] for p in pulled["pulled"]}
        for item in backups["items"]:
            _ok(_dr(env, "backups", "verify", item["id"], "--repo", url, *at, process=True))
        again = _ok(_dr(env, "etcd", "snapshots", "pull", "--to", url, *at, "--dir", directory, "--yes", "-o",
                        "json", process=True))
        assert len(again["alreadyInRepository"]) >= len(pulled["pulled"])
    finally:
        _dr(env, "schedule", "delete", name, "--yes", process=True)


def test_pvc_backup_into_azure_and_restore_from_it(cluster: Any, azurite: Azurite, tmp_path: Path) -> None:
    """A volume (files of uid 1000, a symlink) backed up into Azure with encryption, in several blocks;
    restored from Azure with the identity through a private staging directory that is gone afterwards."""
    from tests.datasets import make_claim, managed_pods, new_namespace, volume_dir

    ns = new_namespace(cluster, "azpvc")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    (vol / "big.bin").write_bytes(os.urandom(20 << 20))
    (vol / "dir").mkdir()
    (vol / "dir" / "note.txt").write_text("hello\n")
    os.symlink("dir/note.txt", vol / "link")
    for path in (vol / "big.bin", vol / "dir", vol / "dir" / "note.txt"):
        os.chown(path, 1000, 1000)
    os.utime(vol / "dir" / "note.txt", (1_000_000_000, 1_000_000_000))
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "age.txt"
    key.write_text(f"{identity}\n")
    url = f"azure://{azurite.new_container()}/volumes"
    staging = tmp_path / "tmp"
    staging.mkdir()
    env = _env(azurite, KUBECONFIG=str(cluster.kubeconfig), KUBECTL_DR_REPO=url, TMPDIR=str(staging))
    at = ("--azure-endpoint", azurite.endpoint)

    made = _ok(_dr(env, "pvc", "backup", "data", "-n", ns, *at, "--encrypt-to", str(identity.to_public()),
                   "-o", "json", timeout=300, process=True))
    assert made["location"] == f"{url}/{made['id']}" and made["parts"][0]["stored"]["file"] == "data.tar.age"
    _ok(_dr(env, "backups", "verify", made["id"], *at, "--identity", str(key), process=True))
    assert managed_pods(cluster, ns) == []

    (vol / "dir" / "note.txt").write_text("changed by the app after the backup\n")
    (vol / "big.bin").unlink()
    restored = _ok(_dr(env, "pvc", "restore", "data", "-n", ns, *at, "--from", made["id"], "--yes", "-i", str(key),
                       "-o", "json", timeout=300, process=True))
    assert restored["backup"] == made["id"]
    assert (vol / "dir" / "note.txt").read_text() == "hello\n" and (vol / "big.bin").stat().st_size == 20 << 20
    assert (vol / "dir" / "note.txt").stat().st_uid == 1000 and os.readlink(vol / "link") == "dir/note.txt"
    assert (vol / "dir" / "note.txt").stat().st_mtime == 1_000_000_000
    assert list(staging.iterdir()) == [] and managed_pods(cluster, ns) == []
