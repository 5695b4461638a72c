"""Two loopback clusters writing to one repository: each backup records its cluster (kube-system's uid),
`latest` resolves within the current cluster, `--from-cluster` picks another's, a volume restore takes
another cluster's backup by ID and says so, etcd restore refuses it unless `--from-other-cluster`,
`backups list` filters by cluster, and a backup written before clusters were recorded resolves only by ID."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import dr
from tests.cluster.fixture import Cluster, ClusterFactory
from tests.datasets import make_claim, volume_dir

pytestmark = [pytest.mark.slow]


@dataclass
class Shared:
    a: Cluster
    b: Cluster
    repo: Path
    ns: str
    uid_a: str
    uid_b: str
    pvc_a: str  # A's pvc backup; B's is newer
    pvc_b: str
    etcd_a: str  # A's etcd snapshot; B's is newer
    etcd_b: str




def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout) if result.stdout.startswith("{") else result.stdout


def uid(cluster: Cluster) -> str:
    return str(cluster.kubectl("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}").stdout)


@pytest.fixture(scope="module")
def shared(cluster: Cluster, cluster_factory: ClusterFactory, tmp_path_factory: pytest.TempPathFactory) -> Shared:
    # Two 1-control-plane clusters (the session's, and a pooled one other modules use too).
    a, b = cluster, cluster_factory(control_planes=1, workers=1, exec_protocols=("v4",))
    repo = tmp_path_factory.mktemp("shared-repo")
    ns = "cluster-id"
    ids: dict[str, str] = {}
    for name, c in (("a", a), ("b", b)):
        c.kubectl("create", "namespace", ns)
        make_claim(c, ns)
        (volume_dir(c, ns) / "who").write_text(name)
        ids[f"pvc_{name}"] = ok(dr("pvc", "backup", "data", "-n", ns, "-o", "json", cluster=c, repo=repo,
                                   subprocess=True))["id"]
    for name, c in (("a", a), ("b", b)):
        ids[f"etcd_{name}"] = ok(dr("etcd", "snapshot", "-o", "json", cluster=c, repo=repo, subprocess=True))["id"]
    return Shared(a, b, repo, ns, uid(a), uid(b), **ids)


def label(c: Cluster, uid: str) -> str:
    return f"cluster loopback-admin at {c.server_url} (uid {uid})"


def manifest(s: Shared, backup_id: str) -> Any:
    return json.loads((s.repo / backup_id / "manifest.json").read_text())


def test_every_backup_records_its_cluster(shared: Shared) -> None:
    s = shared
    assert s.uid_a != s.uid_b
    for backup_id, c, u in ((s.pvc_a, s.a, s.uid_a), (s.pvc_b, s.b, s.uid_b), (s.etcd_a, s.a, s.uid_a),
                            (s.etcd_b, s.b, s.uid_b)):
        assert manifest(s, backup_id)["cluster"] == {"uid": u, "server": c.server_url, "context": "loopback-admin"}


def test_pvc_latest_is_this_clusters_and_another_clusters_by_id_says_so(shared: Shared) -> None:
    s = shared
    plan = ok(dr("pvc", "restore", "data", "-n", s.ns, "--from", "latest", "--dry-run=client",
                 "-o", "json", cluster=s.a, repo=s.repo))
    assert plan["backup"] == s.pvc_a and plan["origin"] is None  # B's is newer, and of another cluster
    chosen = ok(dr("pvc", "restore", "data", "-n", s.ns, "--from", "latest", "--from-cluster",
                   s.b.server_url, "--dry-run=client", cluster=s.a, repo=s.repo))
    said = (f"backup {s.pvc_b} is of {label(s.b, s.uid_b)}, restoring into {label(s.a, s.uid_a)}")
    assert f"from backup {s.pvc_b} (of {s.ns}/data) into {s.ns}/data\n  {said}\n" in chosen
    # Both call themselves "loopback-admin": a context name that fits two clusters is refused, naming both.
    ambiguous = dr("pvc", "restore", "data", "-n", s.ns, "--from", "latest", "--from-cluster",
                   "loopback-admin", "--dry-run=client", cluster=s.a, repo=s.repo)
    assert ambiguous.returncode == 1
    assert '"loopback-admin" names 2 clusters' in ambiguous.stderr and s.uid_a in ambiguous.stderr
    assert s.uid_b in ambiguous.stderr

    diff = ok(dr("pvc", "diff", "data", "-n", s.ns, "--from", s.pvc_b, "-o", "json", cluster=s.a, repo=s.repo,
                 subprocess=True))
    assert diff["backup"] == s.pvc_b and diff["origin"] == said
    assert [(d["path"], d["change"]) for d in diff["differences"]] == [("who", "changed")]

    # A real restore of B's backup by its ID into A: accepted (a rebuilt cluster is a normal DR step), said.
    vol = volume_dir(s.a, s.ns)
    restored = ok(dr("pvc", "restore", "data", "-n", s.ns, "--from", s.pvc_b, "--yes", cluster=s.a, repo=s.repo,
                     subprocess=True))
    header, row = restored.splitlines()
    assert header.split() == ["PVC", "FROM", "ENTRIES", "REMOVED", "SIZE", "SHA256", "ORIGIN"]
    assert row.split()[:2] == [f"{s.ns}/data", s.pvc_b] and row.endswith(f"   {said}"), restored
    assert (vol / "who").read_text() == "b"
    back = ok(dr("pvc", "restore", "data", "-n", s.ns, "--from", "latest", "--yes", "-o", "json", cluster=s.a,
                 repo=s.repo, subprocess=True))
    assert back["backup"] == s.pvc_a and back["origin"] is None and (vol / "who").read_text() == "a"


def test_etcd_restore_takes_this_clusters_snapshot_and_refuses_anothers(shared: Shared) -> None:
    s = shared
    latest = dr("etcd", "restore", "--from", "latest", "--dry-run=client", cluster=s.a, repo=s.repo)
    assert f"snapshot backup {s.etcd_a} verified" in latest.stderr, latest.stderr
    refused = dr("etcd", "restore", "--from", s.etcd_b, "--dry-run=client", cluster=s.a, repo=s.repo)
    assert refused.returncode == 1 and refused.stdout == ""
    assert (f"error: backup {s.etcd_b} is of {label(s.b, s.uid_b)}, not of {label(s.a, s.uid_a)}: etcd restore "
            "refuses to restore another cluster's backup") in refused.stderr
    assert "--from-other-cluster" in refused.stderr
    by_name = dr("etcd", "restore", "--from", "latest", "--from-cluster", s.uid_b, "--dry-run=client", cluster=s.a,
                 repo=s.repo)
    assert by_name.returncode == 1 and "refuses to restore another cluster's backup" in by_name.stderr
    meant = dr("etcd", "restore", "--from", "latest", "--from-cluster", s.uid_b,
               "--from-other-cluster", "--dry-run=client", cluster=s.a, repo=s.repo)
    assert f"snapshot backup {s.etcd_b} verified" in meant.stderr
    assert f"note: backup {s.etcd_b} is of {label(s.b, s.uid_b)}, restoring into {label(s.a, s.uid_a)}" in meant.stderr


def test_backups_list_shows_and_filters_by_cluster(shared: Shared) -> None:
    s = shared
    listed = dr("backups", "list", "-o", "json", cluster=s.a, repo=s.repo)
    assert {i["id"] for i in ok(listed)["items"]} == {s.pvc_a, s.etcd_a}
    assert f"note: listing the backups of the current cluster, uid {s.uid_a}" in listed.stderr
    assert "2 backups of other clusters not shown" in listed.stderr
    items = ok(dr("backups", "list", "--cluster", s.uid_b, "-o", "json", cluster=s.a, repo=s.repo))["items"]
    assert {i["id"] for i in items} == {s.pvc_b, s.etcd_b} and items[0]["cluster"]["uid"] == s.uid_b
    every = ok(dr("backups", "list", "--all-clusters", cluster=s.a, repo=s.repo))
    assert every.splitlines()[0].split()[-1] == "CLUSTER" and all(i in every for i in (s.pvc_a, s.pvc_b))
    # No kubeconfig (offline): every backup, with a note saying why.
    offline = dr("backups", "list", "-o", "json", cluster=None, repo=s.repo)
    assert len(ok(offline)["items"]) == 4 and "listing the backups of every cluster" in offline.stderr


def test_a_backup_that_records_no_cluster_resolves_only_by_id(shared: Shared) -> None:
    s = shared
    newest = ok(dr("pvc", "backup", "data", "-n", s.ns, "-o", "json", cluster=s.a, repo=s.repo, subprocess=True))["id"]
    path = s.repo / newest / "manifest.json"
    data = json.loads(path.read_text())
    del data["cluster"]  # as written before backups recorded their cluster
    path.write_text(json.dumps(data))
    plan = ok(dr("pvc", "restore", "data", "-n", s.ns, "--from", "latest", "--dry-run=client",
                 "-o", "json", cluster=s.a, repo=s.repo))
    assert plan["backup"] == s.pvc_a
    by_id = dr("pvc", "restore", "data", "-n", s.ns, "--from", newest, "--dry-run=client", "-o", "json", cluster=s.a,
               repo=s.repo)
    note = f"backup {newest} records no cluster; written by an older kubectl-dr"
    assert ok(by_id)["origin"] == note and f"note: {note}" in by_id.stderr
    listed = dr("backups", "list", cluster=s.a, repo=s.repo)
    assert any(line.split()[0] == newest and line.split()[-1] == "-" for line in ok(listed).splitlines())


def test_control_plane_restore_refuses_another_clusters_backup(shared: Shared) -> None:
    s = shared
    theirs = ok(dr("control-plane", "backup", "--yes", "-o", "json", cluster=s.b, repo=s.repo, subprocess=True))["id"]
    assert manifest(s, theirs)["cluster"]["uid"] == s.uid_b
    node = s.a.control_planes[0]
    refused = dr("control-plane", "restore", "--from", theirs, "--node", node, "--dry-run=client", cluster=s.a,
                 repo=s.repo)
    assert refused.returncode == 1 and refused.stdout == ""
    assert (f"error: backup {theirs} is of {label(s.b, s.uid_b)}, not of {label(s.a, s.uid_a)}: control-plane "
            "restore refuses to restore another cluster's backup") in refused.stderr
    # A has no control-plane backup of its own: latest says so, and names B's as another cluster's.
    none = dr("control-plane", "restore", "--from", "latest", "--node", node, "--dry-run=client", cluster=s.a,
              repo=s.repo)
    assert none.returncode == 1 and f"there is no control-plane backup of cluster uid {s.uid_a}" in none.stderr
    assert f"backups of other clusters: uid {s.uid_b}" in none.stderr
