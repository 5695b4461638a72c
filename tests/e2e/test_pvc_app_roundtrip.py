"""Round trips of volumes written by the app itself, as its own non-root uid, as real apps write them.

A Deployment running as OpenShift's uid 1000680000 and a StatefulSet running as uid 1000 with a
group past 2^21 write their volume from inside their pods: files, symlinks they own (node_modules/.bin),
hard links, a sparse file, a mode-000 file, a fifo, mtimes before 1970 and after 2038, names with
spaces and newlines. mkfs's lost+found (root, 0700) is on the volume. The backup is taken while the app
runs; then the app changes kinds (a file becomes a directory, a directory a file) and the volume is
restored with --clean, into the same claim and into a new empty one: exactly, checked on the disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests import tables
from tests.cli_runner import dr
from tests.datasets import differences, make_claim, managed_pods, new_namespace, snapshot, volume_dir
from tests.e2e.test_pvc_consumers import replicas_and_records, running_pods
from tests.polling import eventually

OPENSHIFT = 1_000_680_000
# What the app writes, as itself, with the rescue image's own busybox.
WRITER = r"""
set -e
cd /data
if [ ! -e done ]; then
  mkdir -p node_modules/tool node_modules/.bin 'dir with space' deep/a/b
  printf '#!/bin/sh\necho tool\n' > node_modules/tool/bin.js
  chmod 755 node_modules/tool/bin.js
  ln -s ../tool/bin.js node_modules/.bin/tool
  ln -s /nonexistent/target dangling
  ln -s node_modules dirlink
  seq 1 20000 > data.db
  ln data.db data.db.hardlink
  printf 'leaf' > deep/a/b/leaf
  truncate -s 8388608 sparse
  printf 'in the middle' | dd of=sparse bs=4096 seek=700 conv=notrunc 2>/dev/null
  printf 'secret' > locked
  chmod 000 locked
  mkfifo pipe
  printf 'x' > 'dir with space/name
with newline'
  printf 'old' > old
  touch -d @-100000 old
  printf 'future' > future
  touch -d @4102444800 future
  touch -h -d @-5000 node_modules/.bin/tool
  touch -d @1000000000 'dir with space'
  touch done
fi
exec sleep 3600
"""


PROGRESS = {"KUBECTL_DR_PROGRESS_INTERVAL": "1"}


def pod_spec(uid: int, gid: int, fs_group: int, claim: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1,
        "securityContext": {"runAsUser": uid, "runAsGroup": gid, "fsGroup": fs_group,
                            "fsGroupChangePolicy": "OnRootMismatch"},
        "containers": [{"name": "app", "image": "busybox", "command": ["sh", "-c", WRITER],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
    }
    if claim:
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return spec


def start_app(cluster: Any, ns: str, kind: str) -> tuple[str, str, str]:
    """(workload, claim, app label) of a running app that has written its volume."""
    if kind == "Deployment":
        make_claim(cluster, ns)
        lost_and_found(cluster, ns, "data")
        body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                         "template": {"metadata": {"labels": {"app": "app"}},
                                      "spec": pod_spec(OPENSHIFT, OPENSHIFT, OPENSHIFT, "data")}}}
        workload, claim = "deployment/app", "data"
    else:
        body = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "app", "namespace": ns},
                "spec": {"replicas": 1, "serviceName": "app", "selector": {"matchLabels": {"app": "app"}},
                         "template": {"metadata": {"labels": {"app": "app"}},
                                      "spec": pod_spec(1000, 3_000_000, 3_000_000, None)},
                         "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                             "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}
        workload, claim = "statefulset/app", "data-app-0"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    eventually(lambda: cluster.kubectl("get", "pvc", "-n", ns, claim, "-o", "jsonpath={.status.phase}",
                                     check=False).stdout == "Bound", what="claim bound")
    if kind != "Deployment":
        lost_and_found(cluster, ns, claim)
    eventually(lambda: (volume_dir(cluster, ns, claim) / "done").exists(), timeout=120, what="the app wrote its data")
    return workload, claim, "app=app"


def lost_and_found(cluster: Any, ns: str, claim: str) -> None:
    """What mkfs leaves on a new ext4 volume: root's lost+found, mode 0700."""
    path = volume_dir(cluster, ns, claim) / "lost+found"
    path.mkdir(mode=0o700, exist_ok=True)
    (path / "#12345").write_bytes(b"fsck found me")


