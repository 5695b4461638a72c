"""`kubectl dr etcd snapshot` against the loopback cluster's real TLS etcd members, checked with the real
etcdctl 3.4: its `snapshot status` must report what we recorded, and `snapshot restore` of our file into a
scratch etcd must give back the objects the test created through the API server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from tests import tables
from tests.cli_runner import clean_env, dr
from tests.cluster.fixture import Cluster
from tests.polling import eventually
from tests.unit.etcd_scratch import ETCDCTL, ScratchEtcd, snapshot_status

MANAGED = "app.kubernetes.io/managed-by=kubectl-dr"


# ------------------------------------------------------------------------------------- shared helpers
def env_for(cluster: Cluster, repo: Path) -> dict[str, str]:
    return clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_REPO": str(repo)})


def run_dr(cluster: Cluster, repo: Path, *args: str, timeout: float = 180, subprocess: bool = True
           ) -> CompletedProcess[str]:
    """A real process by default: a snapshot through the cluster starts pods whose cleanup must not depend on
    the test process. Dry runs, refusals, listings and direct mode pass `subprocess=False`."""
    return dr(*args, env=env_for(cluster, repo), timeout=timeout, subprocess=subprocess)


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout)


def certs(cluster: Cluster, node: str) -> tuple[Path, Path, Path]:
    pki = cluster.layout.etcd_pki(node)
    return pki / "ca.crt", pki / "healthcheck-client.crt", pki / "healthcheck-client.key"


def member_endpoints(cluster: Cluster) -> list[str]:
    return [m.client_url for m in cluster.members]


def etcdctl(cluster: Cluster, *args: str, endpoints: list[str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """The real etcdctl on this machine, straight to the members with a member's client certificate."""
    ca, cert, key = certs(cluster, cluster.control_planes[0])
    cmd = [ETCDCTL, f"--endpoints={','.join(endpoints or member_endpoints(cluster))}", f"--cacert={ca}",
           f"--cert={cert}", f"--key={key}", "--dial-timeout=2s", "--command-timeout=5s", *args]
    result = subprocess.run(cmd, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stderr.decode(errors='replace')}")
    return result


def leftover_pods(cluster: Cluster) -> list[str]:
    out = cluster.kubectl("get", "pods", "-A", "-l", MANAGED, "-o", "json").stdout
    return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in json.loads(out)["items"]]


def restore_and_read(snapshot: Path, key: bytes, work: Path) -> bytes | None:
    """Real `etcdctl snapshot restore` into a fresh data dir, a scratch etcd started on it, one key read."""
    etcd = ScratchEtcd(work, name="restored")
    subprocess.run(
        [ETCDCTL, "snapshot", "restore", str(snapshot), "--name", etcd.name, "--data-dir", str(etcd.data_dir),
         "--initial-cluster", f"{etcd.name}=http://127.0.0.1:{etcd.peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd.peer_port}",
         "--initial-cluster-token", "restored"],
        check=True, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=120,
    )
    with etcd:
        return etcd.get(key)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def assert_matches_etcdctl(data: dict[str, Any]) -> Path:
    part = Path(data["location"]) / "snapshot.db"
    expected = snapshot_status(part)
    details = data["details"]
    assert (details["revision"], details["totalKeys"], details["totalSize"], details["hash"]) == (
        expected["revision"], expected["totalKey"], expected["totalSize"], expected["hash"])
    assert details["sha256"] == sha256_file(part) == data["parts"][0]["sha256"]
    assert details["fileSize"] == part.stat().st_size == data["parts"][0]["size"]
    assert data["type"] == "etcd-snapshot"
    return part


