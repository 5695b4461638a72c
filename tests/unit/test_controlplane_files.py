"""The control-plane restore's own table: where the encryption-at-rest config may be written."""

from __future__ import annotations

import pytest

from kubectl_dr.controlplane import files


@pytest.mark.parametrize(("path", "problem"), [
    ("/etc/kubernetes/encryption/config.yaml", None),
    ("/etc/kubernetes/enc.yaml", None),
    ("/etc/kubernetes/manifests/enc.yaml", "where kubeadm and the kubelet take their own files from"),
    ("/etc/kubernetes/pki/enc.yaml", "where kubeadm and the kubelet take their own files from"),
    ("/etc/kubernetes/../cron.d/x", "not a plain path below /etc/kubernetes"),
    ("/var/lib/enc.yaml", "not a plain path below /etc/kubernetes"),
    ("/etc/kubernetes", "not a plain path below /etc/kubernetes"),
])
def test_where_the_encryption_config_may_go(path: str, problem: str | None) -> None:
    found = files.encryption_config_problem(path)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_modes_are_kubeadms() -> None:
    assert {p: m for p, m in files.SHARED_MODES.items() if m == 0o644} == {
        "pki/ca.crt": 0o644, "pki/front-proxy-ca.crt": 0o644, "pki/etcd/ca.crt": 0o644}
    assert files.OWNER == (0, 0) and set(files.DIRECTORY_MODES.values()) == {0o755}


def test_result_tables_give_sizes_in_binary_units() -> None:
    """The backup's and the restore's file tables write SIZE as every other table does (`550 B`, `1.5 KiB`),
    not raw byte counts."""
    from kubectl_dr.cli.controlplane import backup_table, restore_table
    from kubectl_dr.controlplane.backup import StoredFile
    from kubectl_dr.controlplane.restore import Planned, RestoreResult
    from tests import tables

    backup = tables.rows(backup_table([StoredFile.of(f) for f in (
        {"path": "/etc/kubernetes/pki/ca.crt", "mode": "0644", "uid": 0, "gid": 0, "size": 550, "sha256": "a" * 64,
         "restore": True},
        {"path": "/etc/kubernetes/pki/ca.key", "mode": "0600", "uid": 0, "gid": 0, "size": 1536, "sha256": "b" * 64,
         "restore": True})]))
    assert [row["SIZE"] for row in backup] == ["550 B", "1.5 KiB"]
    planned = Planned("/etc/kubernetes/pki/ca.crt", "pki-ca.crt", 0o644, 0, 0, 550, "a" * 64)
    same = Planned("/etc/kubernetes/pki/ca.key", "pki-ca.key", 0o600, 0, 0, 1536, "b" * 64, action="unchanged")
    restore = tables.rows(restore_table(RestoreResult("ID", "cp-2", [planned], [same], [], 0.1, dry_run=True)))
    # A dry run's plan says "would" for what it would do, and an equal file is simply unchanged.
    assert [(row["SIZE"], row["ACTION"]) for row in restore] == [("550 B", "would write"), ("1.5 KiB", "unchanged")]
