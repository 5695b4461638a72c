"""The rescue pod's transfer scripts, run here with GNU and with busybox tools on a small tree.

The count (dd's records) and the SHA-256 the script reports must be those of the exact bytes on
stdout (backup) or of exactly `size` bytes of stdin (restore, whatever follows them), and a short
stream must show up as a partial block or a different count.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from kubectl_dr.volumes import scripts

BUSYBOX = "/usr/bin/busybox"
APPLETS = ("sh", "tar", "tee", "dd", "mkfifo", "sha256sum", "sed", "cut", "cat", "rm")


def _toolbox(tmp_path: Path, flavour: str) -> str:
    if flavour == "gnu":
        return "/usr/bin:/bin"
    if not Path(BUSYBOX).exists():
        pytest.skip(f"{BUSYBOX} not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for applet in APPLETS:
        (bin_dir / applet).symlink_to(BUSYBOX)
    return str(bin_dir)


def _local(script: str, data: Path, scratch: Path) -> list[str]:
    return ["sh", "-c", script.replace(scripts.SCRATCH, str(scratch)).replace(scripts.DATA, str(data))]


@pytest.mark.parametrize("flavour", ["gnu", "busybox"])
def test_backup_and_restore_scripts_report_the_exact_stream(tmp_path: Path, flavour: str) -> None:
    if flavour == "gnu" and not shutil.which("tar"):
        pytest.skip("GNU tar not installed")
    path = _toolbox(tmp_path, flavour)
    src, out, scratch = tmp_path / "src", tmp_path / "out", tmp_path / "scratch"
    for d in (src / "sub", out, scratch):
        d.mkdir(parents=True)
    (src / "sub" / "big").write_bytes(os.urandom(3 << 20))  # several of dd's 1 MiB output blocks
    (src / "small").write_bytes(b"x" * 1000)  # the archive is not a whole number of 64 KiB blocks
    env = {"PATH": path}

    backup = subprocess.run(_local(scripts.backup_script(), src, scratch), capture_output=True, env=env)
    assert backup.returncode == 0, backup.stderr
    report = scripts.parse_report(backup.stderr)
    stream = backup.stdout
    assert (report.size, report.partial_blocks, report.tar_exit) == (len(stream), 0, 0)
    assert report.sha256 == hashlib.sha256(stream).hexdigest()
    assert len(stream) % scripts.BIG == 0, "the last block is padded to a whole 64 KiB"
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        names = sorted(archive.getnames())
    assert names == [".", "./small", "./sub", "./sub/big"], "tar ignores the padding"

    restore_script = scripts.restore_script(len(stream), keep_owners=True)
    restore = subprocess.run(_local(restore_script, out, scratch), input=stream + b"\0" * 5000,
                             capture_output=True, env=env)
    assert restore.returncode == 0, restore.stderr
    restored = scripts.parse_report(restore.stderr)
    assert (restored.size, restored.sha256, restored.tar_exit) == (len(stream), report.sha256, 0)
    assert (out / "sub" / "big").read_bytes() == (src / "sub" / "big").read_bytes()

    for cut_at in (len(stream) - 1536, len(stream) - scripts.BIG, 700 * 512):
        short = subprocess.run(_local(restore_script, out, scratch), input=stream[:cut_at], capture_output=True,
                               env=env)
        cut = scripts.parse_report(short.stderr)
        assert cut.partial_blocks or cut.size != len(stream), cut_at
        assert cut.sha256 == hashlib.sha256(stream[:cut_at]).hexdigest() != report.sha256


@pytest.mark.parametrize("flavour", ["gnu", "busybox"])
@pytest.mark.parametrize("size", [512, 65536, 65536 + 512, 3 * 65536 + 10240])
def test_restore_counts_exactly_size_bytes(tmp_path: Path, flavour: str, size: int) -> None:
    """Whole 64 KiB blocks and a tail of 512-byte ones: the exact size, whatever comes after it."""
    path = _toolbox(tmp_path, flavour)
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    data = os.urandom(size)  # not a tar: tar fails, the count and hash must still be exact
    run = subprocess.run(_local(scripts.restore_script(size, keep_owners=True), out, scratch),
                         input=data + b"more after the end" * 100, capture_output=True, env={"PATH": path})
    report = scripts.parse_report(run.stderr)
    assert (report.size, report.partial_blocks) == (size, 0)
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    assert report.tar_exit != 0
