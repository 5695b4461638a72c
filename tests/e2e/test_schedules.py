"""Schedules without a server, end to end on the loopback cluster with a fast CronJob clock (one cron minute
lasts two seconds): a CronJob made by `schedule create etcd-snapshot` takes real snapshots of the real etcd
member into the node's directory with count retention; `etcd snapshots list` finds them; `pull` copies them
into a real S3 server (SeaweedFS), verified, and a second pull copies nothing; a snapshot damaged on the node
is refused; `schedule list/delete` and their refusals."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyrage
import pytest

from kubectl_dr.etcd.snapshot_file import verify_snapshot
from kubectl_dr.repo import open_repository
from kubectl_dr.schedules.node_snapshots import pull_lease_name
from tests.cli_runner import clean_env, dr, executable, run
from tests.cluster.fixture import Cluster, ClusterFactory
from tests.polling import eventually
from tests.s3server import S3Server

pytestmark = [pytest.mark.slow]
PERIOD = 2.0  # seconds per cron minute: the shape test_kubectl_cronjobs.py uses, so one cluster serves both
NAME = "dr-test-etcd"
DIR = "/var/lib/kubectl-dr/test-snapshots"
MANAGED = "app.kubernetes.io/managed-by=kubectl-dr"


@pytest.fixture(scope="module")
def fast(cluster_factory: ClusterFactory) -> Iterator[Cluster]:
    yield cluster_factory(control_planes=1, workers=1, cron_period_seconds=PERIOD)


# stdin is empty (no terminal), as in cron or CI: destructive steps need --yes. Schedules, pulls and snapshot
# listings touch nodes or leave objects: real processes; listings of objects, dry runs and refusals made before
# anything changes, and the repository's own commands, run in this interpreter.
NO_CONFIG = {"KUBECTL_DR_CONFIG": "/dev/null"}


def _ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout) if result.stdout.lstrip().startswith("{") else result.stdout


def _jobs(c: Cluster) -> list[dict[str, Any]]:
    out = c.kubectl("get", "jobs", "-n", "kube-system", "-l", f"kubectl-dr.io/schedule={NAME}", "-o", "json").stdout
    return list(json.loads(out)["items"])


def _succeeded(job: dict[str, Any]) -> bool:
    return any(cond.get("type") == "Complete" and cond.get("status") == "True"
               for cond in (job.get("status") or {}).get("conditions") or [])


def _snapshot_dir(c: Cluster) -> Path:
    return c.layout.host_path(c.control_planes[0], DIR)


def _files(c: Cluster) -> list[str]:
    d = _snapshot_dir(c)
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cronjob_snapshots_with_retention_pulled_into_s3(fast: Cluster, seaweedfs: S3Server, tmp_path: Path) -> None:
    c = fast
    # A dry run sends nothing; the real one makes a plain CronJob of ours.
    dry = _ok(dr("schedule", "create", "etcd-snapshot", "--name", NAME, "--cron", "* * * * *", "--keep", "2",
                 "--dir", DIR, "--dry-run=client", "-o", "json", cluster=c, extra_env=NO_CONFIG))
    assert dry["kind"] == "CronJob" and dry["spec"]["concurrencyPolicy"] == "Forbid"
    assert c.kubectl("get", "cronjob", "-n", "kube-system", NAME, check=False).returncode != 0
    _ok(dr("schedule", "create", "etcd-snapshot", "--name", NAME, "--cron", "* * * * *", "--keep", "2",
           "--dir", DIR, cluster=c, extra_env=NO_CONFIG, subprocess=True))
    cj = json.loads(c.kubectl("get", "cronjob", "-n", "kube-system", NAME, "-o", "json").stdout)
    assert cj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubectl-dr"
    assert cj["metadata"]["labels"]["kubectl-dr.io/schedule"] == NAME
    pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["automountServiceAccountToken"] is False
    assert pod["activeDeadlineSeconds"] > 0
    assert {t["key"] for t in pod["tolerations"]} >= {"node-role.kubernetes.io/control-plane"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == c.control_planes
    etcd_image = json.loads(c.kubectl("get", "pod", "-n", "kube-system", f"etcd-{c.control_planes[0]}", "-o",
                                      "json").stdout)["spec"]["containers"][0]["image"]
    assert pod["initContainers"][0]["image"] == etcd_image  # the cluster's own etcd image
    cert_mounts = [m for m in pod["initContainers"][0]["volumeMounts"] if m["mountPath"].startswith("/etc/kubernetes")]
    assert cert_mounts and all(m["readOnly"] for m in cert_mounts)
    assert not any(m["mountPath"].endswith(("server.key", "peer.key", "ca.key")) for m in cert_mounts)

    # Four runs or more: retention (--keep 2) has had to remove snapshots.
    seen: set[str] = set()

    def four_done() -> bool:
        seen.update(j["metadata"]["name"] for j in _jobs(c) if _succeeded(j))
        failed = [j["metadata"]["name"] for j in _jobs(c) if any(
            x.get("type") == "Failed" and x.get("status") == "True" for x in (j.get("status") or {}).get("conditions")
            or [])]
        assert not failed, f"schedule runs failed: {failed}: " + c.kubectl(
            "logs", "-n", "kube-system", f"job/{failed[0]}", "--all-containers", check=False).stdout
        return len(seen) >= 4
    eventually(four_done, 120, "four successful schedule runs")
    listed = _ok(dr("schedule", "list", "-o", "json", cluster=c, extra_env=NO_CONFIG))
    mine = [s for s in listed["items"] if s["name"] == NAME]
    assert mine and mine[0]["keep"] == 2 and mine[0]["directory"] == DIR and mine[0]["nodes"] == c.control_planes
    assert mine[0]["lastSuccessfulTime"] and mine[0]["nextRun"] and mine[0]["lastScheduleTime"]
    table = _ok(dr("schedule", "list", cluster=c, extra_env=NO_CONFIG))
    assert table.splitlines()[0].split()[:4] == ["NAME", "KIND", "SCHEDULE", "KEEP"] and NAME in table

    # Suspended, the schedule lets its running Job finish; deleted, it is gone and its snapshots stay.
    c.kubectl("patch", "cronjob", "-n", "kube-system", NAME, "--type", "merge", "-p", '{"spec":{"suspend":true}}')
    eventually(lambda: not [j for j in _jobs(c) if not _succeeded(j)], 120, "the running Job to finish")
    deleted = dr("schedule", "delete", NAME, "--yes", cluster=c, extra_env=NO_CONFIG, subprocess=True)
    assert deleted.returncode == 0 and f"cronjob.batch/{NAME} deleted" in deleted.stdout, deleted.stderr
    assert NAME not in _ok(dr("schedule", "list", "-o", "json", cluster=c, extra_env=NO_CONFIG))["items"].__repr__()
    eventually(lambda: not c.kubectl("get", "pods", "-n", "kube-system", "-l", f"kubectl-dr.io/schedule={NAME}",
                                      "-o", "name").stdout.strip(), 60, "the schedule's pods to go")
    files = _files(c)
    snaps = [f for f in files if f.endswith(".db")]
    assert len(snaps) == 2 and len([f for f in files if f.endswith(".json")]) == 2, files
    assert not [f for f in files if f.startswith(".partial-")], files
    on_node = {}
    for db in snaps:
        sidecar = json.loads((_snapshot_dir(c) / db.replace(".db", ".json")).read_text())
        path = _snapshot_dir(c) / db
        status = verify_snapshot(str(path))  # a real etcd snapshot: size rule, trailer, bbolt pages
        assert sidecar["size"] == path.stat().st_size and sidecar["sha256"] == _sha256(path) == status.sha256
        assert sidecar["revision"] == status.revision and sidecar["totalKeys"] == status.total_keys
        assert sidecar["node"] == c.control_planes[0] and sidecar["schedule"] == NAME
        assert "sha256-trailer" in sidecar["checks"] and "etcdctl-snapshot-status" in sidecar["checks"]
        on_node[sidecar["sha256"]] = sidecar

    # list shows them; pull copies them into S3, each verified; a second pull copies nothing.
    found = _ok(dr("etcd", "snapshots", "list", "--dir", DIR, "-o", "json", cluster=c, extra_env=NO_CONFIG,
                   subprocess=True))
    assert {s["sha256"] for s in found["items"] if s["complete"]} == set(on_node)
    url = f"s3://{seaweedfs.new_bucket()}/etcd"
    s3env = {**seaweedfs.env(), "TZ": "UTC"}
    refused = dr("etcd", "snapshots", "pull", "--to", url, "--dir", DIR, extra_env={**NO_CONFIG, **s3env}, cluster=c,
                 subprocess=True)
    assert refused.returncode == 1 and "unencrypted" in refused.stderr and "pulling" not in refused.stderr
    pulling = dr("etcd", "snapshots", "pull", "--to", url, "--dir", DIR, "--yes", "-o", "json",
                 extra_env={**NO_CONFIG, **s3env, "KUBECTL_DR_PROGRESS_SECONDS": "0"}, cluster=c, subprocess=True)
    pulled = _ok(pulling)
    assert len(pulled["pulled"]) == 2 and pulled["alreadyInRepository"] == []
    # Each copy says how it went, as every transfer does without a terminal.
    done = [line for line in pulling.stderr.splitlines() if line.startswith(f"pull {c.control_planes[0]}:")
            and re.search(r": \d+\.\d [KM]iB in \S+, \d+\.\d [KMG]iB/s \(done\)$", line)]
    assert len(done) == 2, pulling.stderr
    backups = _ok(dr("backups", "list", "--repo", url, "--type", "etcd-snapshot", "-o", "json",
                     extra_env={**NO_CONFIG, **s3env}, cluster=c))
    assert len(backups["items"]) == 2
    # Pulled later, still of this cluster: `latest` of its restores finds them.
    uid = c.kubectl("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}").stdout
    assert all(item["cluster"]["uid"] == uid for item in backups["items"])
    for item in backups["items"]:
        shown = _ok(dr("backups", "show", item["id"], "--repo", url, "-o", "json", extra_env={**NO_CONFIG, **s3env},
                       cluster=c))
        details = shown["details"]
        sidecar = on_node[details["sha256"]]
        assert shown["type"] == "etcd-snapshot" and details["mode"] == "node-local"
        assert details["revision"] == sidecar["revision"] and details["fileSize"] == sidecar["size"]
        assert shown["createdAt"].startswith(sidecar["takenAt"][:-1])  # the time the node took it
        assert shown["source"]["node"] == c.control_planes[0] and shown["source"]["member"]
        _ok(dr("backups", "verify", item["id"], "--repo", url, extra_env={**NO_CONFIG, **s3env}, cluster=c))
    again = _ok(dr("etcd", "snapshots", "pull", "--to", url, "--dir", DIR, "--yes", "-o", "json",
                   extra_env={**NO_CONFIG, **s3env}, cluster=c, subprocess=True))
    assert again["pulled"] == [] and len(again["alreadyInRepository"]) == 2
    listed_again = _ok(dr("etcd", "snapshots", "list", "--dir", DIR, "--repo", url, "-o", "json",
                          extra_env={**NO_CONFIG, **s3env}, cluster=c, subprocess=True))
    assert all(s["inRepository"] for s in listed_again["items"])

    # Encrypted into a local repository: only the identity reads it back.
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "age.txt"
    key.write_text(f"{identity}\n")
    local = tmp_path / "repo"
    enc = _ok(dr("etcd", "snapshots", "pull", "--to", str(local), "--dir", DIR, "--encrypt-to",
                 str(identity.to_public()), "-o", "json", cluster=c, extra_env=NO_CONFIG, subprocess=True))
    assert len(enc["pulled"]) == 2 and all(p["encryption"]["format"] == "age" for p in enc["pulled"])
    for p in enc["pulled"]:
        assert dr("backups", "verify", p["id"], "--repo", str(local), cluster=c, extra_env=NO_CONFIG).returncode == 1
        _ok(dr("backups", "verify", p["id"], "--repo", str(local), "--identity", str(key), cluster=c,
               extra_env=NO_CONFIG))

    # While another run holds the repository's pull lease, a pull refuses and changes nothing.
    repo = open_repository(url, {**os.environ, **s3env, "KUBECTL_DR_CONFIG": os.devnull})
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": pull_lease_name(repo), "namespace": "kube-system"},
             "spec": {"holderIdentity": "elsewhere/4242/20261201T000000Z-abcdef", "leaseDurationSeconds": 60,
                      "acquireTime": now, "renewTime": now}}
    c.kubectl("apply", "-f", "-", input=json.dumps(lease))
    try:
        held = dr("etcd", "snapshots", "pull", "--to", url, "--dir", DIR, "--yes", extra_env={**NO_CONFIG, **s3env},
                  cluster=c, subprocess=True)
        assert held.returncode == 1 and "run 20261201T000000Z-abcdef on host elsewhere" in held.stderr, held.stderr
    finally:
        c.kubectl("delete", "lease", "-n", "kube-system", pull_lease_name(repo))

    # A snapshot whose file changed on the node after its run checked it is refused; nothing is kept.
    good = _snapshot_dir(c) / snaps[0]
    bad = _snapshot_dir(c) / f"{NAME}-20000101T000000Z.db"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    # Its sidecar records what the run saw (a digest the repository does not have yet).
    sidecar = dict(on_node[_sha256(good)], name=bad.stem, file=bad.name, takenAt="2000-01-01T00:00:00Z",
                   sha256=hashlib.sha256(b"what the run hashed").hexdigest())
    (_snapshot_dir(c) / f"{bad.stem}.json").write_text(json.dumps(sidecar))
    # And a file without a sidecar (a run that never finished) is shown as incomplete, never pulled.
    (_snapshot_dir(c) / f"{NAME}-20000101T000001Z.db").write_bytes(bytes(data))
    try:
        shown = _ok(dr("etcd", "snapshots", "list", "--dir", DIR, "-o", "json", cluster=c, extra_env=NO_CONFIG,
                       subprocess=True))
        incomplete = [s for s in shown["items"] if not s["complete"]]
        assert [s["file"] for s in incomplete] == [f"{NAME}-20000101T000001Z.db"], incomplete
        failed = dr("etcd", "snapshots", "pull", "--to", url, "--dir", DIR, "--yes", extra_env={**NO_CONFIG, **s3env},
                    cluster=c, subprocess=True)
        assert failed.returncode == 1 and "changed since its run recorded it" in failed.stderr, failed.stderr
        after = _ok(dr("backups", "list", "--repo", url, "-o", "json", extra_env={**NO_CONFIG, **s3env}, cluster=c))
        assert len(after["items"]) == 2
    finally:
        for leftover in (bad, bad.with_suffix(".json"), _snapshot_dir(c) / f"{NAME}-20000101T000001Z.db"):
            leftover.unlink(missing_ok=True)
    assert c.kubectl("get", "pods", "-A", "-l", MANAGED, "-o", "name").stdout.strip() == ""


def test_node_snapshots_pulled_into_a_restic_repository(fast: Cluster, tmp_path: Path) -> None:
    """`pull --to restic:REPO`: each node snapshot a one-file restic snapshot with the time the node took it,
    restored by the real restic to the node's very bytes; a second pull finds them by their sha256 tags."""
    from tests.restic.oracle import PASSWORD, restic, restic_json

    c, name, directory = fast, "dr-test-restic", "/var/lib/kubectl-dr/test-restic-snapshots"
    env = {"RESTIC_PASSWORD": PASSWORD, "TZ": "UTC"}
    repo = tmp_path / "restic"
    _ok(dr("schedule", "create", "etcd-snapshot", "--name", name, "--cron", "* * * * *", "--keep", "2",
           "--dir", directory, cluster=c, extra_env=NO_CONFIG, subprocess=True))
    node_dir = c.layout.host_path(c.control_planes[0], directory)
    try:
        eventually(lambda: len(list(node_dir.glob("*.json"))) >= 1, 120, "a snapshot of the schedule on the node")
    finally:
        _ok(dr("schedule", "delete", name, "--yes", cluster=c, extra_env=NO_CONFIG, subprocess=True))
    eventually(lambda: not c.kubectl("get", "pods", "-n", "kube-system", "-l", f"kubectl-dr.io/schedule={name}",
                                      "-o", "name").stdout.strip(), 60, "the schedule's pods to go")
    sidecars = {json.loads(p.read_text())["sha256"]: json.loads(p.read_text()) for p in node_dir.glob("*.json")}

    dry = dr("etcd", "snapshots", "pull", "--to", f"restic:{repo}", "--dir", directory, "--dry-run=client",
             extra_env={**NO_CONFIG, **env}, cluster=c, subprocess=True)
    assert dry.returncode == 0 and "(dry run) would read" in dry.stdout and not repo.exists(), dry.stderr
    pulled = _ok(dr("etcd", "snapshots", "pull", "--to", f"restic:{repo}", "--dir", directory, "--yes", "-o",
                    "json", extra_env={**NO_CONFIG, **env}, cluster=c, subprocess=True))
    assert len(pulled["pulled"]) == len(sidecars) and pulled["repository"] == f"restic:{repo}"
    restic(repo, "check", "--read-data")
    snaps = {s["id"]: s for s in restic_json(repo, "snapshots")}
    uid = c.kubectl("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}").stdout
    for item in pulled["pulled"]:
        snap = snaps[item["id"]]
        sidecar = sidecars[item["sha256"]]
        assert snap["hostname"] == c.control_planes[0] and snap["paths"] == ["/snapshot.db"]
        assert {f"cluster={uid}", "kind=etcd-snapshot", f"sha256={item['sha256']}"} <= set(snap["tags"])
        assert snap["time"].startswith(sidecar["takenAt"][:-1])  # the time the node took it
        out = tmp_path / item["id"]
        restic(repo, "restore", item["id"], "--target", str(out))
        assert _sha256(out / "snapshot.db") == item["sha256"] == _sha256(node_dir / sidecar["file"])
    again = _ok(dr("etcd", "snapshots", "pull", "--to", f"restic:{repo}", "--dir", directory, "-o", "json",
                   extra_env={**NO_CONFIG, **env}, cluster=c, subprocess=True))
    assert again["pulled"] == [] and len(again["alreadyInRepository"]) == len(sidecars)

    # The same pull as `schedule print` writes it for cron, run by sh without the user's environment: the
    # password from a file the entry names, into a repository that exists (the entry never creates one).
    entry_repo = tmp_path / "restic-entry"
    restic(entry_repo, "init")
    pw = tmp_path / "restic-pw"
    pw.write_text(PASSWORD)
    pw.chmod(0o600)
    printed = _ok(dr("schedule", "print", "--crontab", "--what", "etcd-pull", "--repo", f"restic:{entry_repo}",
                     "--password-file", str(pw), "-o", "json", cluster=c,
                     extra_env={**NO_CONFIG, "XDG_STATE_HOME": str(tmp_path / "state")}))
    line = next(x for x in printed["crontab"].splitlines() if x and not x.startswith("#")).split(" ", 5)[5]
    assert PASSWORD not in printed["crontab"] and " --yes" not in line
    line = line.replace(" etcd snapshots pull ", f" etcd snapshots pull --dir {directory} ")
    subprocess.run(["sh", "-c", line], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=300, check=True)
    log = (tmp_path / "state" / "kubectl-dr" / "kubectl-dr-etcd-pull.log").read_text()
    assert log.rstrip().endswith("exit 0"), log
    restic(entry_repo, "check", "--read-data")
    entry_snaps = restic_json(entry_repo, "snapshots")
    assert sorted(t.split("=", 1)[1] for s in entry_snaps for t in s["tags"] if t.startswith("sha256=")) == sorted(
        sidecars)
    assert c.kubectl("get", "pods", "-A", "-l", MANAGED, "-o", "name").stdout.strip() == ""


