"""`pvc list`: the claims of a namespace with their consumers, what a backup or restore would stop, the newest
backup and the user a backup would run as; from API reads only (no pod is made)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubectl_dr.clusters import ClusterIdentity
from kubectl_dr.repo import LocalRepository
from tests.cli_runner import dr
from tests.datasets import make_claim, managed_pods, new_namespace
from tests.e2e.test_pvc_consumers import deployment, running_pods
from tests.e2e.test_pvc_security_protocols import RESTRICTED_APP, RESTRICTED_CONTAINER, _traversable
from tests.polling import eventually

NO_CONFIG = {"KUBECTL_DR_CONFIG": "/dev/null"}


def _pods(cluster: Any, ns: str) -> list[str]:
    return sorted(cluster.kubectl("get", "pods", "-n", ns, "-o", "jsonpath={.items[*].metadata.name}").stdout.split())


def test_list_claims_consumers_backups_and_identity(cluster: Any, tmp_path: Path) -> None:
    _traversable(cluster.dir)
    # A restricted namespace with an app running as uid 1000 on a RWO claim that is backed up, and a RWOP claim
    # nobody uses and nobody backed up; an unlabelled namespace with one claim, where a backup runs as root.
    ns = new_namespace(cluster, "list", {"pod-security.kubernetes.io/enforce": "restricted"})
    make_claim(cluster, ns)
    make_claim(cluster, ns, "spare", modes=("ReadWriteOncePod",))
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, RESTRICTED_APP, RESTRICTED_CONTAINER))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    other = new_namespace(cluster, "list-other")
    make_claim(cluster, other, "cache", modes=("ReadWriteMany",))
    repo = tmp_path / "repo"
    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster,
                extra_env=NO_CONFIG, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    backup_id = json.loads(backup.stdout)["id"]
    eventually(lambda: managed_pods(cluster, ns) == [], what="the backup's pod gone")
    # Newer backups of a claim of the same name in another cluster, and one that records no cluster (an older
    # kubectl-dr's), are not this one's: `pvc restore --from latest` would not take them either.
    for recorded in (ClusterIdentity("another-uid", "https://elsewhere:6443", "elsewhere"), None):
        with LocalRepository(repo).create("pvc", {"namespace": ns, "pvc": "spare", "server": "https://elsewhere:6443"},
                                     "elsewhere", cluster=recorded) as writer:
            with writer.open_part("volume.tar") as part:
                part.write(b"\0" * 1024)
            writer.commit({})
    pods_before = _pods(cluster, ns)

    table = dr("pvc", "list", "-n", ns, "--repo", str(repo), cluster=cluster, extra_env=NO_CONFIG)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "CAPACITY", "ACCESS", "MODES", "STORAGECLASS", "CONSUMERS",
                                "STOPPED", "FOR", "LAST", "BACKUP", "BACKUP", "AGE", "BACKUP", "AS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"data", "spare"}
    data, spare = rows["data"], rows["spare"]
    # RWO in use: a backup runs beside the app, a restore stops it; the backup runs as the app's uid.
    assert data[1:4] == ["Bound", "1Gi", "RWO"] and data[5:8] == ["Deployment/app", "restore", backup_id]
    assert data[8].endswith("s") and data[9] == "uid=1000(app)", data
    # Nobody uses it, nothing backed up; restricted and no app to take the uid from: nobody.
    assert spare[3] == "RWOP" and spare[5:9] == ["<none>", "-", "<none>", "-"] and spare[9] == "uid=65534", spare

    listed = dr("pvc", "list", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster, extra_env=NO_CONFIG)
    assert listed.returncode == 0, listed.stderr
    items = {i["name"]: i for i in json.loads(listed.stdout)["items"]}
    item = items["data"]
    assert item["namespace"] == ns and item["capacity"] == "1Gi" and item["accessModes"] == ["ReadWriteOnce"]
    assert [(c["kind"], c["name"], c["replicas"], c["stoppable"]) for c in item["consumers"]] == [
        ("Deployment", "app", 1, True)]
    assert item["stopsConsumers"] == {"backup": False, "restore": True}
    assert item["lastBackup"]["id"] == backup_id and item["lastBackup"]["createdAt"]
    runs_as = item["backupRunsAs"]
    assert runs_as["podSecurityLevel"] == "restricted" and runs_as["root"] is False
    assert runs_as["runAsUser"] == 1000 and runs_as["appUser"] == 1000
    assert items["spare"]["lastBackup"] is None and items["spare"]["consumers"] == []

    # Every namespace: a NAMESPACE column; where the level allows it a backup runs as root.
    everywhere = dr("pvc", "list", "-A", "--repo", str(repo), cluster=cluster, extra_env=NO_CONFIG)
    assert everywhere.returncode == 0, everywhere.stderr
    assert everywhere.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    cache = next(line.split() for line in everywhere.stdout.splitlines() if line.startswith(other))
    assert cache[1:5] == ["cache", "Bound", "1Gi", "RWX"] and cache[6:11] == ["<none>", "-", "<none>", "-", "root"]

    # Reads only: no pod was made, nothing changed.
    assert _pods(cluster, ns) == pods_before and managed_pods(cluster, ns) == []

    # A namespace without claims says so; one that does not exist is an error.
    empty = new_namespace(cluster, "list-empty")
    none = dr("pvc", "list", "-n", empty, "--repo", str(repo), cluster=cluster, extra_env=NO_CONFIG)
    assert none.returncode == 0 and none.stdout == ""
    assert f"No persistentvolumeclaims found in {empty}." in none.stderr
    assert json.loads(dr("pvc", "list", "-n", empty, "-o", "json", cluster=cluster,
                         extra_env=NO_CONFIG).stdout)["items"] == []
    missing = dr("pvc", "list", "-n", "no-such-namespace", cluster=cluster, extra_env=NO_CONFIG)
    assert missing.returncode == 1 and 'namespaces "no-such-namespace" not found' in missing.stderr
