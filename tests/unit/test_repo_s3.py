"""The S3 repository against real S3 servers (SeaweedFS, and moto's server mode for the common paths):
multipart streaming, per-part checksums, the manifest written last, interrupted uploads, deletes."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from kubectl_dr.repo import BackupCorruptError, RepoError, open_repository
from kubectl_dr.repo.s3 import IN_FLIGHT, MIN_PART, S3Repository, part_size_for
from tests.objectstores import Clock, write_backup
from tests.s3server import S3Server
from tests.unit.traced_write import traced_backup


def _repo(server: S3Server, bucket: str, prefix: str = "team/prod", clock: Clock | None = None) -> S3Repository:
    repo = open_repository(f"s3://{bucket}/{prefix}", {**os.environ, **server.env()}, clock=clock or Clock())
    assert isinstance(repo, S3Repository)
    return repo


@pytest.mark.parametrize("last", ["short", "nearly whole"])
def test_memory_stays_flat_over_many_parts(seaweedfs: S3Server, last: str) -> None:
    """Seven parts uploaded IN_FLIGHT at a time, then a last one: Python's allocations peak at the pool
    (IN_FLIGHT + 1 parts) plus a little, not at what was written, and the object is the exact bytes. A last
    part one byte short of whole is sent from its buffer, not copied beside the full pool."""
    bucket = seaweedfs.new_bucket()
    repo = _repo(seaweedfs, bucket)
    mib, tail = (7 * (MIN_PART >> 20), 4) if last == "short" else (8 * (MIN_PART >> 20) - 1, (1 << 20) - 1)
    manifest, peak, digest = traced_backup(repo, mib, tail)
    assert peak < (IN_FLIGHT + 1) * MIN_PART + (4 << 20), f"peak {peak / (1 << 20):.1f} MiB"
    assert manifest.part("data.tar").sha256 == digest
    assert manifest.part("data.tar").size == (mib << 20) + tail
    assert repo.verify(repo.get(manifest.id)).id == manifest.id  # read back from the server and hashed
    assert seaweedfs.uploads(bucket) == []


def test_server_checksums_reject_a_damaged_part(seaweedfs: S3Server) -> None:
    """SeaweedFS checks x-amz-checksum-sha256: a part whose bytes differ from their checksum is refused
    with BadDigest, which we report in words (and the backup is removed)."""
    bucket = seaweedfs.new_bucket()
    repo = _repo(seaweedfs, bucket)
    writer = repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "x")
    part = writer.open_part("data.tar")
    sink = part._sink
    original = sink._send

    def corrupting(number: int, body: bytes) -> object:
        sink._send = original  # only the first part
        import kubectl_dr.repo.s3 as s3mod

        checksum = s3mod._b64sha(body)
        return repo.call("uploading a part", "upload_part", Key=sink._key, UploadId=sink._upload_id,
                         PartNumber=number, Body=body[:-1] + bytes([body[-1] ^ 1]), ChecksumSHA256=checksum)

    sink._send = corrupting
    with pytest.raises(RepoError, match="received different bytes than were sent"):
        part.write(os.urandom(MIN_PART + 10))
        part.close()
    assert writer.state == "aborted"
    assert seaweedfs.objects(bucket) == {} and seaweedfs.uploads(bucket) == []


def test_verify_reads_back_and_catches_damage(seaweedfs: S3Server) -> None:
    bucket = seaweedfs.new_bucket()
    repo = _repo(seaweedfs, bucket)
    data = os.urandom(3_000_000)
    backup_id = write_backup(repo, data)
    key = f"team/prod/{backup_id}/data.tar"
    client = seaweedfs.client()

    client.put_object(Bucket=bucket, Key=key, Body=data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])
    with pytest.raises(BackupCorruptError, match=r'part "data.tar" has SHA-256 [0-9a-f]{64} but the manifest says'):
        repo.verify(backup_id)
    record = repo.verification(repo.get(backup_id))
    assert record is not None and record.ok is False
    assert not repo.intact(repo.get(backup_id))

    client.put_object(Bucket=bucket, Key=key, Body=data[:-10])
    with pytest.raises(BackupCorruptError, match="it is truncated"):
        repo.verify(backup_id)
    client.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(BackupCorruptError, match=r'part "data\.tar" is missing'):
        repo.verify(backup_id)
    # A reader that runs into the damage fails at its last read, never silently.
    client.put_object(Bucket=bucket, Key=key, Body=data[:-1] + bytes([data[-1] ^ 1]))
    stream = repo.open_part(repo.get(backup_id), "data.tar")
    with pytest.raises(BackupCorruptError):
        while stream.read(1 << 16):
            pass


def test_a_copied_prefix_is_reported_not_listed_twice(seaweedfs: S3Server) -> None:
    bucket = seaweedfs.new_bucket()
    repo = _repo(seaweedfs, bucket)
    backup_id = write_backup(repo, b"data")
    client = seaweedfs.client()
    for name in ("data.tar", "manifest.json"):
        client.copy_object(Bucket=bucket, Key=f"team/prod/{backup_id}-copy/{name}",
                           CopySource={"Bucket": bucket, "Key": f"team/prod/{backup_id}/{name}"})
    backups, problems = repo.scan()
    assert [b.id for b in backups] == [backup_id] and backups[0].key == backup_id
    assert len(problems) == 1 and "another copy of backup" in problems[0][1]
    result = repo.prune(keep_last=0)
    assert result.failed == [] and [m.id for m in repo.list()] == [backup_id]


def test_preflight_errors_are_clear(seaweedfs: S3Server) -> None:
    env = {**os.environ, **seaweedfs.env()}
    with pytest.raises(RepoError, match="the bucket 'no-such-bucket' does not exist"):
        open_repository("s3://no-such-bucket/x", env).preflight()
    unreachable = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    repo = open_repository("s3://bucket/x", unreachable)
    assert isinstance(repo, S3Repository)
    repo.client.meta.config.retries["total_max_attempts"] = 1
    with pytest.raises(RepoError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:9"):
        repo.preflight()
    with pytest.raises(RepoError, match="not a valid bucket name"):
        open_repository("s3://Bad_Bucket/x", env)


def test_part_size_grows_to_reach_large_objects() -> None:
    assert part_size_for(1, None) == MIN_PART
    assert part_size_for(1001, None) == 2 * MIN_PART
    total = sum(part_size_for(n, None) for n in range(1, 10_001))
    assert total > 2.1 * (1 << 40)  # 6 MiB parts doubling every 1000 parts: ~2.2 TiB without a size hint
    assert max(part_size_for(n, None) for n in range(1, 10_001)) == 512 << 20
    # A known large size starts with larger parts, so that 9000 of them hold it with room to spare.
    assert part_size_for(1, 1 << 40) * 9000 > 1.2 * (1 << 40)


def test_a_crafted_id_never_makes_a_key_outside_the_prefix(seaweedfs: S3Server) -> None:
    """A manifest whose ID climbs out of the prefix is reported, not listed; copying it is refused."""
    from kubectl_dr.repo.copying import copy_backup

    bucket = seaweedfs.new_bucket()
    repo = _repo(seaweedfs, bucket)
    backup_id = write_backup(repo, b"data")
    client = seaweedfs.client()
    key = f"team/prod/{backup_id}/manifest.json"
    raw = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    client.put_object(Bucket=bucket, Key=key, Body=raw.replace(f'"id": "{backup_id}"', '"id": "../../evilid"'))
    backups, problems = repo.scan()
    assert backups == [] and len(problems) == 1 and "invalid backup ID '../../evilid'" in problems[0][1]
    # A prefix no ID can name (too long for one): reported, its manifest never read, nothing else breaks.
    client.put_object(Bucket=bucket, Key=f"team/prod/{'x' * 201}/manifest.json", Body=raw.encode())
    problems = repo.scan()[1]
    assert any("not a backup ID: it is 201 bytes long" in why for _, why in problems), problems
    assert repo.leftovers() == [] and repo.prune(keep_last=1).failed == []

    source = _repo(seaweedfs, bucket, prefix="other")
    good_id = write_backup(source, b"good")
    good = source.get(good_id)
    crafted = type(good)(replace(good.manifest, id="../team/evilid"), good.location, None, good.key)
    target = _repo(seaweedfs, bucket, prefix="copies/x")
    with pytest.raises(RepoError, match="invalid backup ID"):
        copy_backup(source, crafted, target)
    assert not [k for k in seaweedfs.objects(bucket) if "evilid" in k or k.startswith("copies/")]


def test_a_failed_part_fails_every_later_write_and_close(seaweedfs: S3Server) -> None:
    """A part the server refused keeps the sink failing: a caller that caught the error and wrote on cannot
    close the upload into an object that lacks the part (S3 accepts part numbers with gaps)."""
    bucket = seaweedfs.new_bucket()
    repo = _repo(seaweedfs, bucket)
    writer = repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "x")
    sink = writer._staging.open_sink("data.tar", hash_stored=False, size_hint=None)
    original = sink._send

    def refusing(number: int, body: bytes) -> object:
        if number == 1:
            raise RepoError("part 1 refused")
        return original(number, body)

    sink._send = refusing  # type: ignore[method-assign]
    chunk = memoryview(os.urandom(MIN_PART))
    with pytest.raises(RepoError, match="part 1 refused"):
        for _ in range(IN_FLIGHT + 2):
            sink.write(chunk)
    for attempt in (lambda: sink.write(chunk), sink.close):
        with pytest.raises(RepoError, match="part 1 refused"):
            attempt()
    sink.abort()
    writer.abort()
    assert seaweedfs.objects(bucket) == {} and seaweedfs.uploads(bucket) == []
