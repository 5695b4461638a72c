"""`kubectl dr rook status` and `rook mon restore-quorum` against real ceph-mon quorums on the loopback cluster.

One Rook-Ceph cluster for the module (CI time): the tests run in order and each starts from where the one
before left the mons, which their docstrings say.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import clean_env, executable
from tests.cluster.fixture import Cluster, ClusterFactory
from tests.cluster.rook_ceph import store_digest
from tests.polling import eventually

NS = "rook-ceph"
STEPS = ("saved", "operator-down", "bad-mons-down", "maintenance", "store-backup", "monmap-edited",
         "inject-started", "monmap-injected", "endpoints", "maintenance-removed", "deployment-restored", "quorum",
         "operator-up")


@pytest.fixture(scope="module")
def rook(cluster_factory: ClusterFactory) -> Cluster:
    return cluster_factory(control_planes=1, workers=1, rook_ceph=3)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rook-repo")


# Where the commands run: the break-glass runbook file is written in the current directory.
WORKDIR: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    WORKDIR[:] = [tmp_path_factory.mktemp("rook-cwd")]
    return WORKDIR[0]


def dr(c: Cluster, *args: str, interrupt_after: str | None = None, timeout: float = 600
       ) -> subprocess.CompletedProcess[str]:
    env = clean_env({"KUBECTL_DR_TEST_INTERRUPT_AFTER": interrupt_after} if interrupt_after else None)
    return subprocess.run([executable(), f"--kubeconfig={c.kubeconfig}", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=WORKDIR[0])


def dr_sigint_after(c: Cluster, line: str, *args: str) -> tuple[int, str]:
    """Run the CLI and send it a real SIGINT (Ctrl-C) as soon as its stderr shows ``line``; exit code and stderr."""
    proc = subprocess.Popen([executable(), f"--kubeconfig={c.kubeconfig}", *args], env=clean_env(None),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            cwd=WORKDIR[0])
    assert proc.stderr is not None
    seen = []
    for text in proc.stderr:
        seen.append(text)
        if line in text:
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=300)
    return proc.returncode, "".join(seen) + rest


def leases(c: Cluster) -> str:
    return c.kubectl("-n", NS, "get", "leases", "-o", "name").stdout


def status(c: Cluster) -> dict[str, Any]:
    done = dr(c, "rook", "status", "-o", "json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def wait_until(check: Any, what: str, timeout: float = 120.0) -> None:
    """eventually(), every half second: most checks run the ceph CLI against a mon, which costs CPU."""
    eventually(check, timeout, what, interval=0.5)


def objects(c: Cluster) -> dict[str, Any]:
    """What restore-quorum may change, without the fields the server sets."""
    out: dict[str, Any] = {}
    for kind in ("deployments", "configmaps", "secrets"):
        items = json.loads(c.kubectl("-n", NS, "get", kind, "-o", "json").stdout)["items"]
        for item in items:
            meta = item["metadata"]
            if kind == "configmaps" and meta["name"] == "kube-root-ca.crt":
                continue
            out[f"{kind}/{meta['name']}"] = {"labels": meta.get("labels"), "spec": item.get("spec"),
                                             "data": item.get("data"),
                                             "annotations": {k: v for k, v in (meta.get("annotations") or {}).items()
                                                             if k != "deployment.kubernetes.io/revision"}}
    return out


def quorum_of(c: Cluster, mon: str) -> list[str]:
    st = c.mon_status(mon)
    if not st or st["state"] not in ("leader", "peon"):
        return []
    return sorted(st["monmap"]["mons"][r]["name"] for r in st["quorum"])


def test_status_and_a_wrong_good_is_refused(rook: Cluster, repo: Path) -> None:
    """From three mons in quorum: c stops (its store kept, so it is older), b is lost; c is refused as GOOD,
    and so is any GOOD once c is back and a and c have a quorum again. Leaves a and c in quorum, b gone."""
    data = status(rook)
    assert data["quorum"] == ["a", "b", "c"]
    assert [m["monStatus"]["state"] in ("leader", "peon") for m in data["mons"]] == [True] * 3
    assert data["operator"]["replicas"] == 1
    elsewhere = dr(rook, "-n", "default", "rook", "status")
    assert elsewhere.returncode == 1 and "no Rook-Ceph mons in namespace default" in elsewhere.stderr
    rook.stop_mon("c")
    wait_until(lambda: quorum_of(rook, "a") == ["a", "b"], "a and b to form a quorum without c")
    rook.stop_mon("b", delete_store=True)
    wait_until(lambda: (rook.mon_status("a") or {}).get("state") in ("probing", "electing"), "a to lose quorum")
    data = status(rook)
    assert data["quorum"] == []
    assert {m["mon"]: m["running"] for m in data["mons"]} == {"a": True, "b": False, "c": False}
    before = objects(rook)
    done = dr(rook, "rook", "mon", "restore-quorum", "c", "--yes", "--repo", str(repo))
    assert done.returncode == 1
    assert "mon c does not answer on its admin socket" in done.stderr
    assert "mons that answer: a (" in done.stderr
    assert objects(rook) == before
    assert not any(repo.iterdir())
    rook.start_mon("c")
    wait_until(lambda: quorum_of(rook, "a") == ["a", "c"], "a and c to form a quorum")
    done = dr(rook, "rook", "mon", "restore-quorum", "a", "--yes", "--repo", str(repo))
    assert done.returncode == 1
    assert "the mons have a quorum (a, c in quorum)" in done.stderr
    assert objects(rook) == before


def test_dry_run_and_undo_before_the_inject_leave_every_object_as_it_was(rook: Cluster, repo: Path) -> None:
    """c is lost too: a alone, without quorum. A dry run changes nothing; a run stopped just before the inject
    and undone puts every object back, a running again as before."""
    rook.stop_mon("c", delete_store=True)
    wait_until(lambda: (rook.mon_status("a") or {}).get("state") in ("probing", "electing"), "a to lose quorum")
    before = objects(rook)
    done = dr(rook, "--dry-run=client", "rook", "mon", "restore-quorum", "a")
    assert done.returncode == 0, done.stderr
    assert "monmaptool /tmp/kubectl-dr-monmap --rm b --rm c" in done.stderr  # the runbook, printed
    assert objects(rook) == before
    done = dr(rook, "rook", "mon", "restore-quorum", "a", "--yes", "--repo", str(repo),
              interrupt_after="monmap-edited")
    assert done.returncode == 130, done.stderr
    assert "rook-ceph-mon-a-maintenance" in rook.kubectl("-n", NS, "get", "deployments").stdout
    done = dr(rook, "rook", "mon", "restore-quorum", "a", "--undo", "--yes")
    assert done.returncode == 0, done.stderr
    assert objects(rook) == before
    wait_until(lambda: rook.mon_status("a") is not None, "mon a to run again")
    mon_a = next(m for m in status(rook)["mons"] if m["mon"] == "a")
    assert sorted(mon_a["monStatus"]["monmap"]) == ["a", "b", "c"]  # the store was not touched


def test_interrupted_at_every_step_it_finishes_on_rerun_with_a_quorum_of_one(rook: Cluster, repo: Path) -> None:
    """a alone (b and c lost): each run stops right after one more step; the next resumes. --undo is refused once
    the inject has begun. The end: a quorum of one on a, Rook's objects name a alone, the operator back, the bad
    mons at 0 and left in place, no maintenance pod, and the backup holds a's store exactly."""
    store_at_backup: dict[str, str] = {}
    backups_before = sorted(p.name for p in repo.iterdir())
    for step in STEPS[:-1]:
        if step == "maintenance":
            # A real Ctrl-C, in the middle of the next step (store-backup waits for the maintenance pod to run):
            # exit 130, the journal ends at the step done, no backup, the lease released; the rerun goes on.
            code, stderr = dr_sigint_after(rook, f"done: {step}", "rook", "mon", "restore-quorum", "a", "--yes",
                                           "--repo", str(repo))
            assert code == 130, stderr
            assert "interrupted by SIGINT" in stderr and "done: store-backup" not in stderr
            journal = json.loads(json.loads(rook.kubectl("-n", NS, "get", "configmap", "kubectl-dr-rook-restore-quorum",
                                                         "-o", "json").stdout)["data"]["journal"])
            assert journal["steps"][-1] == "maintenance"
            assert sorted(p.name for p in repo.iterdir()) == backups_before
            assert "kubectl-dr-rook-restore-quorum" not in leases(rook)
        else:
            done = dr(rook, "rook", "mon", "restore-quorum", "a", "--yes", "--repo", str(repo), interrupt_after=step)
            assert done.returncode == 130, f"{step}: {done.stderr}"
            assert f"done: {step}" in done.stderr
            stderr = done.stderr
        if step == "saved":
            named = re.search(r"break-glass runbook written to (\S+)", stderr)
            assert named, stderr
            runbook = Path(named.group(1))
            assert runbook.parent == WORKDIR[0] and runbook.name.startswith("rook-restore-quorum-runbook-")
            assert "ceph-mon --id=a --mon-data=/var/lib/ceph/mon/ceph-a --inject-monmap" in runbook.read_text()
        if step == "store-backup":
            store_at_backup = store_digest(rook.mon_store("a"))  # the mon is stopped: the store is still
        if step == "maintenance":
            other = dr(rook, "rook", "mon", "restore-quorum", "b", "--yes", "--repo", str(repo))
            assert other.returncode == 1 and "a restore-quorum run to mon a is in progress" in other.stderr
        if step == "inject-started":
            refused = dr(rook, "rook", "mon", "restore-quorum", "a", "--undo", "--yes")
            assert refused.returncode == 1 and "--undo only puts objects back before that" in refused.stderr
    done = dr(rook, "rook", "mon", "restore-quorum", "a", "--yes", "--repo", str(repo), "-o", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["quorum"] == ["a"] and result["bad"] == ["b", "c"]
    assert "deployment/rook-ceph-mon-b (replicas 0)" in result["leftForRook"]
    assert quorum_of(rook, "a") == ["a"]
    data = status(rook)
    assert data["quorum"] == ["a"]
    assert list(data["endpoints"]) == ["a"] and data["monInitialMembers"] == ["a"] and len(data["monHost"]) == 1
    assert data["operator"]["replicas"] == 1
    assert {m["mon"]: m["replicas"] for m in data["mons"]} == {"a": 1, "b": 0, "c": 0}
    deployments = rook.kubectl("-n", NS, "get", "deployments", "-o", "name").stdout.split()
    assert "deployment.apps/rook-ceph-mon-b" in deployments and not any("maintenance" in d for d in deployments)
    assert "kubectl-dr-rook-restore-quorum" not in rook.kubectl("-n", NS, "get", "configmaps").stdout
    assert "kubectl-dr-rook-restore-quorum" not in leases(rook)
    pods = json.loads(rook.kubectl("-n", NS, "get", "pods", "-o", "json").stdout)["items"]
    assert not [p for p in pods if "kubectl-dr.io/maintenance" in (p["metadata"].get("labels") or {})]
    # The backup: a's store exactly as it was while stopped, and what the listing in the pod said.
    backup = repo / result["backup"]
    with tarfile.open(backup / "mon-store.tar") as tar:
        files = {m.name.removeprefix("./"): hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                 for m in tar.getmembers() if m.isfile()}
    assert files == store_at_backup
    listing = {line.split()[1].removeprefix("./"): line.split()[0]
               for line in (backup / "mon-store-files.sha256").read_text().splitlines() if line}
    assert listing == store_at_backup
    assert "ceph-mon --id=a --mon-data=/var/lib/ceph/mon/ceph-a --inject-monmap" in (backup / "runbook.sh").read_text()