def test_schedule_refusals(fast: Cluster) -> None:
    c = fast
    bad_cron = dr("schedule", "create", "etcd-snapshot", "--name", "dr-bad", "--cron", "0 25 * * *", cluster=c,
                  extra_env=NO_CONFIG)
    assert bad_cron.returncode == 2 and "hour field '25' is out of range" in bad_cron.stderr
    keep0 = dr("schedule", "create", "etcd-snapshot", "--name", "dr-bad", "--cron", "@daily", "--keep", "0", cluster=c,
               extra_env=NO_CONFIG)
    assert keep0.returncode == 2 and "--keep must be at least 1" in keep0.stderr
    bad_zone = dr("schedule", "create", "etcd-snapshot", "--name", "dr-bad", "--cron", "@daily",
                  "--time-zone", "Mars/Olympus", cluster=c, extra_env=NO_CONFIG)
    assert bad_zone.returncode == 2 and "unknown time zone" in bad_zone.stderr
    bad_dir = dr("schedule", "create", "etcd-snapshot", "--name", "dr-bad", "--cron", "@daily",
                 "--dir", "/var/lib/etcd/snaps", cluster=c, extra_env=NO_CONFIG)
    assert bad_dir.returncode == 2 and "control plane owns" in bad_dir.stderr
    bad_node = dr("schedule", "create", "etcd-snapshot", "--name", "dr-bad", "--cron", "@daily",
                  "--node", c.workers[0], cluster=c, extra_env=NO_CONFIG)
    assert bad_node.returncode == 1 and "runs no etcd static pod" in bad_node.stderr
    assert c.kubectl("get", "cronjob", "-n", "kube-system", "dr-bad", check=False).returncode != 0

    # A CronJob that is not ours is neither replaced nor deleted.
    container = {"name": "x", "image": "busybox", "command": ["true"]}
    foreign = {"apiVersion": "batch/v1", "kind": "CronJob",
               "metadata": {"name": "not-ours", "namespace": "kube-system"},
               "spec": {"schedule": "@yearly", "suspend": True, "jobTemplate": {"spec": {"template": {"spec": {
                   "restartPolicy": "Never", "containers": [container]}}}}}}
    c.kubectl("apply", "-f", "-", input=json.dumps(foreign))
    try:
        refused = dr("schedule", "delete", "not-ours", cluster=c, extra_env=NO_CONFIG)
        assert refused.returncode == 1 and "is not a kubectl dr schedule" in refused.stderr
        refused = dr("schedule", "create", "etcd-snapshot", "--name", "not-ours", "--cron", "@daily", "--replace",
                     cluster=c, extra_env=NO_CONFIG)
        assert refused.returncode == 1 and "is not a kubectl dr schedule" in refused.stderr
        assert c.kubectl("get", "cronjob", "-n", "kube-system", "not-ours").returncode == 0
    finally:
        c.kubectl("delete", "cronjob", "-n", "kube-system", "not-ours", check=False)
    # Reader pods that cannot start on any node: the cluster's reason, and no pod left behind.
    c.layout.host_path(c.control_planes[0], DIR).mkdir(parents=True, exist_ok=True)
    unpullable = dr("etcd", "snapshots", "list", "--dir", DIR, "--helper-image", "registry.invalid/none:1", cluster=c,
                    extra_env=NO_CONFIG, subprocess=True)
    assert unpullable.returncode == 1 and "cannot be pulled" in unpullable.stderr, unpullable.stderr
    assert c.kubectl("get", "pods", "-A", "-l", MANAGED, "-o", "name").stdout.strip() == ""
    missing = dr("schedule", "delete", "no-such-schedule", cluster=c, extra_env=NO_CONFIG)
    assert missing.returncode == 1 and 'schedule "no-such-schedule" not found' in missing.stderr

    # Twice the same name: refused, then replaced with --replace; a server dry run persists nothing.
    _ok(dr("schedule", "create", "etcd-snapshot", "--name", "dr-twice", "--cron", "@daily", cluster=c,
           extra_env=NO_CONFIG, subprocess=True))
    try:
        twice = dr("schedule", "create", "etcd-snapshot", "--name", "dr-twice", "--cron", "@daily", cluster=c,
                   extra_env=NO_CONFIG)
        assert twice.returncode == 1 and "already exists" in twice.stderr and "--replace" in twice.stderr
        _ok(dr("schedule", "create", "etcd-snapshot", "--name", "dr-twice", "--cron", "0 3 * * *", "--keep", "9",
               "--time-zone", "Europe/Berlin", "--replace", cluster=c, extra_env=NO_CONFIG, subprocess=True))
        obj = json.loads(c.kubectl("get", "cronjob", "-n", "kube-system", "dr-twice", "-o", "json").stdout)
        assert obj["spec"]["schedule"] == "0 3 * * *" and obj["spec"]["timeZone"] == "Europe/Berlin"
        assert obj["metadata"]["annotations"]["kubectl-dr.io/keep"] == "9"
        dry = dr("schedule", "delete", "dr-twice", "--dry-run=server", cluster=c, extra_env=NO_CONFIG)
        assert dry.returncode == 0 and dry.stdout == "cronjob.batch/dr-twice would be deleted (server dry run)\n"
        dry = dr("schedule", "delete", "dr-twice", "--dry-run=client", cluster=c, extra_env=NO_CONFIG)
        assert dry.returncode == 0 and dry.stdout == "cronjob.batch/dr-twice would be deleted (dry run)\n"
        dry = dr("schedule", "create", "etcd-snapshot", "--name", "dr-twice", "--cron", "@daily", "--replace",
                 "--dry-run=client", cluster=c, extra_env=NO_CONFIG)
        assert dry.returncode == 0 and dry.stdout == "cronjob.batch/dr-twice would be replaced (dry run)\n"
        assert "would be replaced (dry run): etcd snapshots" in dry.stderr
        assert c.kubectl("get", "cronjob", "-n", "kube-system", "dr-twice").returncode == 0
        # Without a terminal and without --yes the delete is refused in the words of every destructive step.
        unasked = dr("schedule", "delete", "dr-twice", cluster=c, extra_env=NO_CONFIG)
        assert unasked.returncode == 1 and unasked.stdout == "", unasked.stdout
        assert unasked.stderr.startswith('error: refusing to delete schedule "dr-twice" in namespace kube-system '
                                         "(the CronJob, its Jobs and their pods) without confirmation: "
                                         "there is no terminal to ask on and --yes was not given\n"), unasked.stderr
        assert c.kubectl("get", "cronjob", "-n", "kube-system", "dr-twice").returncode == 0
    finally:
        _ok(dr("schedule", "delete", "dr-twice", "--yes", cluster=c, extra_env=NO_CONFIG, subprocess=True))


