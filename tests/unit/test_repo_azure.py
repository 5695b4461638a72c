"""The Azure Blob repository against Azurite: block blobs staged block by block with their MD5, the manifest
written last, interrupted writes invisible and pruned, deletes, damage found, errors in words, and where
the account, its credential and endpoint come from."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kubectl_dr.repo import BackupCorruptError, LocalRepository, RepoError, azureblob, open_repository
from kubectl_dr.repo.azureblob import IN_FLIGHT, MIN_BLOCK, AzureRepository, BufferReader, block_id, block_size_for
from kubectl_dr.repo.azureclient import DEV_ACCOUNT, DEV_KEY, AzureSettings, parse_azure_url
from kubectl_dr.repo.copying import copy_backup
from tests.azurite import Azurite
from tests.objectstores import Clock, write_backup
from tests.unit.traced_write import traced_backup

NO_CONFIG = {"KUBECTL_DR_CONFIG": os.devnull}


def _env(server: Azurite) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_STORAGE_")}
    return {**clean, **NO_CONFIG, **server.env()}


def _repo(server: Azurite, container: str, prefix: str = "team/prod", clock: Clock | None = None) -> AzureRepository:
    repo = open_repository(f"azure://{container}/{prefix}", _env(server), clock=clock or Clock())
    assert isinstance(repo, AzureRepository)
    return repo


def test_a_large_part_is_committed_from_blocks_of_the_block_size(azurite: Azurite) -> None:
    """The blob is its staged blocks, full ones and the short last one, with nothing left uncommitted."""
    container = azurite.new_container()
    repo = _repo(azurite, container)
    data = os.urandom(2 * MIN_BLOCK + 12345)
    backup_id = write_backup(repo, data, chunk=777_777)
    blocks = azurite.container(container).get_blob_client(f"team/prod/{backup_id}/data.tar").get_block_list()
    assert [b.size for b in blocks[0]] == [MIN_BLOCK, MIN_BLOCK, 12345] and blocks[1] == []
    assert azurite.uncommitted(container) == []
    with repo.open_part(repo.get(backup_id), "data.tar") as stream:
        assert stream.read() == data


def test_a_block_damaged_on_the_way_is_refused(azurite: Azurite) -> None:
    """Each block goes with its MD5; bytes that differ from it are refused by the service, said in words,
    and the backup is removed (nothing staged stays)."""
    container = azurite.new_container()
    repo = _repo(azurite, container)
    writer = repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "x")
    part = writer.open_part("data.tar")
    sink = part._sink
    original = sink._send

    def corrupting(number: int, body: bytes) -> str:
        sink._send = original  # only the first block
        ident = block_id(number)
        md5 = hashlib.md5(body).digest()
        damaged = bytes(body[:-1]) + bytes([body[-1] ^ 1])
        repo.call("staging a block", sink._blob._client.block_blob.stage_block, block_id=ident,
                  content_length=len(damaged), body=damaged, transactional_content_md5=md5)
        return ident

    sink._send = corrupting
    with pytest.raises(RepoError, match="received different bytes than were sent"):
        part.write(memoryview(os.urandom(MIN_BLOCK + 10)))
        part.close()
    assert writer.state == "aborted"
    assert azurite.blobs(container) == {} and azurite.uncommitted(container) == []


def test_a_block_changed_after_its_md5_was_taken_is_refused(azurite: Azurite,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's own path: the MD5 is taken over the pool's buffer and the SDK reads the block from it;
    a byte that changes between the two (damage on the way) is refused by the service."""

    class Damaging(BufferReader):
        def readinto(self, target: Any) -> int:
            n = super().readinto(target)
            if n and self.tell() == n:  # the first piece of the block only
                view = memoryview(target).cast("B")
                view[0] ^= 1
            return n

    monkeypatch.setattr(azureblob, "BufferReader", Damaging)
    container = azurite.new_container()
    repo = _repo(azurite, container)
    writer = repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "x")
    part = writer.open_part("data.tar")
    with pytest.raises(RepoError, match="received different bytes than were sent"):
        part.write(memoryview(os.urandom(MIN_BLOCK + 10)))
        part.close()
    assert writer.state == "aborted"
    assert azurite.blobs(container) == {} and azurite.uncommitted(container) == []


