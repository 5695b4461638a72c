"""Data sets for volume round trips, and exact snapshots of directory trees to compare them.

Built with plain Python on the machine (we are root, so owners, setgid directories and device-free
special files are all possible), straight into a volume's directory on disk: the loopback cluster's
PVs are directories (`spec.hostPath.path`), which makes the disk the ground truth a test compares.
Shared by the end-to-end tests (tens of MB) and benchmarks/ (gigabytes).
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.polling import eventually

MTIME = 1_600_000_000  # a fixed past time: a restore that forgets mtimes cannot pass by luck
CHUNK = 1 << 20
# Directories a test opened for non-root sandboxes (path, mode before): put back after each test by an autouse
# fixture of tests/conftest.py, so the order tests run in cannot leave pytest's 0700 temp dirs opened for others.
OPENED: list[tuple[Path, int]] = []


def _write(path: Path, data: bytes, *, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> None:
    path.write_bytes(data)
    os.chown(path, *owner)
    os.chmod(path, mode)


def _big(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, CHUNK)
            f.write(rng.randbytes(n))
            left -= n


def build_roundtrip(root: Path, *, big_bytes: int = 24 << 20, small_files: int = 400, seed: int = 1) -> None:
    """The data set of the issue: every kind of entry and name a volume may hold."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    _big(root / "big.bin", big_bytes, seed)
    small = root / "small"
    for i in range(small_files):
        d = small / f"d{i % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        _write(d / f"f{i:05d}.txt", rng.randbytes(rng.randint(1, 6000)))
    (root / "empty-dir" / "nested-empty").mkdir(parents=True)
    _write(root / "empty-file", b"")
    names = root / "names"
    names.mkdir()
    for name in ["with space", "new\nline", "-leading-dash", "--double", "ünïcödé-名前", "tab\there", "quote'\"",
                 "a" * 200]:
        _write(names / name, name.encode())
    # A name that is not UTF-8 at all: volumes hold bytes, not text.
    with open(os.path.join(os.fsencode(names), b"latin1-\xe9t\xe9"), "wb") as f:
        f.write(b"bytes")
    deep = root / "deep"
    for i in range(30):
        deep = deep / f"level{i:02d}"
    deep.mkdir(parents=True)
    _write(deep / "bottom.txt", b"deep")
    links = root / "links"
    links.mkdir()
    os.symlink("../big.bin", links / "relative")
    os.symlink("/etc/hostname", links / "absolute")
    os.symlink("does-not-exist", links / "dangling")
    os.symlink("../small", links / "to-dir")
    os.link(root / "empty-file", links / "hard-to-empty")
    _write(links / "target", b"shared inode")
    os.link(links / "target", links / "hard-1")
    os.link(links / "target", names / "hard-2 with space")
    shared = root / "shared"
    shared.mkdir()
    os.chown(shared, 1234, 5678)
    os.chmod(shared, 0o2775)  # setgid: new files inherit the group
    _write(shared / "app.conf", b"owner 1000:5678\n", mode=0o640, owner=(1000, 5678))
    _write(shared / "run.sh", b"#!/bin/sh\necho hi\n", mode=0o755, owner=(1000, 1000))
    _write(shared / "secret", b"0600\n", mode=0o600, owner=(999, 999))
    sticky = root / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    os.mkfifo(root / "a-fifo", 0o640)
    # mtimes last, deepest first, so writing into a directory cannot change its time afterwards.
    entries = sorted(_walk(root), key=lambda p: -len(p))
    for i, path in enumerate(entries):
        os.utime(path, (MTIME + i, MTIME + i), follow_symlinks=False)
    os.utime(root, (MTIME - 1, MTIME - 1))


APP_UID, APP_GID = 1000, 2000
OPENSHIFT_UID = 1_000_680_000  # OpenShift's range starts at 1000000000: past what a tar header holds


