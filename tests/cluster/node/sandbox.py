"""Run a container as a process in a ``bwrap`` sandbox, and run commands inside a running one.

A pod gets one *pod sandbox*: a sleeping process that owns the pod's IPC and UTS namespaces and,
unless ``hostNetwork``, a network namespace with only loopback — the role of the "pause" container.
Each container then runs in its own bwrap sandbox that joins those namespaces (so containers of a pod
share localhost, as in Kubernetes) and adds its own mount and PID namespaces:

- root filesystem: a private copy of the image (the container's writable layer, dropped with the
  pod), bound read-only when ``readOnlyRootFilesystem``; /dev and /proc fresh;
- the command is PID 1 (``--as-pid-1``): like in a real container, a PID 1 without a SIGTERM handler
  ignores SIGTERM and is only ended by the SIGKILL after the grace period;
- root containers run bwrap as root with the runtime's default capability set (so tar as root can
  chown and override permissions in volumes, as it can in a real cluster); non-root containers drop
  to uid/gid/groups on the host side first, so bwrap uses a user namespace and files written in
  volumes are owned by the real uid.

Commands for ``kubectl exec`` enter the container's namespaces and root via ``nsexec.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BWRAP = "/usr/bin/bwrap"
NSEXEC = str(Path(__file__).with_name("nsexec.py"))

# containerd's default capability set for containers (the OCI spec defaults of the CRI plugin).
DEFAULT_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")


@dataclass(frozen=True)
class Mount:
    """A bind mount into the container; ``source`` is a path on the machine."""

    source: Path
    target: str
    read_only: bool = False


@dataclass
class Credentials:
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)


@dataclass
class ContainerLaunch:
    """Everything needed to start one container process."""

    name: str
    image_rootfs: Path
    rootfs: Path                    # where the writable copy of the image is made
    argv: list[str]
    env: dict[str, str]
    workdir: str
    mounts: list[Mount]
    creds: Credentials
    read_only_root: bool = False
    privileged: bool = False
    cap_add: Sequence[str] = ()
    cap_drop: Sequence[str] = ()
    stdin: bool = False


class PodSandbox:
    """The per-pod namespace holder (the "pause" process)."""

    def __init__(self, proc: asyncio.subprocess.Process, pid: int, host_network: bool) -> None:
        self.proc = proc
        self.pid = pid
        self.host_network = host_network

    @property
    def namespaces(self) -> str:
        return "ipc,uts" if self.host_network else "net,ipc,uts"

    @classmethod
    async def start(cls, hostname: str, host_network: bool, holder_rootfs: Path) -> PodSandbox:
        args = [BWRAP, "--ro-bind", str(holder_rootfs), "/", "--dev", "/dev", "--proc", "/proc",
                "--unshare-ipc", "--unshare-uts", "--hostname", hostname[:63]]
        if not host_network:
            args.append("--unshare-net")  # bwrap brings loopback up in the new namespace
        args += ["--die-with-parent", "--new-session"]
        proc, pid = await _spawn_with_info([*args, "--", "/bin/sleep", "2147483647"], stdin=None,
                                           stdout=asyncio.subprocess.DEVNULL,
                                           stderr=asyncio.subprocess.DEVNULL)
        return cls(proc, pid, host_network)

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()

    def alive(self) -> bool:
        return self.proc.returncode is None


class ContainerProcess:
    """A running container: the bwrap process, and the host pid of the container's PID 1."""

    def __init__(self, launch: ContainerLaunch, proc: asyncio.subprocess.Process, pid: int) -> None:
        self.launch = launch
        self.proc = proc
        self.pid = pid

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill(self) -> None:
        # SIGKILL to PID 1 of the container's namespace ends every process in it; bwrap then exits
        # with 128+9 = 137, the code a runtime reports for a killed container.
        self.signal(signal.SIGKILL)

    async def wait(self) -> int:
        """Exit code as a container runtime reports it: the code, or 128+signal."""
        code = await self.proc.wait()
        return 128 - code if code < 0 else code

    @property
    def running(self) -> bool:
        return self.proc.returncode is None


def _creds_args(creds: Credentials) -> list[str]:
    if creds.uid == 0 and creds.gid == 0 and not creds.groups:
        return ["--uid", "0", "--gid", "0", "--groups", ""]
    return ["--uid", str(creds.uid), "--gid", str(creds.gid),
            "--groups", ",".join(str(g) for g in creds.groups)]


async def prepare_rootfs(image_rootfs: Path, rootfs: Path, mounts: Sequence[Mount]) -> None:
    """Make the container's private copy of the image and the mount points its volumes need."""
    if rootfs.exists():
        shutil.rmtree(rootfs)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec("cp", "-a", "--reflink=auto", str(image_rootfs),
                                                str(rootfs))
    if await proc.wait() != 0:
        raise OSError(f"cannot copy image {image_rootfs} to {rootfs}")
    with contextlib.suppress(FileNotFoundError):
        (rootfs / ".complete").unlink()
    for m in ordered_mounts(mounts):
        _make_mountpoint(rootfs, m, mounts)