def test_a_block_echoed_with_another_md5_is_refused(azurite: Azurite) -> None:
    """Azure answers a staged block with the MD5 it computed (Azurite answers none): one that differs
    from ours ends the write, in words, and nothing staged stays."""
    container = azurite.new_container()
    repo = _repo(azurite, container)
    writer = repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "x")
    part = writer.open_part("data.tar")
    blob = part._sink._blob
    real = blob.stage_block

    def echoing_another(*args: Any, **kwargs: Any) -> Any:
        headers = real(*args, **kwargs)  # the block really goes to the service
        return {**headers, "content_md5": bytearray(16)}

    blob.stage_block = echoing_another
    with pytest.raises(RepoError, match=r"stored block 1 of .* with MD5 .* not the .* we sent"):
        part.write(memoryview(os.urandom(MIN_BLOCK + 10)))
        part.close()
    assert writer.state == "aborted"
    assert azurite.blobs(container) == {} and azurite.uncommitted(container) == []


@pytest.mark.parametrize("last", ["short", "nearly whole"])
def test_memory_stays_flat_over_many_blocks(azurite: Azurite, last: str) -> None:
    """Seven blocks staged IN_FLIGHT at a time, then a last one: Python's allocations peak at the pool
    (IN_FLIGHT + 1 blocks) plus a little; a block is sent from its buffer, never copied for the SDK, the
    last one (one byte short of whole) included."""
    container = azurite.new_container()
    repo = _repo(azurite, container)
    mib, tail = (7 * (MIN_BLOCK >> 20), 4) if last == "short" else (8 * (MIN_BLOCK >> 20) - 1, (1 << 20) - 1)
    manifest, peak, digest = traced_backup(repo, mib, tail)
    assert peak < (IN_FLIGHT + 1) * MIN_BLOCK + (3 << 20), f"peak {peak / (1 << 20):.1f} MiB"
    assert manifest.part("data.tar").sha256 == digest
    assert manifest.part("data.tar").size == (mib << 20) + tail
    assert repo.verify(repo.get(manifest.id)).id == manifest.id
    assert azurite.uncommitted(container) == []


def test_a_block_reader_reads_again_from_the_start() -> None:
    """The SDK seeks back to resend a block on a retry: the same bytes again, none past the end."""
    data = bytearray(os.urandom(10_000))
    reader = BufferReader(data)
    assert len(reader) == 10_000
    first = reader.read(4096) + reader.read()
    assert first == data and reader.read(10) == b"" and reader.tell() == 10_000
    assert reader.seek(0) == 0
    assert reader.read() == data
    assert reader.seek(-10, os.SEEK_END) == 9_990 and reader.read() == data[-10:]


def test_verify_reads_back_and_catches_damage(azurite: Azurite) -> None:
    container = azurite.new_container()
    repo = _repo(azurite, container)
    data = os.urandom(9_000_000)  # more than one 4 MiB read
    backup_id = write_backup(repo, data)
    blob = azurite.container(container).get_blob_client(f"team/prod/{backup_id}/data.tar")

    blob.upload_blob(data[:1000] + bytes([data[1000] ^ 1]) + data[1001:], overwrite=True)
    with pytest.raises(BackupCorruptError, match=r'part "data.tar" has SHA-256 [0-9a-f]{64} but the manifest says'):
        repo.verify(backup_id)
    found = repo.verification(repo.get(backup_id))
    assert found is not None and found.ok is False
    assert not repo.intact(repo.get(backup_id))
    blob.upload_blob(data[:-10], overwrite=True)
    with pytest.raises(BackupCorruptError, match="it is truncated"):
        repo.verify(backup_id)
    blob.delete_blob()
    with pytest.raises(BackupCorruptError, match=r'part "data\.tar" is missing'):
        repo.verify(backup_id)
    # A reader that runs into the damage fails at its last read, never silently.
    blob.upload_blob(data[:-1] + bytes([data[-1] ^ 1]), overwrite=True)
    stream = repo.open_part(repo.get(backup_id), "data.tar")
    with pytest.raises(BackupCorruptError):
        while stream.read(1 << 16):
            pass