def build_app_tree(root: Path, *, uid: int = APP_UID, gid: int = APP_GID) -> None:
    """What a non-root app leaves on its volume, written here as root with the app's owners: symlinks it
    owns (node_modules/.bin), uids past 2^21 and 2^24, mtimes before 1970 and after 2038, a sparse file,
    a mode-000 file, setgid directories, hard links, a fifo, and mkfs's lost+found (root, 0700)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chown(root, uid, gid)
    os.chmod(root, 0o2775)
    lost = root / "lost+found"
    lost.mkdir(mode=0o700)
    app = root / "node_modules" / "tool"
    app.mkdir(parents=True)
    _write(app / "bin.js", b"#!/usr/bin/env node\n", mode=0o755, owner=(uid, gid))
    (root / "node_modules" / ".bin").mkdir()
    os.symlink("../tool/bin.js", root / "node_modules" / ".bin" / "tool")
    os.symlink("/usr/share/zoneinfo/UTC", root / "localtime")
    big = root / "big-uid"
    big.mkdir()
    _write(big / "owned", b"openshift", mode=0o640, owner=(OPENSHIFT_UID, OPENSHIFT_UID))
    os.symlink("owned", big / "link")
    os.lchown(big / "link", OPENSHIFT_UID, OPENSHIFT_UID)
    _write(big / "past-2^24", b"x", owner=(20_000_000, 3_000_000))
    os.chown(big, OPENSHIFT_UID, OPENSHIFT_UID)
    _write(root / "old", b"before 1970", owner=(uid, gid))
    _write(root / "future", b"after 2038", owner=(uid, gid))
    _write(root / "locked", b"mode 000", mode=0o000, owner=(uid, gid))
    _write(root / "setuid-tool", b"#!/bin/sh\n", mode=0o4755, owner=(uid, gid))
    with open(root / "sparse", "wb") as f:
        f.truncate(8 << 20)
        f.seek(3 << 20)
        f.write(b"data in the middle")
    os.chown(root / "sparse", uid, gid)
    _write(root / "data.db", b"rows" * 1000, owner=(uid, gid))
    os.link(root / "data.db", root / "data.db.hardlink")
    os.mkfifo(root / "pipe", 0o600)
    os.chown(root / "pipe", uid, gid)
    for path in [p for p in _walk(root) if not p.startswith(os.fsencode(lost))]:
        if not os.path.islink(path) and os.stat(path).st_uid == 0:
            os.chown(path, uid, gid)
        elif os.path.islink(path) and os.lstat(path).st_uid == 0:
            os.lchown(path, uid, gid)
    entries = sorted(_walk(root), key=lambda p: -len(p))
    for i, path in enumerate(entries):
        os.utime(path, (MTIME + i, MTIME + i), follow_symlinks=False)
    os.utime(root / "old", (-100_000, -100_000))
    os.utime(root / "future", (4_102_444_800, 4_102_444_800))  # 2100-01-01
    os.utime(root / "node_modules" / ".bin" / "tool", (-5_000, -5_000), follow_symlinks=False)
    os.utime(root, (MTIME - 1, MTIME - 1))


def build_mixed(root: Path, total_bytes: int, *, seed: int = 2) -> dict[str, int]:
    """~total_bytes of a realistic mix for benchmarks: a few large files, many medium and small ones."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    count = 0
    written = 0
    plan = [(0.5, 64 << 20), (0.3, 1 << 20), (0.2, 16 << 10)]  # share of bytes, file size
    for share, size in plan:
        budget = int(total_bytes * share)
        i = 0
        while budget > 0:
            n = min(size, budget)
            d = root / f"s{size}" / f"d{i // 200:04d}"
            d.mkdir(parents=True, exist_ok=True)
            _big(d / f"f{i:06d}", n, rng.randrange(1 << 30))
            budget -= n
            written += n
            count += 1
            i += 1
    return {"files": count, "bytes": written}


def _walk(root: Path) -> list[bytes]:
    out: list[bytes] = []
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            out.append(os.path.join(dirpath, name))
    return out


def wipe(root: Path) -> None:
    """Empty a volume directory (the directory itself stays: it is the mount point)."""
    for entry in os.scandir(os.fsencode(root)):
        if entry.is_dir(follow_symlinks=False):
            subprocess.run(["rm", "-rf", "--", entry.path], check=True)
        else:
            os.unlink(entry.path)


@dataclass(frozen=True)
class Node:
    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    content: str  # SHA-256 for files, target for symlinks
    link_group: str  # the first path (sorted) sharing the inode, for hard links


def snapshot(root: Path, *, root_entry: bool = True) -> dict[bytes, Node]:
    """Everything about a tree a restore must reproduce, keyed by path relative to root (bytes)."""
    base = os.fsencode(root)
    paths = [base, *_walk(root)] if root_entry else _walk(root)
    inodes: dict[int, list[bytes]] = {}
    info: dict[bytes, Any] = {}
    for path in paths:
        st = os.lstat(path)
        rel = os.path.relpath(path, base)
        info[rel] = st
        if stat.S_ISREG(st.st_mode):
            inodes.setdefault(st.st_ino, []).append(rel)
    out: dict[bytes, Node] = {}
    for rel, st in info.items():
        mode = st.st_mode
        kind = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                stat.S_IFIFO: "fifo"}.get(stat.S_IFMT(mode), "other")
        content = ""
        full = os.path.join(base, rel)
        if kind == "file":
            digest = hashlib.sha256()
            with open(full, "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
            content = digest.hexdigest()
        elif kind == "symlink":
            content = os.fsdecode(os.readlink(full))
        group = min(inodes[st.st_ino]).decode(errors="replace") if kind == "file" and st.st_nlink > 1 else ""
        out[rel] = Node(kind, stat.S_IMODE(mode), st.st_uid, st.st_gid, int(st.st_mtime),
                        st.st_size if kind != "dir" else 0, content, group)
    return out


def differences(before: dict[bytes, Node], after: dict[bytes, Node], limit: int = 20) -> list[str]:
    out = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            out.append(f"{key!r}: {before.get(key)} != {after.get(key)}")
    return out[:limit]

# --------------------------------------------------------------------------- loopback cluster helpers

def new_namespace(cluster: Any, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = f"{prefix}-{os.urandom(3).hex()}"
    cluster.kubectl("create", "namespace", name)
    if labels:
        cluster.kubectl("label", "namespace", name, *[f"{k}={v}" for k, v in labels.items()])
    return name


def make_claim(cluster: Any, namespace: str, name: str = "data", *, modes: tuple[str, ...] = ("ReadWriteOnce",),
               storage_class: str | None = None, wait: bool = True) -> None:
    import json

    spec: dict[str, Any] = {"accessModes": list(modes), "resources": {"requests": {"storage": "1Gi"}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    if wait:
        eventually(lambda: cluster.kubectl("get", "pvc", "-n", namespace, name, "-o",
                                         "jsonpath={.status.phase}").stdout == "Bound", what=f"claim {name} bound")


def volume_dir(cluster: Any, namespace: str, claim: str = "data") -> Path:
    """The claim's data on disk: the bound PV's hostPath (the ground truth of every volume test)."""
    pv = cluster.kubectl("get", "pvc", "-n", namespace, claim, "-o", "jsonpath={.spec.volumeName}").stdout
    return Path(cluster.kubectl("get", "pv", pv, "-o", "jsonpath={.spec.hostPath.path}").stdout)


def managed_pods(cluster: Any, namespace: str) -> list[str]:
    out: str = cluster.kubectl("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=kubectl-dr",
                               "-o", "jsonpath={.items[*].metadata.name}").stdout
    return out.split()
