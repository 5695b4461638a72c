"""`kubectl dr etcd restore --endpoints …` on a loopback cluster whose etcd runs outside it (external etcd:
members on hosts of their own, no static pods, unreachable by any pod's hostPath), etcd 3.4 and 3.5.

The keys are restored through the client API while static pods hold every API server down; the tests check
the data with real kubectl and in etcd itself, the way back through the safety snapshot, an interruption
before the rewrite (nothing changed, API servers back), one after it began (API servers held, the next run
finishes it), and the refusal of an etcd that is not the cluster's storage.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubectl_dr.etcd.restore.holdscript import NodeHold
from tests.cli_runner import clean_env, dr, executable
from tests.cluster.etcd_proc import start_etcd
from tests.cluster.fixture import Cluster, ClusterFactory
from tests.conformance.kube import manifest, pod
from tests.e2e.test_etcd_restore import (
    READ_ONLY,
    configmaps,
    dry_run_says_would,
    leftover_pods,
    ok,
    repo_files,
    restore_lease_held,
    runbooks,
    sleeping,
)
from tests.polling import eventually

pytestmark = [pytest.mark.slow]
SHAPES = [pytest.param(("3.5", 3), id="3.5-three-members"), pytest.param(("3.4", 1), id="3.4-one-member")]


@pytest.fixture(scope="module", params=SHAPES)
def external(request: pytest.FixtureRequest, cluster_factory: ClusterFactory) -> Cluster:
    version, members = request.param
    return cluster_factory(control_planes=members, workers=1, etcd_version=version, external_etcd=True)


def flags(c: Cluster) -> list[str]:
    pki = c.layout.pki
    return ["--endpoints", ",".join(m.client_url for m in c.members), "--cacert", str(pki / "etcd-ca.crt"),
            "--cert", str(pki / "apiserver-etcd-client.crt"), "--key", str(pki / "apiserver-etcd-client.key")]


def one_shape(c: Cluster, members: int) -> None:
    """The failure paths do not depend on the etcd version (the round trip runs on both): one shape each."""
    if len(c.members) != members:
        pytest.skip("run on the other shape")


def env(c: Cluster, repo: Path) -> dict[str, str]:
    return clean_env({"KUBECONFIG": str(c.kubeconfig), "KUBECTL_DR_REPO": str(repo)})


def run_dr(c: Cluster, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return dr(*args, env=env(c, repo), timeout=600, subprocess=True)


def etcd_keys(c: Cluster, prefix: str) -> list[str]:
    pki = c.layout.pki
    out = subprocess.run([str(c.etcd.etcdctl), f"--endpoints={c.members[0].client_url}",
                          f"--cacert={pki / 'etcd-ca.crt'}", f"--cert={pki / 'apiserver-etcd-client.crt'}",
                          f"--key={pki / 'apiserver-etcd-client.key'}", "get", "--prefix", "--keys-only", prefix],
                         capture_output=True, text=True, check=True, env={"ETCDCTL_API": "3"}, timeout=30)
    return [line for line in out.stdout.splitlines() if line]


def api_answers(c: Cluster) -> bool:
    return c.kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode == 0


def prepare(c: Cluster, repo: Path, ns: str, sleep_arg: str) -> str:
    """kept + gone-later before the snapshot (taken directly); then made-later and a pod, gone-later deleted."""
    c.kubectl("create", "namespace", ns)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns}}
    c.kubectl("create", "-f", "-", input=manifest({**cm, "metadata": {**cm["metadata"], "name": "kept"}},
                                                  {**cm, "metadata": {**cm["metadata"], "name": "gone-later"}}))
    snap = json.loads(ok(run_dr(c, repo, "etcd", "snapshot", *flags(c), "-o", "json")).stdout)
    c.kubectl("create", "-f", "-", input=manifest({**cm, "metadata": {**cm["metadata"], "name": "made-later"}},
                                                  pod("new", ns, command=["sleep", sleep_arg])))
    c.kubectl("-n", ns, "delete", "configmap", "gone-later")
    c.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/new", "--timeout=60s")
    return str(snap["id"])


def interrupted(c: Cluster, repo: Path, snap: str, at: str, stop: Callable[[subprocess.Popen[str]], None],
                *extra: str) -> str:
    """Run a restore and `stop` it as soon as a stderr line starts with `at`; its whole stderr."""
    proc = subprocess.Popen([executable(), "etcd", "restore", "--from", snap, *flags(c), "--yes", *extra],
                            env=env(c, repo), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(at):
            stop(proc)
            break
    _, rest = proc.communicate(timeout=300)
    assert proc.returncode != 0, "".join(seen) + rest
    return "".join(seen) + rest


def test_restore_then_back_through_the_safety_snapshot(external: Cluster, tmp_path: Path) -> None:
    c, repo = external, tmp_path / "repo"
    snap = prepare(c, repo, "ext-a", "7301")
    files = repo_files(repo)
    dry = json.loads(ok(run_dr(c, repo, "etcd", "restore", "--from", snap, *flags(c), "--dry-run=client",
                               "-o", "json")).stdout)
    assert dry["mode"] == "external" and dry["keys"]["delete"] >= 2 and dry["keys"]["put"] >= 1
    dry_run_says_would(ok(run_dr(c, repo, "etcd", "restore", "--from", snap, *flags(c), "--dry-run=client")))
    assert repo_files(repo) == files  # not even the record of the backup's verification
    assert configmaps(c, "ext-a") == {"kept", "made-later"}  # the dry run changed nothing

    result = ok(run_dr(c, repo, "etcd", "restore", "--from", snap, *flags(c), "--yes", "-o", "json"))
    out = json.loads(result.stdout)
    assert out["succeeded"] and out["etcdTopology"] == "external" and out["keys"]["put"] >= 1
    assert out["revisionAfter"] > out["revisionBefore"]  # forward, never back: watchers see events
    assert set(out["nodes"]) == set(c.control_planes)
    assert configmaps(c, "ext-a") == {"kept", "gone-later"}
    eventually(lambda: not sleeping(c, "7301"), what="the pod made after the snapshot killed by its kubelet")
    assert "ext-a/new" in out["podsGone"]
    assert leftover_pods(c) == [] and etcd_keys(c, "/kubectl-dr/") == []
    status = json.loads(ok(run_dr(c, repo, "etcd", "status", *flags(c), "-o", "json")).stdout)
    assert len(status["endpoints"]) == len(c.members) and all(e["healthy"] for e in status["endpoints"])
    for node in c.control_planes:  # the manifests are back, ours gone, nothing parked
        assert sorted(p.name for p in c.layout.manifests(node).iterdir()) == [
            "kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml"]
        assert not c.layout.host_path(node, "/etc/kubernetes/kubectl-dr").exists()

    safety = out["safetySnapshot"]
    back = json.loads(ok(run_dr(c, repo, "etcd", "restore", "--from", safety, *flags(c), "--yes",
                                "--restart-kubelets", "-o", "json")).stdout)
    assert back["succeeded"] and configmaps(c, "ext-a") == {"kept", "made-later"}
    assert [(r["node"], r["result"]) for r in back["kubeletRestarts"]] == [
        (n, "restarted") for n in sorted([*c.control_planes, *c.workers])]
    assert leftover_pods(c) == []
    c.kubectl("delete", "namespace", "ext-a", "--wait=false")


def test_ctrl_c_before_the_rewrite_changes_nothing(external: Cluster, tmp_path: Path) -> None:
    c, repo = external, tmp_path / "repo"
    one_shape(c, 3)
    snap = prepare(c, repo, "ext-b", "7302")
    err = interrupted(c, repo, snap, "handed over", lambda proc: proc.send_signal(signal.SIGINT))
    assert "nothing in etcd was changed" in err
    # Each hold pod saw the verdict and removed itself. Its last act comes once its API server is ready again,
    # which the pod waits for up to its API timeout. This waited 120 s and failed in a run at load 13-17 (not
    # analysed further: a node that never saw the verdict would still fail here, only later).
    for node in c.control_planes:
        eventually(lambda node=node: not (c.layout.manifests(node) / "kubectl-dr-etcd-hold.yaml").exists(),
                   what=f"the hold pod of {node} gone", timeout=NodeHold.api_timeout + 30)
        assert (c.layout.manifests(node) / "kube-apiserver.yaml").exists()
    eventually(lambda: api_answers(c), what="the API servers back", timeout=120)
    assert configmaps(c, "ext-b") == {"kept", "made-later"}
    eventually(lambda: leftover_pods(c) == [], what="no kubectl dr pod left", timeout=60)
    c.kubectl("delete", "namespace", "ext-b", "--wait=false")


def flood(c: Cluster, prefix: str, count: int) -> None:
    """`count` small keys under `prefix`, straight into etcd (a rewrite that deletes them takes a while)."""
    from kubectl_dr.etcd.client import Endpoint
    from kubectl_dr.etcd.topology import direct

    pki = c.layout.pki
    topo = direct([c.members[0].client_url], str(pki / "etcd-ca.crt"), str(pki / "apiserver-etcd-client.crt"),
                  str(pki / "apiserver-etcd-client.key"))
    with Endpoint(c.members[0].client_url, topo) as ep:
        rpc = ep.rpc
        for start in range(0, count, 100):
            ops = [rpc.RequestOp(request_put=rpc.PutRequest(key=f"{prefix}{i:06d}".encode(), value=b"x"))
                   for i in range(start, min(count, start + 100))]
            ep.client.kvstub.Txn(rpc.TxnRequest(compare=[], success=ops, failure=[]), 30.0)


def test_killed_after_the_claim_holds_the_api_until_the_next_run_finishes(external: Cluster, tmp_path: Path) -> None:
    c, repo = external, tmp_path / "repo"
    one_shape(c, 1)
    snap = prepare(c, repo, "ext-c", "7303")
    # Thousands of keys the snapshot lacks: the rewrite is still deleting them when the kill comes.
    flood(c, "/registry/kubectl-dr-test-flood/", 2000)
    # The safety snapshot is taken after the claim: killed once it is saved, the run holds the API servers down.
    err = interrupted(c, repo, snap, "safety snapshot ", lambda proc: proc.kill())
    safety = err.split("safety snapshot ", 1)[1].split()[0]
    assert not api_answers(c)  # a half-restored keyspace is never served
    assert any(k.endswith("/applying") for k in etcd_keys(c, "/kubectl-dr/"))
    held_run = next(k for k in etcd_keys(c, "/kubectl-dr/") if k.endswith("/applying")).split("/")[3]

    # Nor is it snapshotted: the snapshot would be half restored, and the newest backup.
    snapshot = run_dr(c, repo, "etcd", "snapshot", *flags(c))
    assert snapshot.returncode == 1, snapshot.stderr
    assert f"an etcd restore holds the API servers down with its rewrite unfinished: run {held_run} on host" in \
        snapshot.stderr and f"etcd restore --from {snap}" in snapshot.stderr
    # `latest` is the safety snapshot now: finishing the held run with it would restore nothing.
    for extra in (["--yes"], ["--dry-run=client"]):
        latest = run_dr(c, repo, "etcd", "restore", "--from", "latest", *flags(c), *extra)
        assert latest.returncode == 1, latest.stderr
        assert f"run {held_run} holds the API servers down with its rewrite to backup {snap} " in latest.stderr
        assert f"--from latest is backup {safety} " in latest.stderr and "own safety snapshot" in latest.stderr
        assert f"Pass --from {snap} to finish that restore, or --from {safety} (by its ID)" in latest.stderr
    # Any other snapshot is refused too (here a plain file: a copy of the safety snapshot's database).
    copy = tmp_path / "copy.db"
    shutil.copyfile(repo / safety / "snapshot.db", copy)
    other = run_dr(c, repo, "etcd", "restore", "--from", str(copy), *flags(c), "--yes")
    assert other.returncode == 1 and f"--from {copy} is file {copy} " in other.stderr, other.stderr
    assert ", another snapshot: a held run is finished only with the snapshot it began with" in other.stderr
    assert not api_answers(c)
    dry = ok(run_dr(c, repo, "etcd", "restore", "--from", snap, *flags(c), "--dry-run=client"))
    assert dry.stdout.startswith(f"(dry run) would finish the held run {held_run}: ")
    assert dry.stdout.count("\n") == 1 and all(line.startswith(READ_ONLY) for line in dry.stderr.splitlines())

    finished = ok(run_dr(c, repo, "etcd", "restore", "--from", snap, *flags(c), "--yes"))
    assert "holds the API servers down with its rewrite unfinished" in finished.stderr
    assert api_answers(c)
    assert configmaps(c, "ext-c") == {"kept", "gone-later"}
    assert etcd_keys(c, "/kubectl-dr/") == [] and etcd_keys(c, "/registry/kubectl-dr-test-flood/") == []
    eventually(lambda: leftover_pods(c) == [], what="no kubectl dr pod left", timeout=60)
    c.kubectl("delete", "namespace", "ext-c", "--wait=false")


def test_a_refused_run_writes_no_runbook(external: Cluster, tmp_path: Path) -> None:
    c, repo = external, tmp_path / "repo"
    one_shape(c, 1)
    snap = json.loads(ok(run_dr(c, repo, "etcd", "snapshot", *flags(c), "-o", "json")).stdout)["id"]
    unconfirmed = run_dr(c, repo, "etcd", "restore", "--from", snap, *flags(c))  # no --yes and no terminal
    assert unconfirmed.returncode != 0 and "--yes" in unconfirmed.stderr, unconfirmed.stderr
    with restore_lease_held(c) as other:
        held = run_dr(c, repo, "etcd", "restore", "--from", snap, *flags(c), "--yes")
    assert held.returncode == 1 and f"run {other} on host elsewhere" in held.stderr, held.stderr
    assert runbooks(repo) == [] and "runbook" not in held.stderr + unconfirmed.stderr
    assert api_answers(c) and leftover_pods(c) == [] and etcd_keys(c, "/kubectl-dr/") == []


@pytest.fixture
def stranger(external: Cluster, tmp_path: Path) -> Iterator[str]:
    """Another etcd of the same version, holding another cluster's kube-system."""
    proc = start_etcd(tmp_path / "other", binary=external.etcd.etcd)
    subprocess.run([str(external.etcd.etcdctl), f"--endpoints={proc.client_url}", "put",
                    "/registry/namespaces/kube-system", '{"metadata":{"uid":"another-cluster"}}'],
                   check=True, capture_output=True, env={"ETCDCTL_API": "3"}, timeout=30)
    yield proc.client_url
    proc.stop()


