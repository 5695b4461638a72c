"""The CLI's cluster-facing basics against the loopback cluster: server version, auth errors."""

from __future__ import annotations

import json

from tests.cli_runner import dr
from tests.cluster.fixture import Cluster


def test_version_reports_the_server(cluster: Cluster) -> None:
    result = dr("version", "--kubeconfig", str(cluster.kubeconfig))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Server Version: v1.36.0"
    data = json.loads(dr("version", "--kubeconfig", str(cluster.kubeconfig), "-o", "json").stdout)
    assert data["serverVersion"]["gitVersion"] == "v1.36.0"