def ordered_mounts(mounts: Sequence[Mount]) -> list[Mount]:
    # Parents before children, so /data is mounted before /data/sub (runc sorts the same way).
    return sorted(mounts, key=lambda m: len(Path(m.target).parts))


def _make_mountpoint(rootfs: Path, mount: Mount, mounts: Sequence[Mount]) -> None:
    # A target inside another volume needs its mount point created in that volume's source.
    base, rel = rootfs, Path(mount.target).relative_to("/")
    for other in ordered_mounts(mounts):
        if other is mount:
            break
        try:
            inner = Path(mount.target).relative_to(other.target)
        except ValueError:
            continue
        if other.source.is_dir():
            base, rel = other.source, inner
    dest = base / rel
    if dest.exists() or dest.is_symlink():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mount.source.is_dir():
        dest.mkdir()
    else:
        dest.touch()


def bwrap_args(launch: ContainerLaunch) -> list[str]:
    """bwrap's command line for ``launch``, run through nsexec: nsexec binds the root filesystem and the
    volumes (``@PATH``) as root on paths the container's uid can reach (see nsexec.py)."""
    root_opt = "--ro-bind" if launch.read_only_root else "--bind"
    args = [BWRAP, root_opt, f"@{launch.rootfs.absolute()}", "/", "--dev", "/dev", "--proc", "/proc"]
    for m in ordered_mounts(launch.mounts):
        args += ["--ro-bind" if m.read_only else "--bind", f"@{m.source.absolute()}", m.target]
    args += ["--unshare-pid", "--as-pid-1", "--die-with-parent", "--new-session", "--clearenv"]
    if launch.creds.uid == 0:
        caps = _capabilities(launch)
        args += ["--cap-drop", "ALL"]
        for cap in caps:
            args += ["--cap-add", cap]
    for key, value in launch.env.items():
        args += ["--setenv", key, value]
    args += ["--chdir", launch.workdir or "/", "--", *launch.argv]
    return args


def _capabilities(launch: ContainerLaunch) -> list[str]:
    if launch.privileged:
        return ["ALL"]
    def norm(c: str) -> str:
        return c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper()
    drop = {norm(c) for c in launch.cap_drop}
    caps = [] if "CAP_ALL" in drop else [c for c in DEFAULT_CAPS if c not in drop]
    caps += [norm(c) for c in launch.cap_add if norm(c) not in caps and norm(c) != "CAP_ALL"]
    if any(norm(c) == "CAP_ALL" for c in launch.cap_add):
        return ["ALL"]
    return caps


async def start_container(launch: ContainerLaunch, pod: PodSandbox, *, stdout: int, stderr: int
                          ) -> ContainerProcess:
    """Start ``launch`` inside ``pod``'s namespaces. ``stdout``/``stderr`` are pipe fds or PIPE."""
    args = [sys.executable, NSEXEC, "--target", str(pod.pid), "--ns", pod.namespaces,
            *_creds_args(launch.creds), "--", *bwrap_args(launch)]
    stdin = asyncio.subprocess.PIPE if launch.stdin else asyncio.subprocess.DEVNULL
    proc, pid = await _spawn_with_info(args, stdin=stdin, stdout=stdout, stderr=stderr)
    return ContainerProcess(launch, proc, pid)


def exec_args(container: ContainerProcess, command: Sequence[str], *, tty: bool) -> list[str]:
    """Command line that runs ``command`` inside ``container`` as the container's user."""
    launch = container.launch
    args = [sys.executable, NSEXEC, "--target", str(container.pid), "--ns", "ipc,uts,net,pid,mnt",
            "--root", "--wd", launch.workdir or "/", *_creds_args(launch.creds)]
    if tty:
        args.append("--tty")
    return [*args, "--", *command]


def exec_env(container: ContainerProcess) -> dict[str, str]:
    env = dict(container.launch.env)
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


class SandboxStartError(Exception):
    pass


async def _spawn_with_info(args: list[str], *, stdin: int | None, stdout: int | None,
                           stderr: int | None) -> tuple[asyncio.subprocess.Process, int]:
    """Spawn bwrap with ``--info-fd`` and return the process and the sandbox's child pid."""
    read_fd, write_fd = os.pipe()
    bw = args.index(BWRAP)
    args = [*args[:bw + 1], "--info-fd", str(write_fd), *args[bw + 1:]]
    try:
        proc = await asyncio.create_subprocess_exec(*args, stdin=stdin, stdout=stdout, stderr=stderr,
                                                    pass_fds=(write_fd,), start_new_session=True)
    finally:
        os.close(write_fd)
    loop = asyncio.get_running_loop()
    try:
        data = await loop.run_in_executor(None, _read_all, read_fd)
    finally:
        os.close(read_fd)
    try:
        pid = int(json.loads(data)["child-pid"])
    except (ValueError, KeyError) as e:
        code = await proc.wait()
        raise SandboxStartError(f"sandbox did not start (exit code {code})") from e
    return proc, pid


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)
