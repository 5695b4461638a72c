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

Host paths the command binds: an argument ``@/host/path`` right after ``--bind`` or ``--ro-bind`` is
opened here as root, then bound (still as root, in a private mount namespace) on a fresh directory of a
tmpfs mounted on /tmp, and the argument becomes that directory. bwrap, which runs with the container's
credentials and resolves its bind sources by path, then reaches the root filesystem and the volumes even
when a directory above them is closed to the container's uid (pytest's 0700 temp directories, a 0700
cluster directory): as with a real runtime, the mounts do not depend on the container's uid. The private
mount namespace keeps all of this away from the machine's mount table.

Usage: nsexec.py --target PID --ns net,ipc,uts[,mnt,pid] [--root] [--wd DIR]
                 [--uid N --gid N --groups a,b] [--tty] -- COMMAND…
Exit status: the command's (128+signal when it was killed), 127 when it cannot be executed.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import stat
import sys
import termios

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
    try:
        command = _stage_bind_sources(libc, command)
    except OSError as e:
        print(f"nsexec: {e.strerror or e}", file=sys.stderr)
        return 127
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


_BIND_OPTIONS = ("--bind", "--ro-bind")
_CLONE_NEWNS = 0x00020000
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000
_STAGE = "/tmp"


def _stage_bind_sources(libc: ctypes.CDLL, command: list[str]) -> list[str]:
    wanted = [i for i, arg in enumerate(command)
              if i > 0 and command[i - 1] in _BIND_OPTIONS and arg.startswith("@/")]
    if not wanted:
        return command

    def check(ret: int, what: str) -> None:
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    check(libc.unshare(_CLONE_NEWNS), "unshare mount namespace")
    check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    # Opened in the new namespace (a bind needs a mount of the caller's own namespace), as root, and
    # before the tmpfs hides /tmp.
    fds = {i: os.open(command[i][1:], os.O_PATH) for i in wanted}
    check(libc.mount(b"tmpfs", _STAGE.encode(), b"tmpfs", 0, b"mode=0755"), f"tmpfs on {_STAGE}")
    out = list(command)
    for n, (i, fd) in enumerate(fds.items()):
        target = f"{_STAGE}/{n}"
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        check(libc.mount(f"/proc/self/fd/{fd}".encode(), target.encode(), None, _MS_BIND | _MS_REC, None),
              f"bind {command[i][1:]}")
        os.close(fd)
        out[i] = target
    return out


def _become(opts: dict[str, str], command: list[str]) -> None:
    if "tty" in opts:
        os.setsid()
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
    # Python ignores SIGPIPE and SIGXFSZ at start-up (and a parent may ignore others, SIGQUIT), and an ignored
    # signal stays ignored across exec: without this, every container and exec'd command would too (`yes | head
    # -1` printing "Broken pipe" instead of ending quietly), where a real runtime starts them with every signal
    # at its default.
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    os.execvpe(command[0], command, dict(os.environ))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