def test_three_members_snapshots_only_on_the_chosen_etcd_nodes(cluster_factory: ClusterFactory,
                                                               tmp_path: Path) -> None:
    """With three etcd members, a schedule restricted to two nodes snapshots each run's own node's member there
    (never the third, never a worker), keeps --keep per node, and a pull copies each with its member."""
    c = cluster_factory(control_planes=3, workers=1, cron_period_seconds=PERIOD)
    chosen = c.control_planes[1:]
    name = "dr-test-two-nodes"
    _ok(dr("schedule", "create", "etcd-snapshot", "--name", name, "--cron", "* * * * *", "--keep", "1",
           "--dir", DIR, *[a for n in chosen for a in ("--node", n)], cluster=c, extra_env=NO_CONFIG, subprocess=True))
    seen: set[str] = set()

    def runs() -> bool:
        jobs = json.loads(c.kubectl("get", "jobs", "-n", "kube-system", "-l", f"kubectl-dr.io/schedule={name}",
                                    "-o", "json").stdout)["items"]
        seen.update(j["metadata"]["name"] for j in jobs if _succeeded(j))
        return len(seen) >= 3
    try:
        eventually(runs, 120, "three successful runs")
    finally:
        _ok(dr("schedule", "delete", name, "--yes", cluster=c, extra_env=NO_CONFIG, subprocess=True))
    eventually(lambda: not c.kubectl("get", "pods", "-n", "kube-system", "-l", f"kubectl-dr.io/schedule={name}",
                                      "-o", "name").stdout.strip(), 60, "the schedule's pods to go")
    members = {m.name for m in c.members}  # kubeadm names each member after its node
    found = _ok(dr("etcd", "snapshots", "list", "--dir", DIR, "-o", "json", cluster=c, extra_env=NO_CONFIG,
                   subprocess=True))["items"]
    mine = [s for s in found if s["schedule"] == name]
    assert mine and all(s["complete"] for s in mine)
    assert {s["node"] for s in mine} <= set(chosen)
    for node in [c.control_planes[0], *c.workers]:
        d = c.layout.host_path(node, DIR)
        assert not d.exists() or not [p for p in d.iterdir() if p.name.startswith(name)]
    for node in chosen:
        assert len([s for s in mine if s["node"] == node]) <= 1  # --keep counts per node
    ids = {s["node"]: s["memberID"] for s in mine}
    assert len(set(ids.values())) == len(ids)  # each node's own member
    pulled = _ok(dr("etcd", "snapshots", "pull", "--to", str(tmp_path / "repo"), "--dir", DIR, "-o", "json", cluster=c,
                    extra_env=NO_CONFIG, subprocess=True))
    assert len(pulled["pulled"]) == len(mine)
    for p in pulled["pulled"]:
        assert p["source"]["member"] == p["node"] and p["node"] in members
        assert p["details"]["member"]["id"] == ids[p["node"]]


