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
