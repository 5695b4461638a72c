"""Safe runs: dry runs that change nothing, and one run per claim whichever machine it comes from."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import clean_env, dr, executable
from tests.datasets import make_claim, managed_pods, new_namespace, snapshot, volume_dir
from tests.e2e.test_pvc_consumers import _wait_for_line, deployment, replicas_and_records, running_pods
from tests.polling import eventually


def cluster_state(cluster: Any, ns: str) -> dict[str, Any]:
    """Every object a job could create or change, by kind and name, with its resourceVersion."""
    objects = json.loads(cluster.kubectl("get", "pods,deployments,replicasets,leases,pvc,events", "-n", ns,
                                         "-o", "json").stdout)["items"]
    return {f"{o['kind']}/{o['metadata']['name']}": (o["metadata"].get("resourceVersion"), o.get("spec", {}).get(
        "replicas")) for o in objects if o["kind"] != "Pod"} | {
        f"Pod/{o['metadata']['name']}": o["metadata"].get("uid") for o in objects if o["kind"] == "Pod"}


@pytest.fixture(scope="module")
def app(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    ns = new_namespace(cluster, "dry")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, {}))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    vol = volume_dir(cluster, ns)
    (vol / "data").write_bytes(os.urandom(1 << 20))
    repo = tmp_path_factory.mktemp("repo")
    assert dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), cluster=cluster, subprocess=True).returncode == 0
    (vol / "data").write_bytes(b"changed since the backup")
    return ns, vol, repo


@pytest.mark.parametrize("mode", ["client", "server"])
@pytest.mark.parametrize("command", [
    ["pvc", "backup", "data"], ["pvc", "restore", "data", "--from", "latest", "--yes", "--clean"],
    ["pvc", "rescue", "data", "--", "rm", "-rf", "/data/data"],
])
def test_dry_runs_change_nothing(cluster: Any, app: tuple[str, Path, Path], command: list[str], mode: str) -> None:
    ns, vol, repo = app
    objects, volume, backups = cluster_state(cluster, ns), snapshot(vol), sorted(os.listdir(repo))
    repo_flag = ["--repo", str(repo)] if command[1] != "rescue" else []  # rescue has no repository
    # Flags go before the command's own `--` (everything after it is the command in the pod).
    result = dr(*command[:3], "-n", ns, *repo_flag, f"--dry-run={mode}", "-o", "json", *command[3:], cluster=cluster)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dryRun"] == mode and plan["claim"]["pvc"] == "data"
    if mode == "server":
        assert plan["podAcceptedByServer"] is True
    assert cluster_state(cluster, ns) == objects
    assert snapshot(vol) == volume
    assert sorted(os.listdir(repo)) == backups
    assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
    table = dr(*command[:3], "-n", ns, *repo_flag, f"--dry-run={mode}", *command[3:], cluster=cluster)
    assert table.returncode == 0 and "(dry run) would" in table.stdout
    if mode == "server" and command[1] == "restore":  # the scale patches were sent with dryRun=All
        assert "deployment.apps/app would be scaled from 1 to 0 (original replicas: 1) (server dry run)" in table.stderr


def other_host(hostname: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """kubectl dr as it runs on another machine: its own host name (a UTS namespace), same cluster."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is needed to run as another host")
    script = f'hostname {hostname} && exec "$@"'
    return subprocess.Popen([unshare, "--uts", "sh", "-c", script, "sh", executable(), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_from_two_hosts_exclude_each_other(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "two")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, {}))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    vol = volume_dir(cluster, ns)
    payload = os.urandom(64 << 20)
    (vol / "big").write_bytes(payload)
    repo = tmp_path / "repo"
    assert dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), cluster=cluster, subprocess=True).returncode == 0

    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_PROGRESS_INTERVAL": "0"})
    first = other_host("laptop-b", ["pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest",
                                    "--yes"], env)
    _wait_for_line(first, f"restore {ns}/data: ")
    # Held still mid-transfer (its lease stays valid for a minute), so the next commands meet it working.
    first.send_signal(signal.SIGSTOP)
    theirs = managed_pods(cluster, ns)
    assert len(theirs) == 1
    for second in (["pvc", "backup", "data"], ["pvc", "restore", "data", "--from", "latest", "--yes"],
                   ["pvc", "rescue", "data", "--", "true"]):
        refused = dr(*second[:3], "-n", ns, *(["--repo", str(repo)] if second[1] != "rescue" else []),
                     *second[3:], cluster=cluster, subprocess=True)
        assert refused.returncode == 1, refused.stderr
        assert f"another kubectl dr run is working on claim {ns}/data" in refused.stderr
        assert "on host laptop-b" in refused.stderr and (f"(pvc restore data -n {ns} --repo {repo} --from latest --yes)"
                                                    in refused.stderr)
        assert managed_pods(cluster, ns) == theirs, "the other run's pod is not taken from it"
    first.send_signal(signal.SIGCONT)
    _, rest = first.communicate(timeout=300)
    assert first.returncode == 0, rest
    assert (vol / "big").read_bytes() == payload
    assert dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), cluster=cluster, subprocess=True).returncode == 0
    assert json.loads(cluster.kubectl("get", "leases", "-n", ns, "-o", "json").stdout)["items"] == []