def test_an_etcd_that_is_not_the_clusters_storage_is_refused(external: Cluster, tmp_path: Path,
                                                             stranger: str) -> None:
    c, repo = external, tmp_path / "repo"
    one_shape(c, 1)
    snap = prepare(c, repo, "ext-d", "7304")
    result = run_dr(c, repo, "etcd", "restore", "--from", snap, "--endpoints", stranger, "--yes")
    assert result.returncode == 1
    assert f"error: the etcd at {stranger} is not this cluster's storage" in result.stderr
    assert "--etcd-servers" in result.stderr
    assert configmaps(c, "ext-d") == {"kept", "made-later"} and leftover_pods(c) == []
    c.kubectl("delete", "namespace", "ext-d", "--wait=false")


def test_a_client_killed_before_the_claim_is_outlived_by_the_nodes(external: Cluster, tmp_path: Path) -> None:
    """No cleanup runs after SIGKILL: the nodes' own timer starts the API servers again, on untouched data."""
    c, repo = external, tmp_path / "repo"
    one_shape(c, 1)
    snap = prepare(c, repo, "ext-e", "7305")
    interrupted(c, repo, snap, "handed over", lambda proc: proc.kill(), "--hold-timeout", "10")
    eventually(lambda: all((c.layout.manifests(n) / "kube-apiserver.yaml").exists()
                           and not (c.layout.manifests(n) / "kubectl-dr-etcd-hold.yaml").exists()
                           for n in c.control_planes), what="the nodes giving up on their own", timeout=120)
    eventually(lambda: api_answers(c), what="the API servers back", timeout=120)
    assert configmaps(c, "ext-e") == {"kept", "made-later"}
    assert any(k.endswith("/verdict") for k in etcd_keys(c, "/kubectl-dr/"))  # the node's abandon, kept for them
    eventually(lambda: leftover_pods(c) == [], what="no kubectl dr pod left", timeout=60)
    c.kubectl("delete", "namespace", "ext-e", "--wait=false")


