"""A volume restore makes no device node unless asked: a repository writer could plant one of the node's disk
(mode 0666) in a backup, for any privileged consumer of the volume to open (found by a review)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kubectl_dr.errors import DrError
from kubectl_dr.ui.console import TerminalConsole
from kubectl_dr.ui.terminals import Terminals
from kubectl_dr.volumes import source
from kubectl_dr.volumes.restore import RestoreOptions, refuse_devices


def _tar(path: Path, *, device: bool) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        data = tarfile.TarInfo("./app.conf")
        data.size, data.uid, data.mode = 3, 1000, 0o644
        tar.addfile(data, io.BytesIO(b"x=1"))
        if device:
            disk = tarfile.TarInfo("./disk")
            disk.type, disk.devmajor, disk.devminor, disk.mode = tarfile.BLKTYPE, 8, 0, 0o666
            tar.addfile(disk)
    return path


def test_a_backup_with_a_device_node_is_refused_unless_asked(tmp_path: Path) -> None:
    console = TerminalConsole(terminals=Terminals(False, False, False))
    planted = source.resolve(None, str(_tar(tmp_path / "planted.tar", device=True)), "shop", "data",  # type: ignore[arg-type]
                             console)
    with pytest.raises(DrError, match=r"holds 1 device node: disk \(block device\); nothing was changed") as info:
        refuse_devices(planted, RestoreOptions("shop", "data", "planted.tar"))
    assert "--allow-devices" in (info.value.hint or "")
    refuse_devices(planted, RestoreOptions("shop", "data", "planted.tar", allow_devices=True))
    plain = source.resolve(None, str(_tar(tmp_path / "app.tar", device=False)), "shop", "data",  # type: ignore[arg-type]
                           console)
    refuse_devices(plain, RestoreOptions("shop", "data", "app.tar"))
