"""`kubectl dr etcd member replace` on loopback clusters of three kubeadm-style stacked members (etcd 3.4
and 3.5): a member whose data dir was deleted comes back empty, catches up as a learner, is promoted, and
the cluster ends with every member healthy, every object intact and kubeadm's manifest unchanged. Refusals
(quorum, single member) change nothing; an interrupted run resumes, or is undone before the removal.

Each test module cluster is its own (not the shared factory's): replacing members changes member IDs
that other tests do not expect to change under them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import clean_env, dr, executable
from tests.cluster.fixture import Cluster, ClusterFactory
from tests.e2e.test_etcd_snapshot import leftover_pods, make_marker
from tests.polling import eventually

pytestmark = [pytest.mark.slow]
JOURNAL_DIR = "etc/kubernetes/kubectl-dr/etcd-member-replace"


@pytest.fixture(scope="module", params=["3.5", "3.4"])
def three(request: pytest.FixtureRequest, cluster_factory: ClusterFactory) -> Cluster:
    # Its own cluster: the tests replace members.
    return cluster_factory(control_planes=3, workers=1, etcd_version=str(request.param), private="member-replace")


def env(cluster: Cluster, **extra: str) -> dict[str, str]:
    return clean_env({"KUBECONFIG": str(cluster.kubeconfig), **extra})


def etcdctl(cluster: Cluster, *args: str, endpoints: list[str] | None = None) -> Any:
    """The cluster's own etcdctl version on this machine, with a member's client certificate: JSON out."""
    pki = cluster.layout.etcd_pki(cluster.control_planes[0])
    urls = endpoints or [m.client_url for m in cluster.members]
    result = subprocess.run(
        [str(cluster.etcd.etcdctl), f"--endpoints={','.join(urls)}", f"--cacert={pki / 'ca.crt'}",
         f"--cert={pki / 'healthcheck-client.crt'}", f"--key={pki / 'healthcheck-client.key'}",
         "--dial-timeout=2s", "--command-timeout=5s", *args, "-w", "json"],
        capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return json.loads(result.stdout)


def member_ids(cluster: Cluster) -> dict[str, tuple[str, bool]]:
    listed = etcdctl(cluster, "member", "list", endpoints=[cluster.members[0].client_url])["members"]
    return {m.get("name", ""): (f"{int(m['ID']):x}", bool(m.get("isLearner"))) for m in listed}


def all_healthy(cluster: Cluster) -> bool:
    return all(h["health"] for h in etcdctl(cluster, "endpoint", "health"))


def manifest(cluster: Cluster, node: str) -> Path:
    return cluster.layout.manifests(node) / "etcd.yaml"


def data_dir(cluster: Cluster, node: str) -> Path:
    return cluster.layout.host_path(node, "/var/lib/etcd")


def lose_data(cluster: Cluster, node: str) -> None:
    """The member's data dir deleted under it; the kubelet restarts it on an empty dir and it crashes."""
    cluster.park_manifest(node, "etcd.yaml")
    eventually(lambda: not _mirror(cluster, node), what=f"etcd pod on {node} to stop")
    shutil.rmtree(data_dir(cluster, node))
    cluster.unpark_manifest(node, "etcd.yaml")
    eventually(lambda: _mirror(cluster, node), what=f"etcd pod on {node} to be back")


