"""What the S3 (SeaweedFS, moto) and Azure Blob (Azurite) repositories must do alike: parts streamed in many
pieces and read back byte for byte with the manifest last, a killed writer's backup invisible and pruned, a
live writer's not, a delete cut short after its marker finished by prune."""

from __future__ import annotations

import hashlib
import os

import pytest

from kubectl_dr.repo import RepoError
from kubectl_dr.repo.azureblob import MIN_BLOCK
from kubectl_dr.repo.s3 import MIN_PART
from tests.azurite import Azurite
from tests.objectstores import Clock, Store, killed_writer, write_backup
from tests.s3server import S3Server


def _s3(server: S3Server) -> Store:
    bucket = server.new_bucket()
    return Store(f"s3://{bucket}", {**os.environ, **server.env()}, MIN_PART,
                 lambda prefix: server.objects(bucket, prefix), lambda: server.uploads(bucket), "1 incomplete uploads",
                 lambda key, data: server.client().put_object(Bucket=bucket, Key=key, Body=data))


def _azure(server: Azurite) -> Store:
    container = server.new_container()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_STORAGE_")}
    env = {**clean, "KUBECTL_DR_CONFIG": os.devnull, **server.env()}
    return Store(f"azure://{container}", env, MIN_BLOCK, lambda prefix: server.blobs(container, prefix),
                 lambda: server.uncommitted(container), "1 with staged blocks only",
                 lambda key, data: server.container(container).upload_blob(key, data))


def _store(request: pytest.FixtureRequest, server: str) -> Store:
    if server == "azure":
        return _azure(request.getfixturevalue("azurite"))
    return _s3(request.getfixturevalue("seaweedfs" if server == "seaweedfs" else "moto_s3"))


@pytest.fixture(params=["seaweedfs", "azure"])
def store(request: pytest.FixtureRequest) -> Store:
    return _store(request, request.param)


@pytest.fixture(params=["seaweedfs", "moto", "azure"])
def every_store(request: pytest.FixtureRequest) -> Store:
    """Each server in turn, moto too (for the common paths)."""
    return _store(request, request.param)


def test_parts_roundtrip_manifest_last_and_checks(every_store: Store) -> None:
    """Large enough for three parts, written in odd-sized chunks; read back byte for byte."""
    store = every_store
    repo = store.repo()
    repo.preflight(1 << 30)
    data = os.urandom(2 * store.part + 12345)
    with repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "shop-db") as writer:
        with writer.open_part("data.tar") as part:
            for i in range(0, len(data), 777_777):
                part.write(data[i : i + 777_777])
        with writer.open_part("entries.json") as small:
            small.write(b'{"entries": []}')
        assert repo.list() == []  # parts are there, the manifest is not: nothing to see
        assert any(k.endswith("/.owner") for k in store.objects(""))
        manifest = writer.commit({"files": 1})
    assert manifest.part("data.tar").sha256 == hashlib.sha256(data).hexdigest()
    assert store.objects("") == {f"team/prod/{manifest.id}/data.tar": len(data),
                                 f"team/prod/{manifest.id}/entries.json": 15,
                                 f"team/prod/{manifest.id}/manifest.json": len(manifest.to_json().encode())}
    assert store.staged() == []

    backup = repo.resolve("latest", "pvc", {"namespace": "shop", "pvc": "db"})
    assert backup.location == f"{store.url}/team/prod/{manifest.id}"
    assert repo.verify(backup).id == manifest.id
    with repo.open_part(backup, "data.tar") as stream:
        assert stream.read() == data
    assert repo.local_file(backup, "data.tar") is None
    with pytest.raises(RepoError, match="not in a local directory"):
        backup.part_path("data.tar")


def test_an_interrupted_write_is_invisible_and_pruned(store: Store) -> None:
    repo = store.repo()
    kept = write_backup(repo, b"complete")
    dead = killed_writer(f"{store.url}/team/prod", store.env, 2 * store.part + (1 << 20))
    assert f"team/prod/{dead}/.owner" in store.objects("")
    assert store.staged() == [f"team/prod/{dead}/data.tar"]

    assert [m.id for m in repo.list()] == [kept]
    (leftover,) = repo.leftovers()
    assert leftover.stale and leftover.name.startswith(f"{dead}/") and store.staged_words in leftover.name
    dry = repo.prune(keep_last=5, dry_run=True)
    assert dry.leftovers == [leftover.name] and store.staged()
    result = repo.prune(keep_last=5)
    assert result.leftovers == [leftover.name] and result.removed == [] and result.failed == []
    assert store.staged() == []
    assert all(k.startswith(f"team/prod/{kept}/") for k in store.objects(""))


def test_a_live_writer_is_not_pruned(store: Store) -> None:
    repo = store.repo()
    writer = repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "x")
    part = writer.open_part("data.tar")
    part.write(os.urandom(store.part + 1))
    (leftover,) = repo.leftovers()
    assert not leftover.stale
    repo.prune(keep_last=0)
    assert store.objects(f"team/prod/{writer.id}/")
    part.close()
    writer.commit()
    assert [m.id for m in repo.list()] == [writer.id]


def test_delete_and_an_interrupted_delete(store: Store) -> None:
    clock = Clock()
    repo = store.repo(clock=clock)
    one = write_backup(repo, b"1")
    clock.tick()
    two = write_backup(repo, b"2")
    assert repo.delete(one).id == one
    assert [m.id for m in repo.list()] == [two]
    assert not store.objects(f"team/prod/{one}/")
    # A delete cut short after its marker: the backup is gone for listings, and prune finishes the job.
    store.put(f"team/prod/{two}/.deleting", b"")
    assert repo.list() == []
    assert [lo.stale for lo in repo.leftovers()] == [True]
    repo.prune(keep_last=1)
    assert store.objects("") == {}