def test_a_kubelet_that_cannot_be_restarted_fails_the_command_not_the_restore(external: Cluster,
                                                                               tmp_path: Path) -> None:
    c, repo = external, tmp_path / "repo"
    one_shape(c, 1)
    snap = prepare(c, repo, "ext-f", "7306")
    worker = c.workers[0]
    systemctl = c.layout.host_path(worker, "/usr/bin/systemctl")
    hidden = systemctl.with_name(".systemctl")
    systemctl.replace(hidden)  # a node whose host has no systemctl
    try:
        result = run_dr(c, repo, "etcd", "restore", "--from", snap, *flags(c), "--yes", "--restart-kubelets")
    finally:
        hidden.replace(systemctl)
    assert result.returncode == 1
    assert f"error: etcd was restored, but the kubelet restart failed on {worker}" in result.stderr
    assert "systemctl" in result.stderr and "systemctl restart kubelet" in result.stderr  # what failed, what to do
    assert f"kubelet on {c.control_planes[0]}: restarted" in result.stdout
    assert configmaps(c, "ext-f") == {"kept", "gone-later"}  # the restore itself stands
    eventually(lambda: leftover_pods(c) == [], what="no kubectl dr pod left", timeout=60)
    c.kubectl("delete", "namespace", "ext-f", "--wait=false")
