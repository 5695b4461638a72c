"""The snapshot's one exec: size and SHA-256 come on stderr beside the stream, and nothing is taken as good
unless the remote command succeeded and both match what arrived. Real busybox sh runs the serve script."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from kubectl_dr.errors import VerificationError
from kubectl_dr.etcd.snapshot_exposure import SERVE_SCRIPT, Served, compare, parse_served
from kubectl_dr.kube.exec import ExecResult

BUSYBOX = shutil.which("busybox")


def _ok(stderr: bytes, code: int = 0) -> ExecResult:
    return ExecResult(code, {"status": "Success" if code == 0 else "Failure"}, stderr, "v5.channel.k8s.io")


@pytest.mark.skipif(BUSYBOX is None, reason="needs busybox")
def test_the_serve_script_streams_the_file_and_hashes_it_beside(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40_000 + b"tail"
    f = tmp_path / "etcd.db"
    f.write_bytes(data)
    done = subprocess.run([str(BUSYBOX), "sh", "-c", SERVE_SCRIPT.format(file=f)], capture_output=True, check=False)
    assert done.returncode == 0 and done.stdout == data
    served = parse_served(_ok(done.stderr))
    assert served.remote_size == len(data) and served.remote_sha256 == hashlib.sha256(data).hexdigest()
    compare("cp-1", served, len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.skipif(BUSYBOX is None, reason="needs busybox")
def test_a_missing_file_fails_the_command(tmp_path: Path) -> None:
    done = subprocess.run([str(BUSYBOX), "sh", "-c", SERVE_SCRIPT.format(file=tmp_path / "gone")], capture_output=True,
                          check=False)
    assert done.returncode != 0 and done.stdout == b""


def test_short_damaged_silent_or_failed_streams_are_refused() -> None:
    sha = hashlib.sha256(b"x" * 10).hexdigest()
    good = parse_served(_ok(f"10\n{sha}  /snapshot/etcd.db\n".encode()))
    compare("cp-1", good, 10, sha)
    with pytest.raises(VerificationError, match="incomplete: received 9 of 10"):
        compare("cp-1", good, 9, sha)
    with pytest.raises(VerificationError, match="damaged"):
        compare("cp-1", good, 10, "0" * 64)
    with pytest.raises(VerificationError, match="printed no size and digest"):
        compare("cp-1", parse_served(_ok(b"10\n")), 10, sha)
    with pytest.raises(VerificationError, match="exited with code 1"):
        compare("cp-1", Served(_ok(b"", code=1), 10, sha), 10, sha)
    # busybox wc counts in 32 bits: past 4 GiB the low bits are what can be compared, the digest decides
    compare("cp-1", Served(_ok(b""), (5 << 32) % 2**32 + 7, sha), (5 << 32) + 7, sha)
