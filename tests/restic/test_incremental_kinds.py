"""An incremental restic backup reads the changed entries with tar after the pod listed them: an entry whose kind
changed in between (a symlink replaced by a file, a file by a symlink) must fail the backup, never become a
symlink without a target or a file without content. Real GNU tar and busybox tar write the archives."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kubectl_dr.errors import VerificationError
from kubectl_dr.volumes import entries
from kubectl_dr.volumes.restic_incremental import check_kind
from kubectl_dr.volumes.tar_reader import Member, TarReader

TARS = {"gnu": ["tar", "-c", "--no-recursion", "-f", "-"], "busybox": ["busybox", "tar", "-c", "-f", "-"]}


def members(tmp_path: Path, tar: str, names: list[str]) -> dict[str, Member]:
    if shutil.which(TARS[tar][0]) is None:
        pytest.skip(f"{TARS[tar][0]} not installed")
    out = subprocess.run([*TARS[tar], "--", *(f"./{n}" for n in names)], cwd=tmp_path / "vol",
                         capture_output=True, check=True).stdout
    seen: dict[str, Member] = {}
    reader = TarReader(on_member=lambda m: seen.__setitem__(m.path, m))
    reader.feed(out)
    reader.finish()
    return seen


@pytest.mark.parametrize("tar", ["gnu", "busybox"])
def test_an_entry_whose_kind_changed_since_the_listing_fails_the_backup(tmp_path: Path, tar: str) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    # As listed: "config" a symlink, "data" a file. As tar reads them: the other way round.
    (vol / "config").write_text("now a regular file\n")
    os.symlink("elsewhere", vol / "data")
    os.utime(vol / "config", (1_000_000_000, 1_000_000_000))
    found = members(tmp_path, tar, ["config", "data"])
    with pytest.raises(VerificationError, match=r"'config' was a symlink when the volume was listed and a file"):
        check_kind(found["config"], entries.SYMLINK, "backup ns/claim")
    with pytest.raises(VerificationError, match=r"'data' was a file when the volume was listed and a symlink") as e:
        check_kind(found["data"], entries.FILE, "backup ns/claim")
    assert e.value.hint is not None and "Nothing was kept" in e.value.hint
    # Unchanged kinds pass.
    check_kind(found["config"], entries.FILE, "backup ns/claim")
    check_kind(found["data"], entries.SYMLINK, "backup ns/claim")