def _mirror(cluster: Cluster, node: str) -> bool:
    out = cluster.kubectl("get", "pod", "-n", "kube-system", f"etcd-{node}", "--ignore-not-found", "-o", "name")
    return bool(out.stdout.strip())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_replaced(cluster: Cluster, node: str, data: dict[str, Any], before: dict[str, tuple[str, bool]],
                    original_sha: str) -> None:
    members = member_ids(cluster)
    assert set(members) == set(before) == set(cluster.control_planes)
    assert members[node][0] == data["newID"] != before[node][0] == data["oldID"]
    assert not any(learner for _, learner in members.values())
    assert data["addedAsLearner"] is True
    assert all_healthy(cluster)
    # kubeadm's manifest is exactly what it was; the old data dir is kept where the output says.
    assert sha(manifest(cluster, node)) == original_sha
    aside = data["oldDataDir"]
    assert aside and aside.startswith("/var/lib/etcd.kubectl-dr-")
    assert cluster.layout.host_path(node, aside).is_dir()
    assert (data_dir(cluster, node) / "member").is_dir()
    assert oct(data_dir(cluster, node).stat().st_mode & 0o777) == "0o700"
    journals = list((cluster.layout.host_path(node, "/" + JOURNAL_DIR)).glob("journal-*.done.json"))
    assert journals and not (cluster.layout.host_path(node, "/" + JOURNAL_DIR) / "journal.json").exists()
    assert leftover_pods(cluster) == []
    assert cluster.kubectl("get", "leases", "-n", "kube-system", "-o", "name").stdout.count("kubectl-dr") == 0


def assert_marker(cluster: Cluster, node: str, ns: str, token: str) -> None:
    # Through the API (real kubectl), and straight from the replaced member's own copy (serializable read).
    out = cluster.kubectl("-n", ns, "get", "configmap", "marker", "-o", "jsonpath={.data.token}").stdout
    assert out == token
    url = next(m.client_url for m in cluster.members if m.name == node)
    got = etcdctl(cluster, "get", f"/registry/configmaps/{ns}/marker", "--consistency=s", endpoints=[url])
    assert got.get("count") == 1


def test_replace_member_whose_data_dir_was_deleted(three: Cluster) -> None:
    node = three.control_planes[1]
    ns, token = make_marker(three, "replace")
    original_sha = sha(manifest(three, node))
    before = member_ids(three)
    lose_data(three, node)
    plan = dr("etcd", "member", "replace", node, "--dry-run=client", "-o", "json", env=env(three), subprocess=True)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["member"] == node and leftover_pods(three) == []
    result = dr("etcd", "member", "replace", node, "--yes", "-o", "json", env=env(three), timeout=600, subprocess=True)
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    data = json.loads(result.stdout)
    assert "cleaning up" not in result.stderr
    assert f"kept on node {node} as {data['oldDataDir']}" in result.stderr
    assert_replaced(three, node, data, before, original_sha)
    assert_marker(three, node, ns, token)
    # The cluster takes writes, and the replaced member has them.
    three.kubectl("-n", ns, "create", "configmap", "after", "--from-literal=x=y")
    assert three.kubectl("-n", ns, "get", "configmap", "after", "-o", "name").stdout.strip() == "configmap/after"


def test_refuses_when_quorum_would_be_lost(three: Cluster) -> None:
    """Replacing a healthy member while another one is down would leave one healthy of two: refused."""
    target, down = three.control_planes[0], three.control_planes[2]
    before = member_ids(three)
    original_sha = sha(manifest(three, target))
    three.stop_member(down)
    try:
        result = dr("etcd", "member", "replace", target, "--yes", env=env(three), timeout=300, subprocess=True)
        assert result.returncode == 1, result.stderr
        assert f"replacing the etcd member {target} would lose quorum" in result.stderr
        assert f"unhealthy besides {target}: {down}" in result.stderr
        assert "Nothing was changed" in result.stderr
        assert sha(manifest(three, target)) == original_sha
        assert not (three.layout.host_path(target, "/" + JOURNAL_DIR) / "journal.json").exists()
        assert leftover_pods(three) == []
    finally:
        three.start_member(down)
    assert member_ids(three) == before
    eventually(lambda: all_healthy(three), what="every member healthy")


def test_without_confirmation_nothing_changes(three: Cluster) -> None:
    node = three.control_planes[2]
    original_sha = sha(manifest(three, node))
    result = dr("etcd", "member", "replace", node, env=env(three), timeout=300, subprocess=True)
    assert result.returncode == 1
    assert "refusing to replace the etcd member" in result.stderr
    assert "without confirmation: there is no terminal to ask on and --yes was not given" in result.stderr
    assert "without it the cluster has 2 voting members" in result.stderr  # counts in words
    assert sha(manifest(three, node)) == original_sha
    assert not (three.layout.host_path(node, "/" + JOURNAL_DIR) / "journal.json").exists()
    assert leftover_pods(three) == []


