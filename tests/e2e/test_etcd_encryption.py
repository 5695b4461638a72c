"""Encryption at rest: every `kubectl dr etcd snapshot` records the fingerprint of kube-apiserver's
--encryption-provider-config keys (read from the node through a pod), and the check a restore's preflight
runs refuses a cluster whose keys could not decrypt the snapshot's Secrets, saying why.

The loopback API server does not encrypt; fingerprinting needs only what a kubeadm node has: the config
file under the node's /etc/kubernetes and the flag plus its hostPath volume in the kube-apiserver manifest
(kubeadm's apiServer.extraArgs and extraVolumes)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubectl_dr.etcd import encryption
from kubectl_dr.kube import kubeconfig
from kubectl_dr.kube.client import Kube, connect
from kubectl_dr.runs import Run
from kubectl_dr.ui.console import TerminalConsole
from tests.cli_runner import dr
from tests.cluster.fixture import Cluster, ClusterFactory
from tests.e2e.test_etcd_snapshot import leftover_pods
from tests.polling import eventually

pytestmark = [pytest.mark.slow]
CONFIG = "/etc/kubernetes/encryption/config.yaml"
KEY1 = base64.b64encode(b"k" * 32).decode()
KEY2 = base64.b64encode(b"z" * 32).decode()


def config(*keys: tuple[str, str], identity: bool = True) -> str:
    providers: list[dict[str, Any]] = []
    if keys:
        providers.append({"aescbc": {"keys": [{"name": n, "secret": s} for n, s in keys]}})
    if identity:
        providers.append({"identity": {}})
    return yaml.safe_dump({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                           "resources": [{"resources": ["secrets"], "providers": providers}]})


@pytest.fixture(scope="module")
def one(cluster_factory: ClusterFactory) -> Cluster:
    # Its own cluster: editing kube-apiserver.yaml restarts the API server under other tests.
    return cluster_factory(control_planes=1, workers=0, private="encryption")


def kube(cluster: Cluster) -> Kube:
    return connect(kubeconfig.resolve(kubeconfig.Overrides(kubeconfig=str(cluster.kubeconfig))))


def apiserver_flags(cluster: Cluster, node: str) -> list[str]:
    out = cluster.kubectl("get", "pod", "-n", "kube-system", f"kube-apiserver-{node}", "-o", "json",
                          check=False).stdout
    return list(json.loads(out)["spec"]["containers"][0]["command"]) if out else []


def set_config(cluster: Cluster, text: str | None) -> None:
    """Write the config file on the node and point kube-apiserver at it (text None: no encryption)."""
    node = cluster.control_planes[0]
    path = cluster.layout.manifests(node) / "kube-apiserver.yaml"
    doc = yaml.safe_load(path.read_text())
    container = doc["spec"]["containers"][0]
    container["command"] = [a for a in container["command"] if not a.startswith("--encryption-provider-config")]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "encryption"]
    doc["spec"]["volumes"] = [v for v in doc["spec"]["volumes"] if v["name"] != "encryption"]
    if text is not None:
        host = cluster.layout.host_path(node, CONFIG)
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_text(text)
        host.chmod(0o600)
        container["command"].append(f"--encryption-provider-config={CONFIG}")
        container["volumeMounts"].append({"name": "encryption", "mountPath": str(Path(CONFIG).parent),
                                          "readOnly": True})
        doc["spec"]["volumes"].append({"name": "encryption", "hostPath": {"path": str(Path(CONFIG).parent),
                                                                          "type": "DirectoryOrCreate"}})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    want = f"--encryption-provider-config={CONFIG}" if text is not None else None
    def back() -> bool:
        flags = apiserver_flags(cluster, node)
        return bool(flags) and ((want in flags) if want else not any("encryption-provider" in f for f in flags))

    eventually(back, 60, "kube-apiserver to come back with the new flags")


def snapshot(cluster: Cluster, repo: Path) -> dict[str, Any]:
    result = dr("etcd", "snapshot", "-o", "json", cluster=cluster, repo=repo, timeout=300, subprocess=True)
    assert result.returncode == 0, result.stderr
    assert leftover_pods(cluster) == []
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def current(cluster: Cluster) -> list[encryption.Fingerprint]:
    return encryption.read_cluster(kube(cluster), namespace="kube-system", run=Run("test encryption check"),
                                   console=TerminalConsole(yes=True))


def test_snapshot_without_encryption_records_none(one: Cluster, tmp_path: Path) -> None:
    set_config(one, None)
    data = snapshot(one, tmp_path / "repo")
    assert data["details"]["encryption"]["state"] == "none"
    assert data["details"]["encryption"]["fingerprint"] == "none"
    assert encryption.check(data["details"]["encryption"], current(one)) == []
    # Data written in plain text cannot be read by API servers without the identity provider.
    set_config(one, config(("key1", KEY1), identity=False))
    with pytest.raises(encryption.EncryptionMismatch) as caught:
        encryption.check(data["details"]["encryption"], current(one))
    assert "taken without encryption at rest" in caught.value.message
    assert "has no identity provider" in caught.value.message and "identity" in (caught.value.hint or "")
    assert leftover_pods(one) == []


def test_snapshot_records_key_fingerprint_and_changed_key_is_refused(one: Cluster, tmp_path: Path) -> None:
    text = config(("key1", KEY1))
    set_config(one, text)
    data = snapshot(one, tmp_path / "repo")
    recorded = data["details"]["encryption"]
    expected = encryption.fingerprint_config(text)
    assert recorded["state"] == "configured" and recorded["configPath"] == CONFIG
    assert recorded["fingerprint"] == expected.fingerprint and len(expected.fingerprint) == 64
    assert [k["name"] for k in recorded["groups"][0]["keys"]] == ["key1"]
    # Only fingerprints leave the node: the key itself is in no file of the backup.
    manifest_text = (Path(data["location"]) / "manifest.json").read_text()
    assert KEY1 not in manifest_text and '"secret"' not in json.dumps(recorded)
    assert encryption.check(recorded, current(one)) == []
    # The call the restore's preflight makes, on the backup's details as stored.
    assert encryption.preflight(kube(one), data["details"], namespace="kube-system", run=Run("test preflight"),
                                console=TerminalConsole(yes=True)) == []

    # Rotated the way the Kubernetes docs say (new key first, old one kept): still readable.
    set_config(one, config(("key2", KEY2), ("key1", KEY1)))
    assert encryption.check(recorded, current(one)) == []

    # The same key name with another secret: the Secrets in the snapshot are unreadable.
    set_config(one, config(("key1", KEY2)))
    with pytest.raises(encryption.EncryptionMismatch) as caught:
        encryption.check(recorded, current(one))
    text_of = caught.value.message
    assert "Secrets could not be decrypted" in text_of
    assert "lacks the key(s) aescbc/key1 (same name, different secret)" in text_of
    assert "back into the encryption config" in (caught.value.hint or "")
    # And `etcd restore` itself refuses in its preflight, before anything is staged or stopped.
    # A real process: the run takes the restore lease before its preflight refuses, and must give it back.
    refused = dr("etcd", "restore", "--from", data["id"], "--yes", cluster=one, repo=tmp_path / "repo", timeout=300,
                 subprocess=True)
    assert refused.returncode == 1 and "Secrets could not be decrypted" in refused.stderr, refused.stderr
    assert "staging" not in refused.stderr.lower() and leftover_pods(one) == []

    # Encryption switched off: the API server could not read the snapshot's encrypted Secrets either.
    set_config(one, None)
    with pytest.raises(encryption.EncryptionMismatch, match="no encryption config"):
        encryption.check(recorded, current(one))
    assert leftover_pods(one) == []
