"""The serve container's follow script, run by real busybox (its applets first on PATH, as in the helper image)
against a writer that behaves as etcdctl's `snapshot save` does: FILE.part written front to back, synced,
closed, then renamed to FILE; removed when the save fails. What comes out on stdout must be the final file,
byte for byte, and the size and SHA-256 on stderr must be the final file's; a save that fails must fail the
script."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kubectl_dr.etcd.snapshot_exposure import compare, parse_served
from kubectl_dr.etcd.snapshot_follow import ENDED_BY_POD, NOT_THE_FILE, SAVE_FAILED, follow_script
from kubectl_dr.kube.exec import ExecResult

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox")
APPLETS = ("sh", "cat", "sleep", "stat", "sha256sum", "mkfifo", "rm", "kill")


@pytest.fixture
def busybox_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH holds only busybox applets: the helper image's tools, not this machine's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    assert BUSYBOX is not None
    for applet in APPLETS:
        (bin_dir / applet).symlink_to(BUSYBOX)
    return {"PATH": str(bin_dir)}


def _writer(target: Path, data: bytes, *, fail_at: int | None = None, replace_with: bytes | None = None,
            chunk: int = 64 * 1024, pause: float = 0.002) -> threading.Thread:
    """etcdctl's save, slowed down so the script reads a growing file: FILE.part, then the rename (or not)."""
    part = target.with_name(target.name + ".part")

    def save() -> None:
        time.sleep(0.1)  # the script is waiting for the part file
        with open(part, "wb") as f:
            for start in range(0, len(data), chunk):
                if fail_at is not None and start >= fail_at:
                    break
                f.write(data[start : start + chunk])
                f.flush()
                time.sleep(pause)
            os.fsync(f.fileno())
        if fail_at is not None:
            part.unlink()  # etcdctl removes its part file when the save fails
        elif replace_with is not None:
            other = target.with_name("other")
            other.write_bytes(replace_with)
            other.replace(target)
            part.unlink()
        else:
            part.replace(target)

    thread = threading.Thread(target=save)
    thread.start()
    return thread


def _run(target: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    assert BUSYBOX is not None
    ended = target.with_name(".kubectl-dr-ended")
    return subprocess.run([BUSYBOX, "sh", "-c", follow_script(str(target), str(ended))], env=env, capture_output=True,
                          timeout=60, check=False)


def _ok(stderr: bytes) -> ExecResult:
    return ExecResult(0, {"status": "Success"}, stderr, "v5.channel.k8s.io")


def test_the_bytes_streamed_while_the_file_grows_are_the_final_file(tmp_path: Path,
                                                                    busybox_path: dict[str, str]) -> None:
    data = os.urandom(3 * 1024 * 1024 + 32)
    target = tmp_path / "etcd.db"
    writer = _writer(target, data)
    done = _run(target, busybox_path)
    writer.join()
    assert done.returncode == 0, done.stderr
    assert done.stdout == data == target.read_bytes()
    served = parse_served(_ok(done.stderr))
    assert served.remote_size == len(data) and served.remote_sha256 == hashlib.sha256(data).hexdigest()
    compare("cp-1", served, len(done.stdout), hashlib.sha256(done.stdout).hexdigest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "etcd.db"]  # the hash's pipe is gone


def test_a_save_that_ended_before_the_script_started_is_served_whole(tmp_path: Path,
                                                                      busybox_path: dict[str, str]) -> None:
    data = os.urandom(200_000)
    target = tmp_path / "etcd.db"
    target.write_bytes(data)
    done = _run(target, busybox_path)
    assert done.returncode == 0 and done.stdout == data
    served = parse_served(_ok(done.stderr))
    assert (served.remote_size, served.remote_sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_a_save_that_fails_midway_fails_the_script(tmp_path: Path, busybox_path: dict[str, str]) -> None:
    data = os.urandom(2 * 1024 * 1024)
    target = tmp_path / "etcd.db"
    writer = _writer(target, data, fail_at=1024 * 1024)
    done = _run(target, busybox_path)
    writer.join()
    assert done.returncode == SAVE_FAILED, done.stderr
    assert b"the save failed" in done.stderr
    assert parse_served(_ok(done.stderr)).remote_size is None  # no size: compare() could never pass
    assert not target.exists()


def test_a_part_file_the_pod_removed_itself_is_not_blamed_on_etcdctl(tmp_path: Path,
                                                                     busybox_path: dict[str, str]) -> None:
    """The serve container's dead-man loop (no heartbeat from the run, or the pod deleted) marks its removal of
    the snapshot: the script says so, not that etcdctl gave up."""
    data = os.urandom(2 * 1024 * 1024)
    target = tmp_path / "etcd.db"
    (tmp_path / ".kubectl-dr-ended").touch()
    writer = _writer(target, data, fail_at=1024 * 1024)
    done = _run(target, busybox_path)
    writer.join()
    assert done.returncode == ENDED_BY_POD, done.stderr
    assert b"the pod removed" in done.stderr and b"no heartbeat from this run" in done.stderr
    assert b"etcdctl" not in done.stderr


def test_a_final_file_that_is_not_the_one_streamed_fails_the_script(tmp_path: Path,
                                                                     busybox_path: dict[str, str]) -> None:
    data = os.urandom(1024 * 1024)
    target = tmp_path / "etcd.db"
    writer = _writer(target, data, replace_with=b"x" * len(data))
    done = _run(target, busybox_path)
    writer.join()
    assert done.returncode == NOT_THE_FILE, done.stderr
    assert b"is not the file that was streamed" in done.stderr
