"""The CLI's cluster-facing basics against the loopback cluster: server version, auth errors."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.cli_runner import dr
from tests.cluster.fixture import Cluster


def test_version_reports_the_server(cluster: Cluster) -> None:
    result = dr("version", "--kubeconfig", str(cluster.kubeconfig), subprocess=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Server Version: v1.36.0"
    data = json.loads(dr("version", "--kubeconfig", str(cluster.kubeconfig), "-o", "json", subprocess=True).stdout)
    assert data["serverVersion"]["gitVersion"] == "v1.36.0"
def test_unknown_credentials_get_kubectls_unauthorized_message(cluster: Cluster, tmp_path: Path) -> None:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": "not-a-token-this-cluster-knows"}
    bad = tmp_path / "kubeconfig"
    bad.write_text(yaml.safe_dump(config))
    result = dr("version", "--kubeconfig", str(bad), subprocess=True)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: You must be logged in to the server (Unauthorized)"
