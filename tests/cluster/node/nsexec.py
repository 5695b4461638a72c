"""Enter another process's namespaces, drop to a uid/gid/group list, then exec a command.

Run as a separate program (``python3 nsexec.py …``) by the node runtime, always as root:

- to start a container inside its pod's network/IPC/UTS namespaces (held by the pod's sandbox
  process) before ``exec``-ing bwrap with the container's credentials;
- to run ``kubectl exec`` commands inside a running container: its mount namespace (so it sees the
  same volumes and tmpfs), PID namespace, root directory and working directory.

Why not ``nsenter``: it can switch uid and gid but clears the supplementary groups, and an exec'd
process must keep the container's fsGroup and supplementalGroups, as a real runtime does. The
credentials are dropped here, on the host side, so the command needs nothing inside the image (the
etcd image has no shell and no setpriv).

Usage: nsexec.py --target PID --ns net,ipc,uts[,mnt,pid] [--root] [--wd DIR]
                 [--uid N --gid N --groups a,b] [--tty] -- COMMAND…
Exit status: the command's (128+signal when it was killed), 127 when it cannot be executed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_CLONE_FLAGS = {"mnt": 0x00020000, "uts": 0x04000000, "ipc": 0x08000000, "net": 0x40000000,
                "pid": 0x20000000}
# Mount namespace last: after it, /proc/TARGET/ns paths would resolve in the new namespace.
_ORDER = ("ipc", "uts", "net", "pid", "mnt")
_PR_SET_PDEATHSIG = 1


def _parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    if "--" not in argv:
        raise SystemExit("nsexec: missing -- before the command")
    split = argv.index("--")
    opts: dict[str, str] = {}
    it = iter(argv[:split])
    for arg in it:
        if arg in ("--root", "--tty"):
            opts[arg[2:]] = "1"
        else:
            opts[arg[2:]] = next(it)
    return opts, argv[split + 1:]


def main(argv: list[str]) -> int:
    opts, command = _parse(argv)
    libc = ctypes.CDLL(None, use_errno=True)
    # Die with the node runtime, as bwrap's --die-with-parent does for containers.
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    target = opts["target"]
    wanted = set(filter(None, opts.get("ns", "").split(",")))
    fds = {ns: os.open(f"/proc/{target}/ns/{ns}", os.O_RDONLY) for ns in _ORDER if ns in wanted}
    root_fd = os.open(f"/proc/{target}/root", os.O_RDONLY) if "root" in opts else None
    for ns, fd in fds.items():
        if libc.setns(fd, _CLONE_FLAGS[ns]) != 0:
            err = ctypes.get_errno()
            print(f"nsexec: setns {ns}: {os.strerror(err)}", file=sys.stderr)
            return 127
        os.close(fd)
    if root_fd is not None:
        os.fchdir(root_fd)
        os.chroot(".")
        os.close(root_fd)
    # A new PID namespace applies to children only: fork so the command lives inside it.
    pid = os.fork() if "pid" in fds else 0
    if pid == 0:
        try:
            _become(opts, command)
        except OSError as e:
            print(f"nsexec: {command[0] if command else ''}: {e.strerror}", file=sys.stderr)
            os._exit(126 if e.errno == 13 else 127)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _become(opts: dict[str, str], command: list[str]) -> None:
    if "tty" in opts:
        os.setsid()
        import fcntl
        import termios
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if "wd" in opts:
        try:
            os.chdir(opts["wd"])
        except OSError:
            os.chdir("/")
    if "gid" in opts:
        groups = [int(g) for g in opts.get("groups", "").split(",") if g]
        os.setgroups(groups)
        os.setresgid(int(opts["gid"]), int(opts["gid"]), int(opts["gid"]))
    if "uid" in opts:
        os.setresuid(int(opts["uid"]), int(opts["uid"]), int(opts["uid"]))
    os.execvpe(command[0], command, dict(os.environ))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
