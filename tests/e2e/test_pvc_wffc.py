"""Restoring into a new claim of a WaitForFirstConsumer class (local-path), the way a rebuilt app starts:
the claim is Pending until a pod uses it, so the rescue pod must be its first consumer, placed by the
scheduler, and the volume is bound to that pod's node."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.cli_runner import dr
from tests.datasets import build_app_tree, differences, make_claim, managed_pods, new_namespace, snapshot, volume_dir


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    return result


def test_restore_into_a_pending_local_path_claim(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "wffc")
    make_claim(cluster, ns, "old")
    source = volume_dir(cluster, ns, "old")
    build_app_tree(source / "app")
    (source / "app" / "payload").write_bytes(os.urandom(300_001))
    os.chown(source / "app" / "payload", 1000, 1000)
    repo = tmp_path / "repo"
    made = json.loads(ok(dr("pvc", "backup", "old", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster,
                            subprocess=True)).stdout)

    make_claim(cluster, ns, "new", storage_class="local-path", wait=False)
    pending = json.loads(cluster.kubectl("get", "pvc", "-n", ns, "new", "-o", "json").stdout)
    assert pending["status"]["phase"] == "Pending"
    restored = json.loads(ok(dr("pvc", "restore", "new", "-n", ns, "--repo", str(repo), "--from", "latest",
                                "--from-claim", f"{ns}/old", "--yes", "-o", "json", cluster=cluster,
                                subprocess=True)).stdout)
    assert restored["backup"] == made["id"]
    claim = json.loads(cluster.kubectl("get", "pvc", "-n", ns, "new", "-o", "json").stdout)
    assert claim["status"]["phase"] == "Bound"
    node = claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"]
    pv = json.loads(cluster.kubectl("get", "pv", claim["spec"]["volumeName"], "-o", "json").stdout)
    target = cluster.layout.host_path(node, pv["spec"]["hostPath"]["path"])
    assert differences(snapshot(source), snapshot(target)) == []
    assert managed_pods(cluster, ns) == []
