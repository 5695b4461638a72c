"""The node runtime's sandbox semantics, without a cluster: images, namespaces, users, volumes, exec."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.cluster import etcd_versions
from tests.cluster.node import sandbox
from tests.cluster.node.images import ImagePullError, ImageStore
from tests.cluster.node.volumes import set_ownership

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _container(tmp: Path, image: str, argv: list[str], mounts: list[sandbox.Mount],
                     creds: sandbox.Credentials, command: list[str]) -> tuple[int, bytes]:
    """Start a container, run ``command`` in it the way exec does, return (exit code, stdout)."""
    store = ImageStore(tmp / "images")
    img = store.resolve(image)
    pod = await sandbox.PodSandbox.start("pod", False, store.build("busybox"))
    launch = sandbox.ContainerLaunch(name="c", image_rootfs=img.rootfs, rootfs=tmp / "rootfs", argv=argv,
                                     env={"PATH": "/bin:/usr/local/bin"}, workdir="/", mounts=mounts,
                                     creds=creds)
    await sandbox.prepare_rootfs(launch.image_rootfs, launch.rootfs, mounts)
    proc = await sandbox.start_container(launch, pod, stdout=asyncio.subprocess.DEVNULL,
                                         stderr=asyncio.subprocess.DEVNULL)
    try:
        ex = await asyncio.create_subprocess_exec(*sandbox.exec_args(proc, command, tty=False),
                                                  env=sandbox.exec_env(proc), stdout=asyncio.subprocess.PIPE)
        out, _ = await ex.communicate()
        return await ex.wait(), out
    finally:
        proc.kill()
        assert await proc.wait() == 137
        await pod.stop()


def test_busybox_has_tar_but_not_gnu_flags_and_only_loopback(tmp_path: Path) -> None:
    code, out = _run(_container(tmp_path, "docker.io/library/busybox:1.36", ["sleep", "60"], [],
                                sandbox.Credentials(), ["sh", "-c",
                                "tar --sort=name -cf - /etc >/dev/null 2>&1; echo sort=$?; "
                                "tar -cf - -C / etc | tar -tf - | sort | head -1; "
                                "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '; "
                                "cat /proc/1/cmdline; exit 5"]))
    assert code == 5
    lines = out.decode().split("\n")
    assert lines[0] != "sort=0"
    assert lines[1] == "etc/"
    assert lines[2] == "lo"
    assert lines[3].startswith("sleep")


def test_etcd_image_is_what_kubeadm_pulls(tmp_path: Path) -> None:
    # registry.k8s.io/etcd:3.5.x-0: bash-static as /bin/sh, etcd and etcdctl (also under versioned names),
    # nothing else to run: no etcdutl, no cp, no tar.
    v35 = etcd_versions.VERSIONS["3.5"]
    code, out = _run(_container(tmp_path, v35.image,
                                # The pod's own network namespace: fixed ports cannot clash with the host.
                                ["etcd", "--data-dir=/tmp/e", "--listen-peer-urls=http://127.0.0.1:2380",
                                 "--listen-client-urls=http://127.0.0.1:2379",
                                 "--advertise-client-urls=http://127.0.0.1:2379"], [],
                                sandbox.Credentials(), ["sh", "-c", "exec 2>&1; etcdctl version; cp x y; "
                                                        "tar --version; etcdutl version; echo $BASH_VERSION"]))
    text = out.decode()
    assert code == 0 and f"etcdctl version: {v35.version}" in text, text
    for missing in ("cp", "tar", "etcdutl"):
        assert f"{missing}: command not found" in text
    root = tmp_path / "images" / "etcd-3.5"
    assert sorted(p.name for p in (root / "bin").iterdir()) == ["sh"]
    assert sorted(p.name for p in (root / "usr" / "local" / "bin").iterdir()) == [
        "etcd", f"etcd-{v35.version}", "etcdctl", f"etcdctl-{v35.version}"]


def test_unknown_image_is_a_pull_error(tmp_path: Path) -> None:
    with pytest.raises(ImagePullError, match=r'failed to pull and unpack image "docker.io/library/nope:1"'):
        ImageStore(tmp_path).resolve("nope:1")


def test_run_as_user_and_fs_group_own_files_in_a_volume(tmp_path: Path) -> None:
    # The runtime binds the root filesystem and volumes from descriptors it opens as root: a non-root
    # container starts even though pytest's temp directories above them are closed to its uid.
    os.chmod(tmp_path, 0o700)
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "old").write_text("x")
    set_ownership(vol, 2000, "Always", False)
    code, out = _run(_container(tmp_path, "busybox", ["sleep", "60"], [sandbox.Mount(vol, "/data")],
                                sandbox.Credentials(1000, 3000, [2000]),
                                ["sh", "-c", "echo hi > /data/new && id -u && id -G"]))
    assert code == 0, out
    assert out.decode().split("\n")[0] == "1000"
    st = os.stat(vol / "new")
    assert (st.st_uid, st.st_gid) == (1000, 2000)  # setgid directory: the fsGroup is inherited
    assert os.stat(vol / "old").st_gid == 2000 and os.stat(vol).st_mode & 0o2070 == 0o2070


def test_non_root_container_with_file_mounts_in_a_closed_directory(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    conf = tmp_path / "conf"
    conf.write_text("setting=1\n")
    os.chmod(conf, 0o644)
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    os.chmod(data, 0o777)
    code, out = _run(_container(tmp_path, "busybox", ["sleep", "60"],
                                [sandbox.Mount(conf, "/etc/app.conf", read_only=True), sandbox.Mount(data, "/data")],
                                sandbox.Credentials(1000, 1000, []),
                                ["sh", "-c", "cat /etc/app.conf; echo x > /data/f && echo wrote; "
                                             "echo y > /etc/app.conf || echo read-only"]))
    assert code == 0, out
    assert out.decode().split("\n")[:3] == ["setting=1", "wrote", "read-only"]
    assert os.stat(data / "f").st_uid == 1000