def app_exec(cluster: Any, ns: str, script: str) -> None:
    pod = running_pods(cluster, ns, "app=app")[0]
    cluster.kubectl("exec", "-n", ns, pod, "--", "sh", "-c", script)


def without_lost_and_found(tree: dict[bytes, Any]) -> dict[bytes, Any]:
    return {k: v for k, v in tree.items() if not k.startswith(b"lost+found")}


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_a_volume_the_app_wrote_comes_back_exactly(cluster: Any, tmp_path: Path, kind: str) -> None:
    ns = new_namespace(cluster, "app")
    workload, claim, _ = start_app(cluster, ns, kind)
    vol = volume_dir(cluster, ns, claim)
    before = snapshot(vol)
    uid = OPENSHIFT if kind == "Deployment" else 1000
    assert before[b"node_modules/.bin/tool"].uid == uid and before[b"old"].mtime == -100_000
    assert before[b"locked"].mode == 0 and os.lstat(vol / "sparse").st_blocks * 512 < 1 << 20
    repo = tmp_path / "repo"

    backup = dr("pvc", "backup", claim, "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster,
                extra_env=PROGRESS, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    assert "skipping 'lost+found': lost+found at the volume root" in backup.stderr
    made = json.loads(backup.stdout)
    assert made["details"]["skipped"] == [{"path": "lost+found",
                                           "why": "lost+found at the volume root (mkfs and fsck make it again)"}]
    assert made["details"]["changedDuringBackup"] == []
    assert made["details"]["archive"]["sparseFiles"] == 1 and made["details"]["archive"]["hardLinks"] == 1
    assert snapshot(vol) == before

    # The app changes kinds and contents: a file becomes a full directory, a directory a file.
    app_exec(cluster, ns, "cd /data && rm data.db && mkdir -p data.db/wal && echo x > data.db/wal/1 && "
                          "rm -r deep && echo flat > deep && echo extra > extra && ln -sfn elsewhere dirlink && "
                          "chmod 600 node_modules/tool/bin.js && echo changed > future")
    diff = dr("pvc", "diff", claim, "-n", ns, "--repo", str(repo), "--from", "latest", "-o", "json", cluster=cluster,
              extra_env=PROGRESS, subprocess=True)
    assert diff.returncode == 0, diff.stderr
    found = json.loads(diff.stdout)["differences"]
    assert [d["path"] for d in found if d["change"] == "removed"] == ["extra"]
    assert {"path": "deep/a", "change": "added", "kind": "dir"} in found
    changed = {d["path"] for d in found if d["change"] == "changed"}
    assert {"data.db", "deep", "node_modules/tool/bin.js", "future", "dirlink"} <= changed

    refused = dr("pvc", "restore", claim, "-n", ns, "--repo", str(repo), "--from", "latest", "--yes", cluster=cluster,
                 extra_env=PROGRESS, subprocess=True)
    assert refused.returncode == 1
    assert "'data.db': a dir in the volume, a file in the backup" in refused.stderr
    assert "Nothing was written" in refused.stderr and "--clean" in refused.stderr
    assert replicas_and_records(cluster, ns, workload) == (1, {})

    restore = dr("pvc", "restore", claim, "-n", ns, "--repo", str(repo), "--from", "latest", "--yes",
                 "--clean", "-o", "json", cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert restore.returncode == 0, restore.stderr
    assert sorted(json.loads(restore.stdout)["replacedKinds"]) == ["data.db", "deep"]
    assert differences(before, snapshot(vol)) == []
    assert replicas_and_records(cluster, ns, workload) == (1, {})
    assert managed_pods(cluster, ns) == []

    # Into a new, empty claim: the disaster case.
    make_claim(cluster, ns, "fresh")
    fresh = dr("pvc", "restore", "fresh", "-n", ns, "--repo", str(repo), "--from", "latest",
               "--from-claim", f"{ns}/{claim}", "--yes", cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert fresh.returncode == 0, fresh.stderr
    assert differences(without_lost_and_found(before), snapshot(volume_dir(cluster, ns, "fresh"))) == []


def test_restricted_namespace_names_what_it_cannot_read(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "rapp", {"pod-security.kubernetes.io/enforce": "restricted"})
    make_claim(cluster, ns)
    lost_and_found(cluster, ns, "data")
    spec = pod_spec(1000, 1000, 1000, "data")
    spec["securityContext"].update({"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}})
    spec["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False,
                                                "capabilities": {"drop": ["ALL"]}}
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                     "template": {"metadata": {"labels": {"app": "app"}}, "spec": spec}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    vol = volume_dir(cluster, ns)
    eventually(lambda: (vol / "done").exists(), timeout=120, what="the app wrote its data")
    # A directory the app closed to itself too (busybox tar's words for it once failed --skip-unreadable).
    (vol / "closed").mkdir()
    (vol / "closed" / "inside").write_text("x")
    for path in (vol / "closed" / "inside", vol / "closed"):
        os.chown(path, 1000, 1000)
    (vol / "closed").chmod(0)
    repo = tmp_path / "repo"

    refused = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), cluster=cluster, extra_env=PROGRESS,
                 subprocess=True)
    assert refused.returncode == 1
    assert "the rescue pod (uid 1000) cannot read 2 entries" in refused.stderr, refused.stderr
    assert "'locked': unreadable file for uid 1000 (owner 1000:1000, mode 0000)" in refused.stderr
    assert "--skip-unreadable" in refused.stderr and "enforce=baseline" in refused.stderr
    assert "lost+found" in refused.stderr  # said as skipped, not as a failure
    assert not repo.exists() or not [p for p in repo.iterdir() if not p.name.startswith(".")]
    assert managed_pods(cluster, ns) == []

    # The result is a table like every command's; it and `backups list` say that an entry was left out
    # (lost+found is left out by design and not counted).
    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "--skip-unreadable", cluster=cluster,
                extra_env=PROGRESS, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    [row] = tables.rows(backup.stdout)
    assert list(row) == ["ID", "NAME", "ENTRIES", "SKIPPED", "SIZE", "SHA256"]
    assert row["NAME"] == f"{ns}/data" and row["SKIPPED"] == "2", backup.stdout
    assert "note: 2 entries could not be read and were left out (--skip-unreadable)" in backup.stderr
    backup_id = row["ID"]
    shown = json.loads(dr("backups", "show", backup_id, "--repo", str(repo), "-o", "json", cluster=cluster,
                          extra_env=PROGRESS).stdout)
    skipped = shown["details"]["skipped"]
    assert sorted(s["path"] for s in skipped) == ["closed", "locked", "lost+found"]
    assert row["SHA256"] == next(p["sha256"] for p in shown["parts"] if p["name"] == "data.tar")[:16]
    listed = json.loads(dr("backups", "list", "--repo", str(repo), "-o", "json", cluster=cluster,
                           extra_env=PROGRESS).stdout)["items"]
    assert [(i["id"], i["skippedUnreadable"]) for i in listed] == [(backup_id, 2)]


def test_gnu_tar_image_keeps_sparse_files_sparse(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "gnu")
    _, claim, _ = start_app(cluster, ns, "Deployment")
    vol = volume_dir(cluster, ns, claim)
    before = snapshot(vol)
    repo = tmp_path / "repo"
    backup = dr("pvc", "backup", claim, "-n", ns, "--repo", str(repo), "--image", "debian:12", "-o", "json",
                cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    archive = json.loads(backup.stdout)["details"]["archive"]
    assert (archive["tar"], archive["gnuSparse"]) == ("gnu", True)
    part = json.loads(backup.stdout)["parts"][0]
    assert part["size"] < 4 << 20, "the 8 MiB sparse file is stored as its data only"

    busybox = dr("pvc", "restore", claim, "-n", ns, "--repo", str(repo), "--from", "latest", "--yes", cluster=cluster,
                 extra_env=PROGRESS, subprocess=True)
    assert busybox.returncode == 1 and "busybox tar cannot extract" in busybox.stderr
    assert "--image debian" in busybox.stderr and replicas_and_records(cluster, ns, "deployment/app") == (1, {})

    (vol / "sparse").write_bytes(b"overwritten")
    restore = dr("pvc", "restore", claim, "-n", ns, "--repo", str(repo), "--from", "latest", "--yes",
                 "--image", "debian:12", "--clean", cluster=cluster, extra_env=PROGRESS, subprocess=True)
    assert restore.returncode == 0, restore.stderr
    assert differences(before, snapshot(vol)) == []
    assert os.lstat(vol / "sparse").st_blocks * 512 < 1 << 20, "still sparse"
