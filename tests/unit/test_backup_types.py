"""The --type choices of `backups` are exactly the types the commands write."""

from __future__ import annotations

from kubectl_dr.apps import TYPE as APP
from kubectl_dr.cli.backups import BACKUP_TYPES, TYPE_ALIASES
from kubectl_dr.controlplane.backup import BACKUP_TYPE as CONTROL_PLANE
from kubectl_dr.etcd.snapshot import BACKUP_TYPE as ETCD
from kubectl_dr.volumes.backup import TYPE as PVC


def test_backup_types_are_the_written_ones() -> None:
    assert set(BACKUP_TYPES) == {PVC, ETCD, CONTROL_PLANE, APP}
    assert set(TYPE_ALIASES.values()) <= set(BACKUP_TYPES)


def test_the_repository_knows_the_app_and_claim_types() -> None:
    from kubectl_dr.repo.families import APP_TYPE, CLAIM_TYPE

    assert (APP_TYPE, CLAIM_TYPE) == (APP, PVC)