def make_marker(cluster: Cluster, prefix: str) -> tuple[str, str]:
    token = secrets.token_hex(6)
    ns = f"{prefix}-{token}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("-n", ns, "create", "configmap", "marker", f"--from-literal=token={token}")
    return ns, token


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("control_planes", [1, 3])
def test_snapshot_equals_etcdctl_and_restores(cluster: Cluster, cluster_factory: Any, control_planes: int,
                                              tmp_path: Path) -> None:
    c = cluster if control_planes == 1 else cluster_factory(control_planes=3)
    ns, token = make_marker(c, f"snap{control_planes}")
    repo = tmp_path / "repo"
    data = ok_json(run_dr(c, repo, "etcd", "snapshot", "-o", "json"))
    part = assert_matches_etcdctl(data)
    member = data["details"]["member"]
    assert member["node"] in c.control_planes and member["version"] == c.etcd.version
    assert data["details"]["mode"] == "pod" and data["source"]["node"] == member["node"]
    # The member's own ID, as etcdctl lists it.
    listed = json.loads(etcdctl(c, "member", "list", "-w", "json").stdout)["members"]
    assert member["id"] in {f"{m['ID']:x}" for m in listed}
    value = restore_and_read(part, f"/registry/configmaps/{ns}/marker".encode(), tmp_path)
    assert value is not None and json.loads(value)["data"] == {"token": token}
    assert leftover_pods(c) == []
    listing = ok_json(run_dr(c, repo, "backups", "list", "-o", "json", subprocess=False))
    assert [b["id"] for b in listing["items"]] == [data["id"]]


