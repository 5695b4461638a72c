"""The pod's tools on this machine: busybox's applets alone on PATH, or the system's GNU tools, for the scripts
the rescue pod runs (both kinds of image run them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

APPLETS = ("sh", "dd", "wc", "tee", "cat", "rm", "mkfifo", "sha256sum", "true", "sed", "cut", "grep", "stat")


def tools(tmp_path: Path, flavour: str) -> dict[str, str]:
    """An environment whose PATH has only busybox's applets (`busybox`) or the system's tools (`gnu`)."""
    if flavour == "gnu":
        return {**os.environ}
    bin_dir = tmp_path / "bb"
    bin_dir.mkdir()
    busybox = shutil.which("busybox")
    assert busybox is not None, "busybox is installed by .ci/run"
    for applet in APPLETS:
        (bin_dir / applet).symlink_to(busybox)
    return {"PATH": str(bin_dir)}
