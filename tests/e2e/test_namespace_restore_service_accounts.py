"""A namespace restore meets ServiceAccount admission: a bare pod running as an account of its own namespace.

The account is part of the same restore, so it exists only once the restore has created it; a real API
server refuses a pod (and a dry run of one) naming an account that does not exist yet. The restore must
still check the pod with the server and then create it after its account.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests import cli_runner
from tests.datasets import new_namespace
from tests.polling import eventually


def test_bare_pod_with_its_own_service_account_is_restored(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "runner")
    objs = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner", "namespace": ns}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "job-runner", "namespace": ns,
                                                         "labels": {"app": "runner"}},
         "spec": {"serviceAccountName": "runner", "terminationGracePeriodSeconds": 1,
                  "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
                  "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}},
    ]
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objs))
    cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", "pod/job-runner", "--timeout=120s")
    try:
        backed = cli_runner.dr("namespace", "backup", ns, "--no-volumes", "-o", "json", cluster=cluster,
                               repo=tmp_path, subprocess=True)
        assert backed.returncode == 0, backed.stderr
        backup_id = json.loads(backed.stdout)["id"]
        target = f"{ns}-copy"
        restored = cli_runner.dr("namespace", "restore", ns, "--from", backup_id, "--to", target, "--yes",
                                 "-o", "json", cluster=cluster, repo=tmp_path, subprocess=True)
        assert restored.returncode == 0, f"stdout: {restored.stdout}\nstderr: {restored.stderr}"
        actions = {o["object"]: o for o in json.loads(restored.stdout)["objects"]}
        assert actions[f"Pod/{target}/job-runner"]["action"] == "create"
        assert actions[f"Pod/{target}/job-runner"]["serverDryRun"] == "accepted"
        pod = json.loads(cluster.kubectl("get", "pod", "job-runner", "-n", target, "-o", "json").stdout)
        assert pod["spec"]["serviceAccountName"] == "runner"
        eventually(lambda: json.loads(cluster.kubectl("get", "pod", "job-runner", "-n", target, "-o", "json")
                                      .stdout)["status"].get("phase") == "Running", timeout=60, what="pod running")
        cluster.kubectl("delete", "namespace", target, "--wait=false")
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
