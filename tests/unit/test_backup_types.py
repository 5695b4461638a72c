"""The --type choices of `backups` are exactly the types the commands write."""

from __future__ import annotations

import re
from pathlib import Path

import kubectl_dr
from kubectl_dr.apps import TYPE as APP
from kubectl_dr.cli.backups import BACKUP_TYPES, TYPE_ALIASES
from kubectl_dr.controlplane.backup import BACKUP_TYPE as CONTROL_PLANE
from kubectl_dr.etcd.snapshot import BACKUP_TYPE as ETCD
from kubectl_dr.rook.restore import BACKUP_TYPE as ROOK
from kubectl_dr.volumes.backup import TYPE as PVC


def test_backup_types_are_the_written_ones() -> None:
    assert set(BACKUP_TYPES) == {PVC, ETCD, CONTROL_PLANE, APP, ROOK}
    # A type named anywhere in the code (`BACKUP_TYPE = "…"`) is one `--type` accepts: rook-mon-quorum was not.
    declared = {m for f in Path(kubectl_dr.__file__).parent.rglob("*.py")
                for m in re.findall(r'^(?:BACKUP_)?TYPE = "([a-z-]+)"', f.read_text(), re.M)}
    assert declared and declared <= set(BACKUP_TYPES), declared - set(BACKUP_TYPES)
    assert set(TYPE_ALIASES.values()) <= set(BACKUP_TYPES)


def test_the_repository_knows_the_app_and_claim_types() -> None:
    from kubectl_dr.repo.families import APP_TYPE, CLAIM_TYPE

    assert (APP_TYPE, CLAIM_TYPE) == (APP, PVC)