def test_a_crafted_id_never_makes_a_blob_outside_the_prefix(azurite: Azurite) -> None:
    """A manifest whose ID climbs out of the prefix is reported, not listed; copying it is refused."""
    container = azurite.new_container()
    repo = _repo(azurite, container)
    backup_id = write_backup(repo, b"data")
    client = azurite.container(container)
    key = f"team/prod/{backup_id}/manifest.json"
    raw = client.download_blob(key).readall().decode()
    client.upload_blob(key, raw.replace(f'"id": "{backup_id}"', '"id": "../../evilid"'), overwrite=True)
    backups, problems = repo.scan()
    assert backups == [] and len(problems) == 1 and "invalid backup ID '../../evilid'" in problems[0][1]
    client.upload_blob(f"team/prod/{'x' * 201}/manifest.json", raw.encode())
    problems = repo.scan()[1]
    assert any("not a backup ID: it is 201 bytes long" in why for _, why in problems), problems
    assert repo.leftovers() == [] and repo.prune(keep_last=1).failed == []

    source = _repo(azurite, container, prefix="other")
    good = source.get(write_backup(source, b"good"))
    crafted = type(good)(replace(good.manifest, id="../team/evilid"), good.location, None, good.key)
    target = _repo(azurite, container, prefix="copies/x")
    with pytest.raises(RepoError, match="invalid backup ID"):
        copy_backup(source, crafted, target)
    assert not [k for k in azurite.blobs(container) if "evilid" in k or k.startswith("copies/")]


def test_copy_local_to_azure_and_back_encrypting_on_the_way(azurite: Azurite, tmp_path: Path) -> None:
    import pyrage

    from kubectl_dr.repo import load_identities, parse_recipients

    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"{identity}\n")
    keys = load_identities([str(key_file)])
    local = LocalRepository(tmp_path / "local", clock=Clock())
    data = os.urandom(MIN_BLOCK + 5000)
    with local.create("pvc", {"namespace": "shop", "pvc": "db"}, "shop-db") as writer:
        with writer.open_part("data.tar") as part:
            part.write(data)
        backup_id = writer.commit({}).id
    repo = _repo(azurite, azurite.new_container())
    result = copy_backup(local, local.get(backup_id), repo, recipients=parse_recipients([str(identity.to_public())]))
    assert result.status == "copied" and result.encrypted and result.location.startswith("azure://")
    there = repo.get(backup_id)
    assert there.manifest.part("data.tar").sha256 == hashlib.sha256(data).hexdigest()
    with repo.open_part(there, "data.tar", keys) as stream:
        assert stream.read() == data
    assert copy_backup(local, local.get(backup_id), repo).status == "present"

    back = LocalRepository(tmp_path / "back")
    assert copy_backup(repo, there, back).status == "copied"  # as stored: still encrypted
    with back.open_part(back.get(backup_id), "data.tar", keys) as stream:
        assert stream.read() == data


