"""Restores stop the claim's consumers and start them again; backups of RWO claims leave them running."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kubectl_dr.repo import LocalRepository
from tests.cli_runner import clean_env, dr, executable
from tests.datasets import make_claim, managed_pods, new_namespace, volume_dir
from tests.polling import eventually

PROGRESS = {"KUBECTL_DR_PROGRESS_INTERVAL": "1"}


def deployment(ns: str, security: dict[str, Any], container_security: dict[str, Any] | None = None) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}}, "spec": {
                     "securityContext": security, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"],
                                     "securityContext": container_security or {},
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}}})


def running_pods(cluster: Any, ns: str, selector: str) -> list[str]:
    out = cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o",
                          "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{\"\\n\"}{end}").stdout
    return [line.split()[0] for line in out.splitlines() if line.endswith(" Running")]


def replicas_and_records(cluster: Any, ns: str, what: str) -> tuple[int, dict[str, str]]:
    obj = json.loads(cluster.kubectl("get", what, "-n", ns, "-o", "json").stdout)
    notes = {k: v for k, v in (obj["metadata"].get("annotations") or {}).items() if k.startswith("kubectl-dr.io/")}
    return int(obj["spec"]["replicas"]), notes


def test_deployment_with_fsgroup(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "dep")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, {"runAsUser": 1000, "fsGroup": 2000}))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    app_pod = running_pods(cluster, ns, "app=app")[0]
    vol = volume_dir(cluster, ns)
    (vol / "db").mkdir()
    (vol / "db" / "table").write_bytes(os.urandom(3 << 20))
    repo = tmp_path / "repo"

    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster,
                extra_env=PROGRESS, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    # RWO in use: read on the app's node, the app untouched.
    assert running_pods(cluster, ns, "app=app") == [app_pod]
    node = cluster.kubectl("get", "pod", "-n", ns, app_pod, "-o", "jsonpath={.spec.nodeName}").stdout
    assert json.loads(backup.stdout)["details"]["rescuePod"]["node"] == node

    (vol / "db" / "table").write_bytes(b"corrupted by the app")
    restore = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", "--yes",
                 "-o", "json", cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert restore.returncode == 0, restore.stderr
    result = json.loads(restore.stdout)
    assert result["consumers"] == ["Deployment/app"]
    assert result["securityContext"]["pod"]["fsGroup"] == 2000
    assert "Deployment/app" in restore.stderr or "deployment" in restore.stderr.lower()
    assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running again")
    assert running_pods(cluster, ns, "app=app") != [app_pod]  # it was stopped during the restore
    assert (vol / "db" / "table").stat().st_size == 3 << 20
    # The app's fsGroup owns what was restored once the app runs again.
    eventually(lambda: (vol / "db" / "table").stat().st_gid == 2000, what="fsGroup applied")
    assert managed_pods(cluster, ns) == []


def test_statefulset(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "sts")
    sts = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": ns},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                     "terminationGracePeriodSeconds": 1, "securityContext": {"fsGroup": 3000},
                     "containers": [{"name": "db", "image": "busybox", "command": ["sleep", "3600"],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(sts))
    eventually(lambda: len(running_pods(cluster, ns, "app=db")) == 1, what="db-0 running")
    vol = volume_dir(cluster, ns, "data-db-0")
    (vol / "pgdata").write_text("v1")
    repo = tmp_path / "repo"
    assert dr("pvc", "backup", "data-db-0", "-n", ns, "--repo", str(repo), cluster=cluster, extra_env=PROGRESS,
              subprocess=True).returncode == 0
    (vol / "pgdata").write_text("v2")
    restore = dr("pvc", "restore", "data-db-0", "-n", ns, "--repo", str(repo), "--from", "latest", "--yes",
                 cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert restore.returncode == 0, restore.stderr
    assert (vol / "pgdata").read_text() == "v1"
    assert replicas_and_records(cluster, ns, "statefulset/db") == (1, {})
    eventually(lambda: len(running_pods(cluster, ns, "app=db")) == 1, what="db-0 running again")
    eventually(lambda: (vol / "pgdata").stat().st_gid == 3000, what="fsGroup applied")


def _start_restore(cluster: Any, ns: str, repo: Path, **env: str) -> subprocess.Popen[str]:
    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_PROGRESS_INTERVAL": "0", **env})
    return subprocess.Popen([executable(), "pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from",
                             "latest", "--yes"], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _wait_for_line(proc: subprocess.Popen[str], starts: str, *, done: bool | None = False) -> list[str]:
    """Until a stderr line that starts with `starts` (`done`: a progress line that says "(done)" or not)."""
    seen: list[str] = []
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(starts) and (done is None or ("(done)" in line) == done):
            return seen
        assert time.monotonic() < deadline, seen
    raise AssertionError(f"the command ended before {starts!r} was seen: {seen}")


def _wait_mid_transfer(proc: subprocess.Popen[str], ns: str, way: str = "restore") -> list[str]:
    """Until the first progress line of the transfer (`way`: restore or backup): bytes are flowing."""
    return _wait_for_line(proc, f"{way} {ns}/data: ")


# Where a restore is when the signal comes: before its first byte (the backup being verified, the app
# untouched), while the archive streams in, or while the restored volume is checked.
PHASES = {"before": ("verifying backup", None), "mid-transfer": ("restore {ns}/data: ", False),
          "during-check": ("restore {ns}/data: ", True)}


@pytest.mark.parametrize(("phase", "sig"), [
    ("before", signal.SIGTERM), ("mid-transfer", signal.SIGINT), ("mid-transfer", signal.SIGTERM),
    ("mid-transfer", signal.SIGHUP), ("mid-transfer", signal.SIGKILL), ("during-check", signal.SIGTERM),
], ids=lambda v: v if isinstance(v, str) else v.name)
def test_an_interrupted_restore_never_hands_a_torn_volume_to_the_app(cluster: Any, tmp_path: Path, phase: str,
                                                                      sig: signal.Signals) -> None:
    ns = new_namespace(cluster, "int")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, {}))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    vol = volume_dir(cluster, ns)
    payload = os.urandom(48 << 20)
    (vol / "big").write_bytes(payload)
    for i in range(3000):  # enough entries that the check after the transfer takes a moment
        (vol / f"f{i:05d}").write_bytes(b"x")
    repo = tmp_path / "repo"
    assert dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), cluster=cluster, extra_env=PROGRESS,
              subprocess=True).returncode == 0
    (vol / "big").write_bytes(b"changed")

    proc = _start_restore(cluster, ns, repo, KUBECTL_DR_POD_GRACE_SECONDS="12")
    starts, done = PHASES[phase]
    _wait_for_line(proc, starts.format(ns=ns), done=done)
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=120)
    replicas, records = replicas_and_records(cluster, ns, "deployment/app")
    if phase == "before":
        assert proc.returncode == 130, rest
        assert (replicas, records) == (1, {}) and (vol / "big").read_bytes() == b"changed"
        assert managed_pods(cluster, ns) == []
        return
    # From the first byte on, the app stays stopped with its records: a half-written volume is never served.
    assert replicas == 0 and records, rest
    assert running_pods(cluster, ns, "app=app") == []
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        # Nothing deleted the rescue pod: its dead-man loop ends it once the heartbeats stop.
        eventually(lambda: cluster.kubectl("get", "pods", "-n", ns, "-l", "app.kubernetes.io/managed-by=kubectl-dr",
                                         "-o", "jsonpath={.items[*].status.phase}").stdout in ("Succeeded", ""),
                 timeout=60, what="the killed run's rescue pod ended by itself")
    else:
        assert proc.returncode == 130, rest
        assert f"interrupted by {sig.name}" in rest
        assert "partly restored" in rest and f"kubectl dr scale restore -n {ns}" in rest
        assert managed_pods(cluster, ns) == []

    if sig == signal.SIGKILL:
        again = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", "--yes",
                   cluster=cluster, extra_env=PROGRESS, subprocess=True)
    else:
        # The hint is the command to paste: the restore's own arguments, the backup pinned by its ID.
        hinted = shlex.split(rest.split("To finish the restore, run it again:\n", 1)[1].splitlines()[0])
        backup_id = LocalRepository(repo).backups()[0].id
        assert hinted == ["kubectl", "dr", "pvc", "restore", "data", "--repo", str(repo), "--yes", "-n", ns,
                          "--from", backup_id], rest
        again = dr(*hinted[2:], cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert again.returncode == 0, again.stderr
    assert (vol / "big").read_bytes() == payload
    assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
    assert managed_pods(cluster, ns) == []


def _start_backup(cluster: Any, ns: str, repo: Path) -> subprocess.Popen[str]:
    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_PROGRESS_INTERVAL": "0"})
    return subprocess.Popen([executable(), "pvc", "backup", "data", "-n", ns, "--repo", str(repo), "--quiesce"],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_interrupted_quiesced_backup_leaves_no_backup_and_starts_the_app(cluster: Any, tmp_path: Path,
                                                                          sig: signal.Signals) -> None:
    ns = new_namespace(cluster, "bint")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, {}))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    vol = volume_dir(cluster, ns)
    (vol / "big").write_bytes(os.urandom(160 << 20))
    repo = tmp_path / "repo"

    proc = _start_backup(cluster, ns, repo)
    seen = _wait_mid_transfer(proc, ns, "backup")
    assert replicas_and_records(cluster, ns, "deployment/app")[0] == 0, seen  # stopped for the backup
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=120)
    listed = dr("backups", "list", "--repo", str(repo), "-o", "json", cluster=cluster, extra_env=PROGRESS)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["items"] == []  # a cut-short archive never looks like a backup
    if sig != signal.SIGKILL:
        assert proc.returncode == 130, rest
        assert "interrupted" in rest and "Traceback" not in rest
        assert "the incomplete backup was removed: nothing was kept in the repository" in rest
        assert managed_pods(cluster, ns) == []
        assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
        assert sorted(p.name for p in repo.iterdir()) == []  # the partial write was removed as well
    else:
        assert proc.returncode == -signal.SIGKILL
        replicas, notes = replicas_and_records(cluster, ns, "deployment/app")
        assert replicas == 0 and notes
        back = dr("scale", "restore", "-n", ns, "--yes", cluster=cluster, extra_env=PROGRESS, subprocess=True)
        assert back.returncode == 0, back.stderr
        assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
        # What the killed writer left is hidden, and `backups prune` recognises and removes it.
        (leftover,) = [p.name for p in repo.iterdir()]
        assert leftover.startswith(".tmp-")
        pruned = dr("backups", "prune", "--repo", str(repo), "--keep-last", "1", "--yes", cluster=cluster,
                    extra_env=PROGRESS)
        assert pruned.returncode == 0, pruned.stderr
        assert f"removed leftover {leftover}" in pruned.stdout + pruned.stderr
        assert list(repo.iterdir()) == []

    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running again")
    again = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "--quiesce", "-o", "json", cluster=cluster,
               extra_env=PROGRESS, subprocess=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["parts"][0]["size"] > 160 << 20
    assert managed_pods(cluster, ns) == []


def test_plans_say_what_they_would_do_in_plain_words(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "plan")
    make_claim(cluster, ns)
    repo = tmp_path / "repo"
    # Without consumers: a server dry run sends the pod, and no scale change, so it names none.
    server = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "--dry-run=server", cluster=cluster,
                extra_env=PROGRESS)
    assert server.returncode == 0, server.stderr
    assert "the API server accepted the pod (nothing was persisted)" in server.stdout, server.stdout
    assert "scale changes" not in server.stdout

    cluster.kubectl("apply", "-f", "-", input=deployment(ns, {}))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    plan = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "--quiesce", "--dry-run=client",
              cluster=cluster, extra_env=PROGRESS)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert any(line.startswith("  stop Deployment/app (") and line.endswith("then start it again") for line in lines)
    assert "start them again" not in plan.stdout
    assert any(line.endswith("as root, to read every file whatever its owner (the volume mounted read-only, no "
                             "service-account token)") for line in lines), plan.stdout
    assert "  write at most 1Gi, the claim's capacity (what the volume uses is known once the pod lists it)" in lines
    assert json.loads(dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "--dry-run=client",
                         "-o", "json", cluster=cluster, extra_env=PROGRESS).stdout)["writesAtMost"] == "1Gi"

    tar = tmp_path / "volume.tar"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("f")
    subprocess.run(["tar", "--format=ustar", "-cf", str(tar), "-C", str(tmp_path / "src"), "f"], check=True)
    restore = dr("pvc", "restore", "data", "-n", ns, "--from", str(tar), "--dry-run=client", cluster=cluster,
                 extra_env=PROGRESS)
    assert restore.returncode == 0, restore.stderr
    assert "  stop Deployment/app, and start it again once the volume checks out" in restore.stdout.splitlines()
    assert managed_pods(cluster, ns) == []
    assert not repo.exists()