def _kill_after(cluster: Cluster, node: str, line: str, sig: signal.Signals = signal.SIGKILL) -> str:
    """Start a replacement and SIGKILL it (or `sig`) as soon as it says `line`: a run that dies mid-way.
    Returns what it said."""
    proc = subprocess.Popen([executable(), "etcd", "member", "replace", node, "--yes"],
                            env=env(cluster, KUBECTL_DR_POD_GRACE_SECONDS="10"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for text in proc.stderr:
        seen.append(text)
        if line in text:
            proc.send_signal(sig)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == (-sig if sig == signal.SIGKILL else 130), "".join(seen) + rest
    return "".join(seen) + rest


def test_interrupted_run_resumes(three: Cluster) -> None:
    node = three.control_planes[2]
    ns, token = make_marker(three, "resume")
    original_sha = sha(manifest(three, node))
    before = member_ids(three)
    lose_data(three, node)
    # Killed once the member was removed from etcd: from there on only going forward makes sense.
    _kill_after(three, node, "keeping the old data dir")
    journal = json.loads((three.layout.host_path(node, "/" + JOURNAL_DIR) / "journal.json").read_text())
    assert journal["step"] in ("removed", "moved-aside") and journal["oldID"] == before[node][0]
    undo = dr("etcd", "member", "replace", node, "--undo", env=env(three), timeout=300, subprocess=True)
    assert undo.returncode == 1 and "cannot be undone" in undo.stderr
    # The hint is the command to paste: the user's own, less the --undo that cannot help any more.
    assert f"Run `kubectl dr etcd member replace {node}` again to finish it" in undo.stderr
    result = dr("etcd", "member", "replace", node, "--yes", "-o", "json",
                env=env(three, KUBECTL_DR_POD_GRACE_SECONDS="10"), timeout=600, subprocess=True)
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    assert "resuming the replacement" in result.stderr
    data = json.loads(result.stdout)
    assert data["resumed"] is True
    # The dead run's pods end by themselves (their dead-man loop), its leases were taken over.
    eventually(lambda: leftover_pods(three) == [], what="the killed run's pods to end", timeout=90)
    assert_replaced(three, node, data, before, original_sha)
    assert_marker(three, node, ns, token)


def test_undo_before_removal(three: Cluster) -> None:
    node = three.control_planes[0]
    original_sha = sha(manifest(three, node))
    before = member_ids(three)
    # Ctrl-C: the run cleans up its pods and leases and says how to go on; the journal stays.
    said = _kill_after(three, node, "stopping etcd member", signal.SIGINT)
    assert f"run `kubectl dr etcd member replace {node} --yes` again to resume" in said  # as typed
    journal_file = three.layout.host_path(node, "/" + JOURNAL_DIR) / "journal.json"
    assert json.loads(journal_file.read_text())["step"] in ("planned", "stopped")
    result = dr("etcd", "member", "replace", node, "--undo", env=env(three, KUBECTL_DR_POD_GRACE_SECONDS="10"),
                timeout=300, subprocess=True)
    assert result.returncode == 0, result.stderr
    assert "undone" in result.stdout
    assert sha(manifest(three, node)) == original_sha and not journal_file.exists()
    eventually(lambda: all_healthy(three), what="the member back on its own data")
    assert member_ids(three) == before
    eventually(lambda: leftover_pods(three) == [], what="the killed run's pods to end", timeout=90)


def test_single_member_is_refused(cluster: Cluster) -> None:
    node = cluster.control_planes[0]
    result = dr("etcd", "member", "replace", node, "--yes", env=env(cluster), timeout=300, subprocess=True)
    assert result.returncode == 1
    assert "single-member etcd" in result.stderr and "snapshot" in result.stderr
    assert leftover_pods(cluster) == []
