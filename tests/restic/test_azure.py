"""The azure: backend (restic's `azure:CONTAINER:/PREFIX`) against Azurite, judged by the real restic CLI.

restic 0.18 addresses an account only as `https://ACCOUNT.blob.SUFFIX/CONTAINER`; Azurite serves the
development account path-style over plain http (`http://127.0.0.1:PORT/devstoreaccount1`), which restic
cannot reach. So the oracle reads the same blobs another way: the container's blobs under the prefix are
downloaded into a local directory (same names: restic's default layout is the same on every backend) and
`restic check --read-data`, `restic snapshots` and `restic restore` run on that copy. A snapshot restic
wrote into a local directory, uploaded blob by blob, is read back through our Azure backend.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kubectl_dr.repo.azureclient import DEV_ACCOUNT, DEV_KEY, AzureSettings
from kubectl_dr.repo.errors import RepoError
from kubectl_dr.repo.restic import localfs, prune
from kubectl_dr.repo.restic.archiver import volume_root
from kubectl_dr.repo.restic.azurebackend import AzureBackend, parse, settings_for
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.retention import Policy
from tests import cli_runner, datasets
from tests.azurite import Azurite
from tests.cli_runner import clean_env
from tests.restic.oracle import PASSWORD, restic, restic_json

PW = PASSWORD.encode()


def _settings(azurite: Azurite) -> AzureSettings:
    return AzureSettings(account=DEV_ACCOUNT, endpoint=azurite.endpoint, key=DEV_KEY)


def download(azurite: Azurite, container: str, prefix: str, dest: Path) -> Path:
    """The blobs under PREFIX/ as files under dest: what restic reads of a local repository."""
    client = azurite.container(container)
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    for blob in client.list_blobs(name_starts_with=base or None):
        path = dest / blob.name[len(base):]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.download_blob(blob.name).readall())
    return dest


def upload(azurite: Azurite, container: str, prefix: str, src: Path) -> None:
    client = azurite.container(container)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        client.upload_blob(f"{prefix}/{path.relative_to(src).as_posix()}", path.read_bytes(), overwrite=True)


def dr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli_runner.dr(*args, env=clean_env({"RESTIC_PASSWORD": PASSWORD, **(env or {})}), timeout=120)


def test_parse_takes_restics_form_and_refuses_what_restic_would_misread() -> None:
    assert parse("azure:backups:/prod/restic") == ("backups", "prod/restic")
    assert parse("azure:backups:/") == ("backups", "")
    assert parse("azure:backups:") == ("backups", "")
    assert parse("azure:backups:/a//b/") == ("backups", "a/b")
    for bad, said in (("azure:backups", "colon before the path"), ("azure:Bad_Name:/x", "not a valid container"),
                      ("azure:backups:/a/../b", "'.' or '..'")):
        with pytest.raises(RepoError, match=said):
            parse(bad)


def test_restics_variables_win_over_ours_and_are_never_mixed_with_them() -> None:
    ours = {"AZURE_STORAGE_ACCOUNT": "ouracct", "AZURE_STORAGE_KEY": "b3Vy"}
    assert settings_for(ours) == AzureSettings(account="ouracct", key="b3Vy")
    both = {**ours, "AZURE_ACCOUNT_NAME": "theiracct", "AZURE_ACCOUNT_SAS": "?sv=1&sig=x",
            "AZURE_ENDPOINT_SUFFIX": "core.chinacloudapi.cn"}
    assert settings_for(both) == AzureSettings(account="theiracct", sas_token="sv=1&sig=x",
                                               endpoint="https://theiracct.blob.core.chinacloudapi.cn")
    # --azure-endpoint wins over restic's suffix (Azurite's path-style URL has no suffix form)
    flagged = settings_for(both, "http://127.0.0.1:10000/theiracct")
    assert flagged.endpoint == "http://127.0.0.1:10000/theiracct" and flagged.sas_token == "sv=1&sig=x"
    with pytest.raises(RepoError, match="not a valid Azure storage account name"):
        settings_for({"AZURE_ACCOUNT_NAME": "Not_Valid", "AZURE_ACCOUNT_KEY": "a2V5"})


def test_backup_incremental_restore_prune_and_restic_reads_the_container(azurite: Azurite, tmp_path: Path) -> None:
    container = azurite.new_container()
    ref = f"azure:{container}:/team/restic"
    src = tmp_path / "src"
    datasets.build_app_tree(src)
    repo = Repository.init(AzureBackend(ref, _settings(azurite)), PW)
    first = localfs.backup_dir(repo, src, snapshot_path="/data", hostname="shop/db", tags=["kind=pvc"])
    (src / "more").write_bytes(os.urandom(3_000_000))
    blobs_before = azurite.blobs(container)
    second = localfs.backup_dir(Repository.open(AzureBackend(ref, _settings(azurite)), PW), src,
                                snapshot_path="/data", hostname="shop/db", parent=first)
    added = {k: v for k, v in azurite.blobs(container).items() if k not in blobs_before}
    # incremental: the second backup stored about the new file, not the tree again
    assert sum(added.values()) < 3_000_000 + 200_000, added
    assert all(name.startswith("team/restic/") for name in azurite.blobs(container))
    assert any(name.startswith("team/restic/data/") and name.count("/") == 4 for name in added)

    local = download(azurite, container, "team/restic", tmp_path / "copy")
    restic(local, "check", "--read-data")
    assert [s["id"] for s in restic_json(local, "snapshots")] == [first.id, second.id]
    restic(local, "restore", second.id, "--target", str(tmp_path / "theirs"))
    assert datasets.differences(datasets.snapshot(src, root_entry=False),
                                datasets.snapshot(tmp_path / "theirs" / "data", root_entry=False)) == []

    # a snapshot restic wrote, uploaded blob by blob, restores through our backend
    (src / "by-restic").write_text("written by restic itself")
    restic(local, "backup", str(src), "--host", "laptop")
    upload(azurite, container, "team/restic", local)
    repo = Repository.open(AzureBackend(ref, _settings(azurite)), PW)
    (theirs,) = [s for s in repo.snapshots() if s.hostname == "laptop"]
    localfs.restore_to_dir(repo, volume_root(repo, theirs.tree, theirs.paths), tmp_path / "ours")
    assert datasets.differences(datasets.snapshot(src, root_entry=False),
                                datasets.snapshot(tmp_path / "ours", root_entry=False)) == []

    done = prune.prune(repo, Policy(last=1), dry_run=False)
    assert [d.snapshot.id for d in done.forgotten] == [first.id]
    again = download(azurite, container, "team/restic", tmp_path / "after-prune")
    restic(again, "check", "--read-data")
    assert {s["id"] for s in restic_json(again, "snapshots")} == {second.id, theirs.id}
    assert not azurite.blobs(container, "team/restic/locks/")  # the exclusive lock went with the prune


def test_the_cli_with_restics_or_our_variables_and_clear_errors(azurite: Azurite, tmp_path: Path) -> None:
    container = azurite.new_container()
    ref = f"restic:azure:{container}:/r"
    restics = {"AZURE_ACCOUNT_NAME": DEV_ACCOUNT, "AZURE_ACCOUNT_KEY": DEV_KEY}
    endpoint = ["--azure-endpoint", azurite.endpoint]
    src = tmp_path / "src"
    datasets.build_app_tree(src)
    Repository.init(AzureBackend(ref[len("restic:"):], _settings(azurite)), PW)
    snap = localfs.backup_dir(Repository.open(AzureBackend(ref[len("restic:"):], _settings(azurite)), PW), src,
                              snapshot_path="/data", hostname="shop/db")

    listed = dr("backups", "list", "--repo", ref, *endpoint, "-o", "json", env=restics)
    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)["items"]] == [snap.id]
    # our own variables (the connection string names the endpoint too)
    ours = dr("backups", "list", "--repo", ref, "-o", "json", env=azurite.env())
    assert ours.returncode == 0 and json.loads(ours.stdout)["items"][0]["id"] == snap.id, ours.stderr
    # restic's win: a wrong key in restic's variable is used (and refused) though ours are right
    refused = dr("backups", "list", "--repo", ref, *endpoint,
                 env={**azurite.env(), "AZURE_ACCOUNT_NAME": DEV_ACCOUNT, "AZURE_ACCOUNT_KEY": "d3Jvbmc="})
    assert refused.returncode == 1, refused.stderr
    assert "refused the credentials" in refused.stderr or "access denied to" in refused.stderr, refused.stderr
    assert ref[len("restic:"):] in refused.stderr and "AZURE_ACCOUNT_KEY" in refused.stderr

    # restic's SAS variable: a read-only token lists and reads; a backup's write is refused with what to do
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    sas = generate_container_sas(DEV_ACCOUNT, container, account_key=DEV_KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    reader = {"AZURE_ACCOUNT_NAME": DEV_ACCOUNT, "AZURE_ACCOUNT_SAS": "?" + sas}
    shown = dr("backups", "cat", snap.short_id, "big-uid/owned", "--repo", ref, *endpoint, env=reader)
    assert shown.returncode == 0 and shown.stdout == "openshift", shown.stderr
    read_only = Repository.open(AzureBackend(ref[len("restic:"):], settings_for(reader, azurite.endpoint)), PW)
    with pytest.raises(RepoError, match=r"access denied to azure:.*writing") as denied:
        localfs.backup_dir(read_only, src, snapshot_path="/data", hostname="shop/db")
    assert "racwdl" in (denied.value.hint or "") and sas not in str(denied.value)

    missing = dr("backups", "list", "--repo", "restic:azure:no-such-container:/r", *endpoint, env=restics)
    assert missing.returncode == 1 and "there is no restic repository" in missing.stderr, missing.stderr
    assert "'no-such-container' does not exist" in missing.stderr

    bare = dr("backups", "list", "--repo", ref, *endpoint)
    assert bare.returncode == 1 and "no Azure" in bare.stderr and "AZURE_ACCOUNT_NAME" in bare.stderr, bare.stderr
    assert DEV_KEY not in refused.stderr + bare.stderr + missing.stderr
