"""Restricted namespaces get a compliant (non-root) rescue pod; v4-only exec works; rescue runs commands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.cli_runner import dr
from tests.datasets import (
    OPENED,
    build_roundtrip,
    differences,
    make_claim,
    managed_pods,
    new_namespace,
    snapshot,
    volume_dir,
    wipe,
)
from tests.e2e.test_pvc_consumers import deployment, replicas_and_records, running_pods
from tests.polling import eventually

RESTRICTED_APP = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000,
                  "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}




def _traversable(path: Path) -> None:
    """Non-root sandboxes must reach their rootfs under the cluster dir; pytest makes its tmp dirs 0700.
    The modes are put back after the test (tests/conftest.py), so no later test meets them opened."""
    for parent in [path, *path.parents]:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        mode = parent.stat().st_mode
        OPENED.append((parent, mode))
        parent.chmod(mode | 0o111)


def test_restricted_namespace(cluster: Any, tmp_path: Path) -> None:
    _traversable(cluster.dir)
    ns = new_namespace(cluster, "psa", {"pod-security.kubernetes.io/enforce": "restricted"})
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, RESTRICTED_APP, RESTRICTED_CONTAINER))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    vol = volume_dir(cluster, ns)
    (vol / "app").mkdir()
    os.chown(vol / "app", 1000, 2000)
    (vol / "app" / "state").write_bytes(b"s" * 50_000)
    os.chown(vol / "app" / "state", 1000, 2000)
    repo = tmp_path / "repo"

    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    assert 'Pod Security "restricted"' in backup.stderr and "uid 1000" in backup.stderr
    used = json.loads(backup.stdout)["details"]["rescuePod"]["securityContext"]
    assert used["root"] is False and used["pod"]["runAsUser"] == 1000

    (vol / "app" / "state").write_bytes(b"damaged")
    restore = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", "--yes",
                 cluster=cluster, subprocess=True)
    assert restore.returncode == 0, restore.stderr
    assert "instead of their archived owners" in restore.stderr  # what a non-root restore costs
    assert (vol / "app" / "state").read_bytes() == b"s" * 50_000
    assert (vol / "app" / "state").stat().st_uid == 1000
    assert replicas_and_records(cluster, ns, "deployment/app") == (1, {})
    assert managed_pods(cluster, ns) == []


def test_v4_only_exec_round_trip(cluster_factory: Any, tmp_path: Path) -> None:
    v4 = cluster_factory(control_planes=1, workers=1, exec_protocols=("v4",))
    ns = new_namespace(v4, "v4")
    make_claim(v4, ns)
    vol = volume_dir(v4, ns)
    build_roundtrip(vol, big_bytes=8 << 20, small_files=100)
    before = snapshot(vol)
    repo = tmp_path / "repo"
    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", cluster=v4, subprocess=True)
    assert backup.returncode == 0, backup.stderr
    assert json.loads(backup.stdout)["details"]["transfer"]["execProtocol"] == "v4.channel.k8s.io"
    wipe(vol)
    restore = dr("pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "latest", "--yes",
                 "-o", "json", cluster=v4, subprocess=True)
    assert restore.returncode == 0, restore.stderr
    assert json.loads(restore.stdout)["execProtocol"] == "v4.channel.k8s.io"
    assert differences(before, snapshot(vol)) == []

    # -i: v4 cannot end a command's stdin, so `cat > f` would wait for ever: refused before the command starts.
    piped = dr("pvc", "rescue", "data", "-n", ns, "-i", "--", "sh", "-c", "cat > /data/piped", input=b"x" * 10,
               cluster=v4, subprocess=True)
    assert piped.returncode == 1 and "exec protocol v5.channel.k8s.io" in piped.stderr, piped.stderr
    assert not (vol / "piped").exists() and managed_pods(v4, ns) == []


def test_rescue_command_exit_code_and_cleanup(cluster: Any) -> None:
    ns = new_namespace(cluster, "rsc")
    make_claim(cluster, ns)
    (volume_dir(cluster, ns) / "hello.txt").write_text("hi")
    result = dr("pvc", "rescue", "data", "-n", ns, "--", "sh", "-c", "ls /data; echo oops >&2; exit 7",
                cluster=cluster, subprocess=True)
    assert result.returncode == 7, result.stderr
    assert "hello.txt" in result.stdout and "oops" in result.stderr
    assert managed_pods(cluster, ns) == []
    no_tty = dr("pvc", "rescue", "data", "-n", ns, cluster=cluster, subprocess=True)
    assert no_tty.returncode == 2 and "needs a terminal" in no_tty.stderr


def test_rescue_passes_stdin_with_i_and_says_when_it_does_not(cluster: Any) -> None:
    """`-i` as kubectl exec's: the command reads our stdin to its end; without a command, stdin is a script for
    sh. Without -i, piped data is not sent, and that is said (it once wrote an empty file without a word)."""
    ns = new_namespace(cluster, "rsi")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    data = b"".join(b"line %d of the app's config\n" % i for i in range(20_000))  # text: the runner sends str
    sent = dr("pvc", "rescue", "data", "-n", ns, "-i", "--", "sh", "-c", "cat > /data/conf; wc -c < /data/conf",
              input=data, cluster=cluster, subprocess=True)
    assert sent.returncode == 0, sent.stderr
    assert (vol / "conf").read_bytes() == data and sent.stdout.split() == [str(len(data))]
    script = dr("pvc", "rescue", "data", "-n", ns, "-i", input=b"ls /data\nexit 3\n", cluster=cluster,
                subprocess=True)
    assert script.returncode == 3 and "conf" in script.stdout, script.stderr
    dropped = dr("pvc", "rescue", "data", "-n", ns, "--", "sh", "-c", "cat > /data/empty", input=b"lost",
                 cluster=cluster, subprocess=True)
    assert dropped.returncode == 0 and "not passed to the command without -i" in dropped.stderr
    assert (vol / "empty").read_bytes() == b""
    assert managed_pods(cluster, ns) == []
