"""Malformed archives are refused before anything is created in the cluster: no lease, no pod, no scaled
workload, the volume untouched — each with what is wrong with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import tarcraft as tc
from tests.cli_runner import dr
from tests.datasets import make_claim, new_namespace, snapshot, volume_dir
from tests.e2e.test_pvc_consumers import deployment, replicas_and_records, running_pods
from tests.polling import eventually

FILE = tc.entry(b"./f", b"content")
CASES = {
    "a lone zero block": (FILE + bytes(512) + tc.entry(b"./hidden", b"x") + tc.END, "lone zero block"),
    "cut at an entry boundary": (FILE + tc.entry(b"./g", b"x"), "no end-of-archive marker"),
    "cut inside a header": (FILE + tc.header(b"./g")[:300], "cut short inside a header"),
    "a header half zeros": (FILE + tc.header(b"./g")[:300] + bytes(212), "wrong checksum"),
    "a file of zeros": (bytes(10240), "holds no entries"),
    "a hard link under a symlink": (FILE + tc.header(b"./s", type=b"2", link=b".")
                                    + tc.header(b"./h", type=b"1", link=b"./s/f") + tc.END, "beneath the symlink"),
    "a pax header": (tc.entry(b"./PaxHeader", b"20 path=elsewhere\n", type=b"x") + FILE + tc.END, "PAX"),
}




@pytest.fixture(scope="module")
def app(cluster: Any) -> tuple[str, Path]:
    ns = new_namespace(cluster, "bad")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, {}))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    vol = volume_dir(cluster, ns)
    (vol / "f").write_text("the app's data")
    return ns, vol


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_archive_changes_nothing(cluster: Any, app: tuple[str, Path], tmp_path: Path, case: str) -> None:
    ns, vol = app
    raw, reason = CASES[case]
    archive = tmp_path / "bad.tar"
    archive.write_bytes(raw)
    before = snapshot(vol)
    pods_before = cluster.kubectl("get", "pods", "-n", ns, "-o", "name").stdout
    result = dr("pvc", "restore", "data", "-n", ns, "--from", str(archive), "--yes", "--clean", cluster=cluster,
                subprocess=True)
    assert result.returncode == 1, result.stdout
    assert reason in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    assert cluster.kubectl("get", "pods", "-n", ns, "-o", "name").stdout == pods_before
    assert json.loads(cluster.kubectl("get", "leases", "-n", ns, "-o", "json").stdout)["items"] == []
    assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
    assert snapshot(vol) == before
