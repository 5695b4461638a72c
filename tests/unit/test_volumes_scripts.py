"""The rescue pod's transfer scripts, run here with GNU and with busybox tools on a small tree.

The count (dd "records in") and the SHA-256 the script reports must be those of the exact bytes on
stdout (backup) or of exactly `size` bytes of stdin (restore, whatever follows them), and a short
stream must show up as a different count.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
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
    (src / "small").write_bytes(b"x" * 1000)
    env = {"PATH": path}

    backup = subprocess.run(_local(scripts.backup_script(), src, scratch), capture_output=True, env=env)
    assert backup.returncode == 0, backup.stderr
    report = scripts.parse_report(backup.stderr)
    stream = backup.stdout
    assert (report.size, report.partial_blocks, report.tar_exit) == (len(stream), 0, 0)
    assert report.sha256 == hashlib.sha256(stream).hexdigest()

    restore_script = scripts.restore_script(len(stream), keep_owners=True)
    restore = subprocess.run(_local(restore_script, out, scratch), input=stream + b"\0" * 5000,
                             capture_output=True, env=env)
    assert restore.returncode == 0, restore.stderr
    restored = scripts.parse_report(restore.stderr)
    assert (restored.size, restored.sha256, restored.tar_exit) == (len(stream), report.sha256, 0)
    assert (out / "sub" / "big").read_bytes() == (src / "sub" / "big").read_bytes()

    short = subprocess.run(_local(restore_script, out, scratch), input=stream[:-1536], capture_output=True, env=env)
    cut = scripts.parse_report(short.stderr)
    assert cut.size == len(stream) - 1536 and cut.sha256 != report.sha256