def test_errors_are_clear(azurite: Azurite, tmp_path: Path) -> None:
    env = _env(azurite)
    with pytest.raises(RepoError, match=r"the container 'no-such-container' does not exist at http://127.0.0.1:"):
        open_repository("azure://no-such-container/x", env).preflight()
    container = azurite.new_container()
    wrong_key = {**env, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string.replace(DEV_KEY[:8], "A" * 8)}
    # Azure says AuthenticationFailed, Azurite AuthorizationFailure: both a 403 that names the variables.
    with pytest.raises(RepoError, match=r"refused the credentials|access denied to azure://.*listing the repository") \
            as refused:
        open_repository(f"azure://{container}/x", wrong_key).preflight()
    assert "AZURE_STORAGE_ACCOUNT" in (refused.value.hint or "")

    # A SAS token that can only read: the write probe is refused with what to do.
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    sas = generate_container_sas(DEV_ACCOUNT, container, account_key=DEV_KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    reader = {k: v for k, v in env.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    reader |= {"AZURE_STORAGE_ACCOUNT": DEV_ACCOUNT, "AZURE_STORAGE_SAS_TOKEN": "?" + sas}
    read_only = open_repository(f"azure://{container}/x", reader, azure_endpoint=azurite.endpoint)
    read_only.preflight(create=False)  # listing is allowed
    with pytest.raises(RepoError, match=r"access denied to azure://.*writing a test blob") as denied:
        read_only.preflight()
    assert "racwdl" in (denied.value.hint or "")

    bare = {k: v for k, v in env.items() if not k.startswith("AZURE_STORAGE_")}
    with pytest.raises(RepoError, match="no Azure storage account for azure://c1x/p"):
        open_repository("azure://c1x/p", bare).preflight()
    with pytest.raises(RepoError, match="no Azure credentials for azure://c1x/p"):
        open_repository("azure://c1x/p", {**bare, "AZURE_STORAGE_ACCOUNT": "acct1"}).preflight()
    down = open_repository("azure://c1x/p", {**bare, "AZURE_STORAGE_ACCOUNT": DEV_ACCOUNT,
                                               "AZURE_STORAGE_KEY": DEV_KEY},
                           azure_endpoint=f"http://127.0.0.1:9/{DEV_ACCOUNT}")
    with pytest.raises(RepoError, match=r"cannot reach the Azure storage endpoint http://127\.0\.0\.1:9"):
        down.preflight()
    for bad in ("azure://Bad_Container/x", "azure://ab/x", "azure://a--b/x", "azure://c1x/a/../b"):
        with pytest.raises(RepoError, match=r"not a valid container name|must not contain"):
            open_repository(bad, env)


def test_settings_come_from_the_variables_then_the_config_file(tmp_path: Path) -> None:
    """The connection string wins; then account with key or SAS; then the config file's files. The
    endpoint: the flag, azure.endpoint, the connection string's, then the public cloud's."""
    conn = (f"DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey={DEV_KEY};"
            "EndpointSuffix=core.chinacloudapi.cn")
    s = AzureSettings.resolve(endpoint=None, config={}, env={"AZURE_STORAGE_CONNECTION_STRING": conn,
                                                              "AZURE_STORAGE_ACCOUNT": "other"})
    assert (s.account, s.key, s.account_url) == ("acct1", DEV_KEY, "https://acct1.blob.core.chinacloudapi.cn")
    s = AzureSettings.resolve(endpoint=None, config={}, env={"AZURE_STORAGE_ACCOUNT": "acct1",
                                                              "AZURE_STORAGE_SAS_TOKEN": "?sv=2024&sig=x%3D"})
    assert (s.key, s.sas_token, s.account_url) == (None, "sv=2024&sig=x%3D", "https://acct1.blob.core.windows.net")
    s = AzureSettings.resolve(endpoint=None, config={}, env={"AZURE_STORAGE_CONNECTION_STRING":
                                                              "UseDevelopmentStorage=true"})
    assert (s.account, s.account_url) == (DEV_ACCOUNT, f"http://127.0.0.1:10000/{DEV_ACCOUNT}")

    key_file = tmp_path / "key"
    key_file.write_text(DEV_KEY + "\n")
    config = {"account": "acct2", "endpoint": "https://acct2.blob.core.usgovcloudapi.net", "keyFile": str(key_file)}
    s = AzureSettings.resolve(endpoint=None, config=config, env={})
    assert (s.account, s.key, s.account_url) == ("acct2", DEV_KEY, "https://acct2.blob.core.usgovcloudapi.net")
    s = AzureSettings.resolve(endpoint="http://127.0.0.1:10000/acct2/", config=config,
                              env={"AZURE_STORAGE_KEY": "ZW52"})
    assert (s.key, s.account_url) == ("ZW52", "http://127.0.0.1:10000/acct2")

    with pytest.raises(RepoError, match=r"cannot read azure.keyFile"):
        AzureSettings.resolve(endpoint=None, config={"keyFile": str(tmp_path / "none")}, env={})
    with pytest.raises(RepoError, match="not an http"):
        AzureSettings.resolve(endpoint="acct.blob.core.windows.net", config={}, env={})
    with pytest.raises(RepoError, match="not a valid Azure storage account name"):
        AzureSettings.resolve(endpoint=None, config={}, env={"AZURE_STORAGE_ACCOUNT": "Bad_Name"})
    with pytest.raises(RepoError, match="field without '='"):
        AzureSettings.resolve(endpoint=None, config={}, env={"AZURE_STORAGE_CONNECTION_STRING": "garbage"})

    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"repository: azure://backups/prod\nazure:\n  account: acct2\n  keyFile: {key_file}\n")
    repo = open_repository(None, {"KUBECTL_DR_CONFIG": str(config_file)})
    assert isinstance(repo, AzureRepository) and repo.location == "azure://backups/prod"
    assert repo.settings.key == DEV_KEY
    config_file.write_text("azure:\n  accountKey: x\n")
    with pytest.raises(RepoError, match=r"unknown key azure.accountKey"):
        open_repository(None, {"KUBECTL_DR_CONFIG": str(config_file)})


def test_locations_and_block_sizes() -> None:
    where = parse_azure_url("azure://backups//team/prod/")
    assert (where.container, where.prefix, where.url) == ("backups", "team/prod", "azure://backups/team/prod")
    assert where.key("20261122T015512Z-pvc-x", "data.tar") == "team/prod/20261122T015512Z-pvc-x/data.tar"
    with pytest.raises(RepoError, match="a blob outside the prefix"):
        where.key("..", "data.tar")
    assert parse_azure_url("azure://backups").prefix == ""
    assert len({len(block_id(n)) for n in (1, 9, 10_000, 50_000)}) == 1  # one length for every block ID
    assert block_size_for(1, None) == MIN_BLOCK
    assert block_size_for(5001, None) == 2 * MIN_BLOCK
    total = sum(block_size_for(n, None) for n in range(1, 50_001))
    assert total > 6 * (1 << 40)
    assert max(block_size_for(n, None) for n in range(1, 50_001)) == 256 << 20
    # A known large size starts with larger blocks, so that 45 000 of them hold it with room to spare.
    assert block_size_for(1, 1 << 40) * 45_000 > 1.2 * (1 << 40)


def test_an_interrupted_copy_into_azure_is_invisible_and_finished_by_running_it_again(
        azurite: Azurite, tmp_path: Path) -> None:
    local = LocalRepository(tmp_path / "local", clock=Clock())
    data = os.urandom(3 * MIN_BLOCK + 4321)
    with local.create("pvc", {"namespace": "shop", "pvc": "db"}, "shop-db") as writer:
        with writer.open_part("data.tar") as part:
            part.write(data)
        backup_id = writer.commit({}).id
    container = azurite.new_container()
    url = f"azure://{container}/copies"
    script = textwrap.dedent(
        f"""
        import os, signal
        from kubectl_dr.repo import open_repository
        from kubectl_dr.repo.copying import copy_backup
        source = open_repository({str(local.path)!r}, dict(os.environ))
        target = open_repository({url!r}, dict(os.environ))
        done = 0
        def progress(n):
            global done
            done += n
            if done > {2 * MIN_BLOCK + (1 << 20)}:
                os.kill(os.getpid(), signal.SIGKILL)
        copy_backup(source, source.get({backup_id!r}), target, progress=progress)
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           env=_env(azurite))
    assert child.returncode == -9, child.stderr
    target = _repo(azurite, container, prefix="copies")
    assert target.list() == []  # nothing half-copied is visible
    assert [lo.stale for lo in target.leftovers()] == [True]

    result = copy_backup(local, local.get(backup_id), target)  # the same copy again finishes it
    assert result.status == "copied"
    assert target.leftovers() == [] and azurite.uncommitted(container) == []
    target.verify(backup_id)
    with target.open_part(target.get(backup_id), "data.tar") as stream:
        assert stream.read() == data


def test_the_same_container_on_two_endpoints_is_two_repositories() -> None:
    # A copy from Azurite (or a sovereign cloud) into public Azure may keep CONTAINER/PREFIX: not "itself".
    where = parse_azure_url("azure://drb/prod")
    public = AzureRepository(where, AzureSettings(account="drbackups", key=DEV_KEY))
    gov = AzureRepository(where, AzureSettings(account="drbackups", key=DEV_KEY,
                                               endpoint="https://drbackups.blob.core.usgovcloudapi.net"))
    again = AzureRepository(where, AzureSettings(account="drbackups", key=DEV_KEY))
    assert public.location == gov.location == "azure://drb/prod"
    assert public.place != gov.place and public.place == again.place


def test_the_sdk_is_used_without_aiohttp_and_signs_as_before(azurite: Azurite) -> None:
    """azure-storage-blob is imported as where aiohttp is not installed (import_sync_sdk): in a fresh process a
    backup is written, listed and read back through Azurite (every request signed by the SDK's shared-key
    policy) with neither aiohttp nor yarl imported, and importing aiohttp afterwards still works."""
    container = azurite.new_container()
    script = textwrap.dedent(f"""
        import os, sys
        from kubectl_dr.repo import open_repository
        repo = open_repository("azure://{container}/sync", dict(os.environ))
        writer = repo.create("pvc", {{"namespace": "shop", "pvc": "db"}}, "sync")
        with writer.open_part("data.tar") as part:
            part.write(memoryview(os.urandom(3 << 20)))
        manifest = writer.commit({{}})
        assert repo.verify(repo.get(manifest.id)).id == manifest.id
        assert [b.id for b in repo.list()] == [manifest.id]
        assert "aiohttp" not in sys.modules and "yarl" not in sys.modules, "the async stack was imported"
        import aiohttp, yarl
        print("ok", aiohttp.__name__, yarl.__name__)
    """)
    out = subprocess.run([sys.executable, "-c", script], env=_env(azurite), capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ok", "aiohttp", "yarl"]
