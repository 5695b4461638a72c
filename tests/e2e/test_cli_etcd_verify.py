"""`kubectl dr etcd verify` on real snapshots (the first test runs the installed executable, the rest its entry
point in-process); no cluster involved."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubectl_dr import units
from tests.cli_runner import dr
from tests.unit.etcd_scratch import ScratchEtcd, etcd_available, snapshot_status

pytestmark = pytest.mark.skipif(not etcd_available(), reason="needs /usr/bin/etcd and /usr/bin/etcdctl")


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("verify-cli")
    rng = random.Random(5)
    with ScratchEtcd(work, name="cli") as etcd:
        for i in range(500):
            etcd.put(f"/registry/configmaps/default/cm-{i}".encode(), rng.randbytes(rng.randrange(10, 3000)))
        etcd.put(b"/registry/secrets/default/big", rng.randbytes(400_000))
        path = etcd.snapshot_save(work / "snap.db")
    yield path


def test_verify_json_agrees_with_etcdctl(snapshot: Path) -> None:
    result = dr("etcd", "verify", str(snapshot), "-o", "json", subprocess=True)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    expected = snapshot_status(snapshot)
    assert data["valid"] is True
    assert {k: data[k] for k in ("hash", "revision", "totalKey", "totalSize")} == {
        k: expected[k] for k in ("hash", "revision", "totalKey", "totalSize")
    }
    assert data["hasTrailer"] is True


def test_verify_table(snapshot: Path) -> None:
    """The table says the size as every table does (binary units); the exact bytes are in -o json."""
    result = dr("etcd", "verify", str(snapshot))
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split()[:2] == ["HASH", "REVISION"]
    expected = snapshot_status(snapshot)
    # etcdctl's own table prints the hash in hex as well; columns are three spaces apart, a size holds one
    assert re.split(r" {3,}", row)[:4] == [
        f"{expected['hash']:x}",
        str(expected["revision"]),
        str(expected["totalKey"]),
        units.size(expected["totalSize"]),
    ]
    assert units.size(expected["totalSize"]).endswith(" MiB")


def test_truncated_file_exits_1_with_verdict(snapshot: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut.db"
    bad.write_bytes(snapshot.read_bytes()[:-100])
    result = dr("etcd", "verify", str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {bad}: snapshot is truncated: {bad.stat().st_size} bytes")

    as_json = dr("etcd", "verify", str(bad), "-o", "json")
    assert as_json.returncode == 1
    verdict = json.loads(as_json.stdout)
    assert verdict["valid"] is False and verdict["reason"] == "truncated"


def test_altered_file_exits_1(snapshot: Path, tmp_path: Path) -> None:
    bad = tmp_path / "flip.db"
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad.write_bytes(bytes(data))
    result = dr("etcd", "verify", str(bad))
    assert result.returncode == 1
    assert "SHA-256 trailer does not match the contents" in result.stderr


def test_not_a_snapshot_and_missing_file(tmp_path: Path) -> None:
    text = tmp_path / "kubeconfig"
    text.write_text("apiVersion: v1\nkind: Config\n")
    result = dr("etcd", "verify", str(text))
    assert result.returncode == 1
    assert "not an etcd snapshot" in result.stderr

    missing = dr("etcd", "verify", str(tmp_path / "nope.db"))
    assert missing.returncode == 1
    assert "cannot open the file" in missing.stderr


def test_bare_database_needs_the_flag(snapshot: Path, tmp_path: Path) -> None:
    bare = tmp_path / "db"
    bare.write_bytes(snapshot.read_bytes()[:-32])
    assert dr("etcd", "verify", str(bare)).returncode == 1
    result = dr("etcd", "verify", str(bare), "--allow-missing-trailer", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hasTrailer"] is False
