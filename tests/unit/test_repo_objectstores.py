"""What the S3 (SeaweedFS) and Azure Blob (Azurite) repositories must do alike: a killed writer's backup is
invisible and pruned, a live writer's is not, a delete cut short after its marker is finished by prune."""

from __future__ import annotations

import os

import pytest

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


@pytest.fixture(params=["s3", "azure"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "s3":
        return _s3(request.getfixturevalue("seaweedfs"))
    return _azure(request.getfixturevalue("azurite"))


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