def test_snapshots_are_listed_and_pruned(cluster: Cluster, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    # Without a terminal the copy says how it goes, as every transfer does (0: a line for every chunk).
    taken = dr("etcd", "snapshot", "-o", "json", env={**env_for(cluster, repo), "KUBECTL_DR_PROGRESS_SECONDS": "0"},
               subprocess=True)
    first = ok_json(taken)
    assert re.search(r"^etcd snapshot cp-\d: \d+\.\d [KM]iB of ~\d+\.\d [KM]iB \(\d+%\), \d+\.\d [KMG]iB/s, ETA ",
                     taken.stderr, re.M), taken.stderr
    assert re.search(r"^etcd snapshot cp-\d: \d+\.\d [KM]iB in \S+, \d+\.\d [KMG]iB/s \(done\)$", taken.stderr,
                     re.M), taken.stderr
    second = ok_json(run_dr(cluster, repo, "etcd", "snapshot", "--node", "cp-1", "-o", "json"))
    table = run_dr(cluster, repo, "backups", "list", subprocess=False)
    assert first["id"] in table.stdout and second["id"] in table.stdout and "etcd-snapshot" in table.stdout
    pruned = run_dr(cluster, repo, "backups", "prune", "--keep-last", "1", "--yes")
    assert pruned.returncode == 0, pruned.stderr
    left = ok_json(run_dr(cluster, repo, "backups", "list", "-o", "json", subprocess=False))
    assert [b["id"] for b in left["items"]] == [second["id"]]
    assert run_dr(cluster, repo, "backups", "verify", second["id"]).returncode == 0


def test_direct_mode_scratch_etcd(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with ScratchEtcd(tmp_path, name="ext") as etcd:
        for i in range(300):
            etcd.put(f"/registry/secrets/ns/s-{i}".encode(), secrets.token_bytes(2000))
        etcd.put(b"/registry/configmaps/ext/marker", b"direct-marker")
        # The cluster's identity, as an API server stores it: no API answers here, the snapshot names it.
        etcd.put(b"/registry/namespaces/kube-system", json.dumps(
            {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "kube-system", "uid": "4d1e-ext"}}).encode())
        env = clean_env({"KUBECTL_DR_REPO": str(repo)})
        taken = dr("etcd", "snapshot", "--endpoints", etcd.endpoint, "-o", "json", env=env)
        data = ok_json(taken)
        part = assert_matches_etcdctl(data)
        # The size etcd reports is the estimate; the last line is what crossed.
        assert re.search(r"^etcd snapshot ext: \d+\.\d [KM]iB in \S+, \d+\.\d [KMG]iB/s \(done\)$", taken.stderr,
                         re.M), taken.stderr
        assert data["cluster"] == {"uid": "4d1e-ext"}
        assert data["details"]["mode"] == "direct" and data["details"]["member"]["name"] == "ext"
        assert (data["location"], data["repository"]) == (str(repo / data["id"]), str(repo))
        assert data["size"] == part.stat().st_size and data["sha256"] == sha256_file(part)
        table = dr("etcd", "snapshot", "--endpoints", etcd.endpoint, env=env)
        assert table.returncode == 0, table.stderr
        [cells] = tables.rows(table.stdout)
        assert list(cells) == ["ID", "MEMBER", "NODE", "ETCD", "REVISION", "KEYS", "SIZE", "SHA256"]
        assert (cells["MEMBER"], cells["NODE"]) == ("ext", "-")  # "-" for none, never an empty cell
        assert cells["SIZE"].endswith((" KiB", " MiB")) and cells["SHA256"] == sha256_file(
            repo / cells["ID"] / "snapshot.db")[:16]
        status = ok_json(dr("etcd", "status", "--endpoints", etcd.endpoint, "-o", "json", env=env))
        raw = json.loads(etcd.ctl("endpoint", "status", "-w", "json").stdout)[0]["Status"]
        row = status["endpoints"][0]
        assert row["healthy"] and row["version"] == raw["version"]
        assert row["memberID"] == f"{raw['header']['member_id']:x}"
        assert row["dbSizeInUse"] == raw["dbSizeInUse"] and row["raftAppliedIndex"] is not None
        assert status["members"][0]["name"] == "ext" and status["members"][0]["isLeader"]
    assert restore_and_read(part, b"/registry/configmaps/ext/marker", tmp_path) == b"direct-marker"


def test_direct_mode_plans_and_refusals(tmp_path: Path) -> None:
    """The snapshot job's checks before anything is taken, against a real etcd and no cluster: a client dry run
    with --endpoints names the endpoints and the repository (a restic one included) and writes nothing; flags that
    do not go together are usage errors; an API that does not answer is explained with the way around it."""
    repo, restic_repo = tmp_path / "repo", tmp_path / "restic"
    env = clean_env({"KUBECTL_DR_REPO": str(repo)})
    with ScratchEtcd(tmp_path, name="ext") as etcd:
        plan = ok_json(dr("etcd", "snapshot", "--endpoints", etcd.endpoint, "--dry-run=client", "-o", "json",
                          env=env))
        assert plan == {"kind": "EtcdSnapshotPlan", "dryRun": "client", "repository": str(repo),
                        "endpoints": [etcd.endpoint]}
        table = dr("etcd", "snapshot", "--endpoints", etcd.endpoint, "--dry-run=client", env=env)
        assert table.returncode == 0, table.stderr
        assert table.stdout == (f"(dry run) would stream a snapshot from the first of {etcd.endpoint} that answers "
                                f"into {repo}\n")
        into_restic = ok_json(dr("etcd", "snapshot", "--endpoints", etcd.endpoint, "--repo", f"restic:{restic_repo}",
                                 "--dry-run=client", "-o", "json", env=env))
        assert into_restic["repository"] == f"restic:{restic_repo}" and into_restic["endpoints"] == [etcd.endpoint]
        assert not repo.exists() and not restic_repo.exists()
        node = dr("etcd", "snapshot", "--endpoints", etcd.endpoint, "--node", "cp-1", env=env)
        assert node.returncode == 2 and "--node does not apply with --endpoints" in node.stderr
    alone = dr("etcd", "snapshot", "--cacert", str(tmp_path / "ca.crt"), env=env)
    assert alone.returncode == 2 and "--cacert, --cert and --key only apply with --endpoints" in alone.stderr
    # An API server that does not answer: etcd may have lost its quorum, so the error says how to ask it directly.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "down",
        "clusters": [{"name": "down", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "down", "context": {"cluster": "down", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    down = dr("etcd", "snapshot", env={**env, "KUBECONFIG": str(kubeconfig)}, timeout=120, subprocess=True)
    assert down.returncode == 1, down.stderr
    assert "kubectl dr etcd status --endpoints https://NODE-IP:2379" in down.stderr
    assert not repo.exists() or list(repo.iterdir()) == []


def test_direct_mode_against_tls_members(cluster_factory: Any, tmp_path: Path) -> None:
    c = cluster_factory(control_planes=3)
    ca, cert, key = certs(c, "cp-2")
    flags = ["--endpoints", ",".join(member_endpoints(c)), "--cacert", str(ca), "--cert", str(cert), "--key", str(key)]
    data = ok_json(run_dr(c, tmp_path / "repo", "etcd", "snapshot", *flags, "-o", "json", subprocess=False))
    assert_matches_etcdctl(data)
    assert data["details"]["member"]["name"] in c.control_planes


def _pods(cluster: Cluster, purpose: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", "kube-system", "-l", f"{MANAGED},kubectl-dr.io/purpose={purpose}",
                          "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def test_dry_runs_create_nothing(cluster: Cluster, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    leases = cluster.kubectl("get", "leases", "-n", "kube-system", "-o", "name").stdout
    for mode in ("client", "server"):
        plan = ok_json(run_dr(cluster, repo, "etcd", "snapshot", f"--dry-run={mode}", "-o", "json",
                              subprocess=False))
        assert plan["dryRun"] == mode and plan["members"][0]["node"] == cluster.control_planes[0]
        assert plan["podAcceptedByServer"] is (True if mode == "server" else None)
    assert leftover_pods(cluster) == []
    assert not repo.exists() or list(repo.iterdir()) == []
    assert cluster.kubectl("get", "leases", "-n", "kube-system", "-o", "name").stdout == leases
    ca, cert, key = certs(cluster, cluster.control_planes[0])
    direct = run_dr(cluster, repo, "etcd", "snapshot", "--endpoints", member_endpoints(cluster)[0], "--cacert",
                    str(ca), "--cert", str(cert), "--key", str(key), "--dry-run=server", subprocess=False)
    assert direct.returncode == 2 and "--dry-run=client" in direct.stderr


def test_a_killed_snapshot_run_leaves_no_snapshot_behind(cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL while the snapshot pod serves the file: its serve container deletes the snapshot (every
    Secret of the cluster) and ends the pod once the heartbeats stop; the next run deletes the pod."""
    import signal

    from tests.cli_runner import executable

    env = {**env_for(cluster, tmp_path / "repo"), "KUBECTL_DR_POD_GRACE_SECONDS": "10"}
    proc = subprocess.Popen([executable(), "etcd", "snapshot"], env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("copying "):
            break
    proc.send_signal(signal.SIGSTOP)  # held mid-copy: no more heartbeats, no cleanup
    try:
        def ended() -> list[dict[str, Any]]:
            found = _pods(cluster, "etcd-snapshot")
            assert len(found) == 1
            return found if found[0]["status"].get("phase") in ("Succeeded", "Failed") else []

        pods = eventually(ended, 90, "the snapshot pod to end by itself",
                          explain=lambda: str([p["status"] for p in _pods(cluster, "etcd-snapshot")]))
        serve = next(c for c in pods[0]["status"]["containerStatuses"] if c["name"] == "serve")
        assert serve["state"]["terminated"]["exitCode"] == 0
        logs = cluster.kubectl("logs", "-n", "kube-system", pods[0]["metadata"]["name"], "-c", "serve").stdout
        assert "removing the snapshot" in logs
    finally:
        proc.kill()
        proc.wait()
    again = run_dr(cluster, tmp_path / "repo", "etcd", "snapshot", "-o", "json")
    ok_json(again)
    assert "deleting etcd snapshot pod kube-system/" in again.stderr and "every Secret" in again.stderr
    assert leftover_pods(cluster) == []


def test_a_snapshot_during_a_restore_is_refused_by_name(cluster: Cluster, tmp_path: Path) -> None:
    from tests.e2e.test_etcd_restore import restore_lease_held

    repo = tmp_path / "repo"
    with restore_lease_held(cluster, "etcd restore --from latest") as other:
        for extra in ([], ["--dry-run=client"]):
            result = run_dr(cluster, repo, "etcd", "snapshot", *extra, subprocess=False)
            assert result.returncode == 1, result.stderr
            assert (f"error: an etcd restore is running: run {other} on host elsewhere (pid 4242) (etcd restore "
                    "--from latest) holds the lease kube-system/kubectl-dr-etcd-restore") in result.stderr
            assert "`kubectl dr etcd restore status`" in result.stderr
    assert not list(repo.rglob("manifest.json")) and leftover_pods(cluster) == []