def test_print_entries_from_the_cli(tmp_path: Path) -> None:
    """`schedule print` as a user runs it: absolute paths, the running executable, valid cron lines, units that
    systemd-analyze accepts (where installed), and usage errors."""
    kubeconfig = tmp_path / "kubeconfig"
    env = clean_env({"KUBECONFIG": str(kubeconfig), "KUBECTL_DR_CONFIG": "/dev/null", "AWS_PROFILE": "dr",
                     "AWS_SECRET_ACCESS_KEY": "never-printed", "XDG_STATE_HOME": str(tmp_path / "state")})
    text = run([executable(), "schedule", "print", "--crontab", "--what", "etcd-pull", "--repo", "rel/repo",
                "--cron", "15 */12 * * *"], env=env, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "never-printed" not in text.stdout and "AWS_PROFILE=dr" in text.stdout
    line = next(x for x in text.stdout.splitlines() if x and not x.startswith("#"))
    assert line.startswith("15 */12 * * * ")
    assert f"{executable()} --kubeconfig {kubeconfig} etcd snapshots pull --repo {tmp_path}/rel/repo --yes" in line
    assert f"flock -n {tmp_path}/state/kubectl-dr/kubectl-dr-etcd-pull.lock" in line
    units = run([executable(), "schedule", "print", "--systemd", "--system", "--what", "pvc-backup", "--pvc",
                 "shop/data-db-0", "--cron", "0 3 * * 1-5", "--time-zone", "Europe/Berlin", "-o", "json"], env=env)
    files = json.loads(units.stdout)["files"]
    timer = files["/etc/systemd/system/kubectl-dr-pvc-backup-shop-data-db-0.timer"]
    assert "OnCalendar=Mon,Tue,Wed,Thu,Fri *-*-* 03:00:00 Europe/Berlin" in timer
    if shutil.which("systemd-analyze"):
        for path, body in files.items():
            (tmp_path / Path(path).name).write_text(body)
        checked = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / Path(p).name) for p in files)],
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
    usage = dr("schedule", "print", "--crontab", "--what", "copy", env=env)
    assert usage.returncode == 2 and "--what copy needs --to REPO" in usage.stderr
    both = dr("schedule", "print", "--crontab", "--systemd", env=env)
    assert both.returncode == 2 and "give one of --crontab or --systemd" in both.stderr


