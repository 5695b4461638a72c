"""What `kubectl krew install --manifest=… --archive=…` does with an archive (internal/installation and
internal/download in krew), in Python: so the test installs the release exactly where and how krew would.

krew extracts only directories and regular files (any other entry type, a symlink included, fails the
install), refuses a name with ".." anywhere or an absolute name, moves each `files` entry from the staging
directory into the version's directory (a `from` naming an existing path moves it whole, else it is a glob),
checks that `bin` is inside that directory and links `bin/kubectl-NAME` to it with a relative symlink.
"""

from __future__ import annotations

import glob
import os
import posixpath
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any


class KrewRefuses(Exception):
    """krew would stop the install with this message."""


def install(name: str, version: str, platform: dict[str, Any], archive: Path, root: Path) -> Path:
    """Install like krew under `root` (KREW_ROOT); return the link krew puts on the PATH."""
    install_dir = root / "store" / name / version
    with tempfile.TemporaryDirectory(prefix="krew-downloads") as staging:
        extract(archive, Path(staging))
        install_dir.mkdir(parents=True)
        for op in platform.get("files") or [{"from": "*", "to": "."}]:
            move(Path(staging), install_dir, op["from"], op["to"])
    binary = install_dir / platform["bin"]
    if not binary.resolve().is_relative_to(install_dir.resolve()):
        raise KrewRefuses(f"the path {binary} does not extend the sub-path {install_dir}")
    if not binary.exists():
        raise KrewRefuses(f"source binary ({binary}) cannot be found in extracted archive")
    link = root / "bin" / f"kubectl-{name.replace('-', '_')}"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(binary, link.parent))
    return link


def extract(archive: Path, target: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name == "pax_global_header":
                continue
            if ".." in member.name:
                raise KrewRefuses(f"refusing to unpack archive with suspicious entry {member.name!r}")
            if member.name.startswith(("/", "\\")):
                raise KrewRefuses(f"refusing to unpack archive with absolute entry {member.name!r}")
            path = target / member.name
            if member.isdir():
                path.mkdir(mode=member.mode, parents=True, exist_ok=True)
            elif member.isreg():
                path.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                with source, path.open("wb") as out:
                    shutil.copyfileobj(source, out)
                path.chmod(member.mode)
            else:
                raise KrewRefuses(f"unable to handle file type {member.type!r} for {member.name!r} in tar")


def move(staging: Path, install_dir: Path, source: str, to: str) -> None:
    if to != posixpath.normpath(to):
        raise KrewRefuses(f"the provided path is not clean, {to!r} should be {posixpath.normpath(to)!r}")
    direct = staging / source
    if direct.exists():
        moves = [(direct, install_dir / (direct.name if to == "." else to))]
    else:
        matches = sorted(glob.glob(str(staging / source)))
        if not matches:
            raise KrewRefuses(f"no files in the plugin archive matched the glob pattern={source}")
        moves = [(Path(m), install_dir / to / Path(m).name) for m in matches]
    for src, dst in moves:
        if not dst.resolve().is_relative_to(install_dir.resolve()):
            raise KrewRefuses(f"can't move, move target {dst} is out of bounds")
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
