"""A repository that cannot take the backup: read-only, or without room for what the listing says is
coming. Each is refused with what to do, the app keeps running, and nothing is left: no pod, no lease, no
partial backup. The small file systems are real tmpfs mounts in a mount namespace of their own (we run as
root, as CI does), so the command meets a real EROFS and a real statvfs."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import clean_env, executable
from tests.datasets import make_claim, managed_pods, new_namespace, volume_dir
from tests.e2e.test_pvc_consumers import deployment, running_pods
from tests.polling import eventually


def dr_on_tmpfs(cluster: Any, mount: Path, options: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run kubectl-dr with a tmpfs mounted at `mount` (mount OPTIONS) that only this command sees."""
    script = (f"mount -t tmpfs -o {shlex.quote(options)} kubectl-dr-test {shlex.quote(str(mount))} && "
              f"exec {shlex.quote(executable())} " + " ".join(shlex.quote(a) for a in args))
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          env=clean_env({"KUBECONFIG": str(cluster.kubeconfig)}), capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def app(cluster: Any) -> str:
    ns = new_namespace(cluster, "limits")
    make_claim(cluster, ns)
    cluster.kubectl("apply", "-f", "-", input=deployment(ns, {}))
    eventually(lambda: len(running_pods(cluster, ns, "app=app")) == 1, what="app running")
    vol = volume_dir(cluster, ns)
    (vol / "big").write_bytes(os.urandom(6 << 20))
    os.chown(vol / "big", 1000, 1000)
    return ns


def _nothing_left(cluster: Any, ns: str) -> None:
    assert managed_pods(cluster, ns) == []
    assert cluster.kubectl("get", "leases", "-n", ns, "-o", "name").stdout.strip() == ""
    assert len(running_pods(cluster, ns, "app=app")) == 1


def test_read_only_repository_is_refused_before_the_cluster_is_touched(cluster: Any, app: str,
                                                                       tmp_path: Path) -> None:
    result = dr_on_tmpfs(cluster, tmp_path, "ro,size=64m", "pvc", "backup", "data", "-n", app,
                         "--repo", str(tmp_path / "repo"))
    assert result.returncode == 1, result.stderr
    assert "read-only" in result.stderr and "starting rescue pod" not in result.stderr, result.stderr
    _nothing_left(cluster, app)


def test_repository_without_room_is_refused_after_the_listing(cluster: Any, app: str, tmp_path: Path) -> None:
    result = dr_on_tmpfs(cluster, tmp_path, "size=4m", "pvc", "backup", "data", "-n", app,
                         "--repo", str(tmp_path / "repo"))
    assert result.returncode == 1, result.stderr
    assert "not enough space for this backup" in result.stderr and "needed" in result.stderr, result.stderr
    _nothing_left(cluster, app)
    # The tmpfs was this command's alone: nothing of it (or in it) is left here.
    assert not (tmp_path / "repo").exists()