def test_print_finds_the_repository_as_every_command_does(tmp_path: Path) -> None:
    """Without --repo the entries name the repository the user's commands use now: KUBECTL_DR_REPO, then the
    config file, then the default; cron and systemd have neither the variable nor, perhaps, the same home."""
    config = tmp_path / "config.yaml"
    config.write_text(f"repository: {tmp_path}/from-config\n")
    base = {"KUBECONFIG": str(tmp_path / "kubeconfig"), "KUBECTL_DR_CONFIG": str(config),
            "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    args = [executable(), "schedule", "print", "--crontab", "--what", "prune", "--keep-last", "3"]

    def repo_of(env: dict[str, str], *extra: str) -> str:
        printed = run([*args, *extra], env=clean_env(env), cwd=tmp_path)
        assert printed.returncode == 0, printed.stderr
        line = next(x for x in printed.stdout.splitlines() if x and not x.startswith("#"))
        assert " backups prune --keep-last 3 --repo " in line, line
        return line.split(" --repo ", 1)[1].split()[0]

    assert repo_of({**base, "KUBECTL_DR_REPO": "s3://dr-backups/prod"}) == "s3://dr-backups/prod"
    assert repo_of({**base, "KUBECTL_DR_REPO": "s3://dr-backups/prod"}, "--repo", "here") == f"{tmp_path}/here"
    assert repo_of(base) == f"{tmp_path}/from-config"
    assert repo_of({**base, "KUBECTL_DR_CONFIG": "/dev/null"}) == f"{tmp_path}/xdg/kubectl-dr/backups"


@pytest.mark.parametrize(("directory", "reason"), [
    ("/", "is /, a system directory"),
    ("/etc/kubernetes/pki/snaps", "is inside /etc/kubernetes, which the control plane owns"),
    ("/usr/local/snapshots", "is inside /usr, a system directory"),
    ("/var/lib/kubelet/pods", "is inside /var/lib/kubelet, which the kubelet owns"),
    ("/var/lib/kubectl-dr/restore", "is /var/lib/kubectl-dr/restore, kubectl dr's own"),
    ("snapshots", "is not an absolute path"),
    ("/var/lib/kubectl-dr/snapshots/../../etcd", "contains '..'"),
])
def test_create_refuses_a_dir_that_is_not_its_own(tmp_path: Path, directory: str, reason: str) -> None:
    """Refused as a usage error naming why, before the cluster is asked anything (its kubeconfig is absent)."""
    env = clean_env({"KUBECONFIG": str(tmp_path / "absent")})
    result = run([executable(), "schedule", "create", "etcd-snapshot", "--cron", "@daily", "--dir", directory],
                 env=env)
    assert result.returncode == 2, result.stderr
    assert f"--dir {directory!r} {reason}" in result.stderr, result.stderr
    assert "a directory of their own on the node, e.g. /var/lib/kubectl-dr/snapshots" in result.stderr


def test_client_dry_run_prints_the_cronjob_of_an_existing_schedule(fast: Cluster) -> None:
    c = fast
    _ok(dr("schedule", "create", "etcd-snapshot", "--name", "dr-exists", "--cron", "@daily", cluster=c,
           extra_env=NO_CONFIG, subprocess=True))
    try:
        # As kubectl's client dry run does: the object is printed whatever the server holds, with a note.
        dry = dr("schedule", "create", "etcd-snapshot", "--name", "dr-exists", "--cron", "@hourly",
                 "--dry-run=client", "-o", "yaml", cluster=c, extra_env=NO_CONFIG)
        assert dry.returncode == 0, dry.stderr
        assert "kind: CronJob" in dry.stdout and "name: dr-exists" in dry.stdout and "@hourly" in dry.stdout
        assert 'schedule "dr-exists" already exists' in dry.stderr and "--replace" in dry.stderr
        obj = json.loads(c.kubectl("get", "cronjob", "-n", "kube-system", "dr-exists", "-o", "json").stdout)
        assert obj["spec"]["schedule"] == "@daily"
    finally:
        _ok(dr("schedule", "delete", "dr-exists", "--yes", cluster=c, extra_env=NO_CONFIG, subprocess=True))


def test_snapshots_list_before_any_schedule_ran_is_the_normal_first_state(fast: Cluster) -> None:
    c = fast
    result = dr("etcd", "snapshots", "list", "--dir", "/var/lib/kubectl-dr/never-written", cluster=c,
                extra_env=NO_CONFIG, subprocess=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    # No kubelet event in its raw words: the directory is simply not there yet.
    assert "FailedMount" not in result.stderr and "is not a directory" not in result.stderr, result.stderr
    node = c.control_planes[0]
    assert (f"no schedule has written snapshots on node {node} yet (no directory "
            "/var/lib/kubectl-dr/never-written there)") in result.stderr, result.stderr
    assert "warning" not in result.stderr and "error" not in result.stderr
    assert c.kubectl("get", "pods", "-A", "-l", MANAGED, "-o", "name").stdout.strip() == ""
