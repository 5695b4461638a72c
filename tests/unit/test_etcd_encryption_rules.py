"""The encryption check's rules, on config files alone: what the API server could still read."""

from __future__ import annotations

import pytest
import yaml

from kubectl_dr.etcd.encryption import EncryptionMismatch, Fingerprint, check, fingerprint_config


def cfg(*providers: dict[str, object], resources: tuple[str, ...] = ("secrets",)) -> Fingerprint:
    text = yaml.safe_dump({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                           "resources": [{"resources": list(resources), "providers": list(providers)}]})
    return fingerprint_config(text, node="cp-1", path="/etc/kubernetes/enc.yaml")


def aes(*keys: tuple[str, str]) -> dict[str, object]:
    return {"aescbc": {"keys": [{"name": n, "secret": s} for n, s in keys]}}


IDENTITY: dict[str, object] = {"identity": {}}


def test_same_config_same_fingerprint_and_no_secret_inside() -> None:
    a, b = cfg(aes(("k1", "c2VjcmV0"))), cfg(aes(("k1", "c2VjcmV0")))
    assert a.fingerprint == b.fingerprint and "c2VjcmV0" not in str(a.to_dict())
    assert a.groups[0].writes_with == "aescbc/k1" and not a.groups[0].identity
    assert check(a.to_dict(), [b]) == []


def test_kms_and_wildcards() -> None:
    snap = cfg({"kms": {"name": "vault", "endpoint": "unix:///kms.sock"}}, IDENTITY, resources=("*.*",))
    assert check(snap, [cfg({"kms": {"name": "vault", "endpoint": "unix:///kms.sock"}}, IDENTITY,
                            resources=("*.*",))]) == []
    with pytest.raises(EncryptionMismatch, match="kms/vault"):
        check(snap, [cfg({"kms": {"name": "vault2", "endpoint": "unix:///kms.sock"}}, resources=("*.*",))])


def test_unknown_snapshot_only_warns() -> None:
    warnings = check(None, [cfg(IDENTITY)])
    assert len(warnings) == 1 and "cannot be checked" in warnings[0]


def test_every_api_server_must_have_the_keys() -> None:
    snap = cfg(aes(("k1", "AAAA")))
    good, bad = cfg(aes(("k1", "AAAA"))), cfg(aes(("k2", "BBBB")))
    bad.node = "cp-3"
    with pytest.raises(EncryptionMismatch, match="node cp-3") as caught:
        check(snap, [good, bad])
    assert "cp-1" not in caught.value.message.split("now:")[1]
