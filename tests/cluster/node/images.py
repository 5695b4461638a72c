"""Image names → root filesystems, built once under DIR/images/.

The loopback cluster has no registry: an image name is resolved to one of two local "image kinds",
each a directory that becomes a container's root filesystem.

- ``busybox``: Debian's busybox-static with every applet linked in /bin, like the official image
  (which also keeps all applets in /bin), plus /etc/passwd and /etc/group with root and nobody.
- ``debian``: a Debian userland (dash as /bin/sh, bash, GNU tar, coreutils, findutils, sed, grep, gzip,
  util-linux)
  copied from this machine with the libraries each binary links to, as ``debian``/``ubuntu`` images
  give a rescue pod: GNU tar where busybox's has its limits (sparse files, large uids, old mtimes).
- ``etcd-3.4`` / ``etcd-3.5``: as kubeadm's ``registry.k8s.io/etcd:X.Y.Z-N`` images (built from
  kubernetes/kubernetes cluster/images/etcd: distroless static, bash-static copied in as /bin/sh, the etcd
  release's ``etcd`` and ``etcdctl`` in /usr/local/bin, also under their versioned names): /bin/sh and
  the version's ``etcd``, ``etcdctl``, ``etcd-X.Y.Z``, ``etcdctl-X.Y.Z``, plus exactly the loader and
  libraries those link to. No etcdutl (the image has none, in 3.5 either), no tar, no cp, no coreutils —
  the product has to cope with that, so the image must not be friendlier than the real one. What the real
  image has and this one lacks (the older bundled etcd versions, ``migrate``) is listed in the README.
  The tag's major.minor picks the version (3.4.x → Debian 12's 3.4.23, 3.5.x → Debian 13's 3.5.16).

- ``ceph``: as ``quay.io/ceph/ceph:vX`` (the image Rook runs its mons from, a full distribution userland):
  the ``debian`` userland plus Debian 12's Ceph 16.2.15 programs (``ceph-mon``, ``ceph-monstore-tool``,
  ``monmaptool``, ``ceph-authtool``, ``ceph-conf`` and the ``ceph`` CLI with its Python 3.11 and the
  ``rados``/``ceph_argparse``/``ceph_daemon`` modules) and their libraries; ``/var/run`` → ``/run`` with
  ``/run/ceph`` where the daemons put their admin sockets.
- ``rook``: a stand-in for ``rook/ceph:vX`` (the operator): the busybox userland and a
  ``/usr/local/bin/rook`` entrypoint that only idles: the loopback does not reconcile anything.

Anything else is not pullable (``ErrImagePull`` then ``ImagePullBackOff``) unless registered as an
alias of one of the kinds (``up --image NAME=busybox|debian|etcd``; ``etcd`` is the cluster's version).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.cluster import etcd_versions

BUSYBOX_BINARY = Path("/usr/bin/busybox")
BASH_STATIC = Path("/bin/bash-static")  # Debian's bash-static: the real etcd image's /bin/sh
KINDS = ("busybox", "debian", "ceph", "rook", "etcd", *(f"etcd-{v}" for v in etcd_versions.VERSIONS))
# The Debian packages whose programs make up the ``debian`` image.
DEBIAN_PACKAGES = ("dash", "bash", "coreutils", "tar", "findutils", "sed", "grep", "gzip", "diffutils",
                   "util-linux")
# The Ceph programs the ``ceph`` image adds (Debian 12's ceph-mon, ceph-base, ceph-common): the monitor
# and its tools, not the whole distribution (radosgw-admin, rbd… would triple every pod's copy).
CEPH_PROGRAMS = tuple(Path("/usr/bin") / p for p in ("ceph-mon", "ceph-monstore-tool", "monmaptool",
                                                      "ceph-authtool", "ceph-conf", "ceph", "rados"))
CEPH_PYTHON = Path("/usr/bin/python3.11")
CEPH_PYTHON_MODULES = ("rados.cpython-311-x86_64-linux-gnu.so", "ceph_argparse.py", "ceph_daemon.py",
                       "prettytable", "prettytable-*.dist-info", "wcwidth", "wcwidth-*.egg-info")
# Parts of the standard library the ``ceph`` CLI never loads (tests, GUI, installers): left out of the image.
_STDLIB_SKIP = ("test", "idlelib", "tkinter", "lib2to3", "ensurepip", "__pycache__", "turtledemo")

# What an image declares besides its files (its "config"): the real busybox image has Cmd ["sh"] and
# no Entrypoint; the etcd image has neither (kubeadm always gives a command).
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Image:
    """A resolved image: its name as written in the pod, its kind and its root filesystem."""

    name: str
    kind: str
    rootfs: Path
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    image_id: str  # "docker.io/library/busybox@sha256:…" style, as containerd reports imageID


class ImagePullError(Exception):
    """The image cannot be "pulled"; carries the message a real kubelet puts in the container status."""


def _repository(name: str) -> tuple[str, str]:
    """Split an image reference into (repository without registry/library prefix, tag or digest)."""
    ref = name
    digest = ""
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = ""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref, tag = ref.rsplit(":", 1)
    parts = ref.split("/")
    # A first component with a dot or colon, or "localhost", is a registry host (docker's rule).
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) == 2 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts), digest or tag or "latest"


def normalized_name(name: str) -> str:
    """The fully qualified reference containerd reports in status.containerStatuses[].image."""
    ref = name
    first = ref.split("/", 1)[0]
    if "/" not in ref or not ("." in first or ":" in first or first == "localhost"):
        ref = "docker.io/" + (ref if "/" in ref else "library/" + ref)
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        ref += ":latest"
    return ref


class ImageStore:
    """Builds the image kinds lazily under ``root`` and resolves image names to them."""

    def __init__(self, root: Path, extra: dict[str, str] | None = None,
                 etcd_version: str = etcd_versions.DEFAULT) -> None:
        self.root = root
        self.etcd_version = etcd_version
        self.extra = {alias: f"etcd-{etcd_version}" if kind == "etcd" else kind
                      for alias, kind in (extra or {}).items()}
        for alias, kind in self.extra.items():
            if kind not in KINDS:
                raise ValueError(f"image {alias!r}: unknown kind {kind!r} (expected one of {KINDS})")

    def kind_of(self, name: str) -> str | None:
        if name in self.extra:
            return self.extra[name]
        repo, _ = _repository(name)
        if repo == "busybox":
            return "busybox"
        if repo in ("debian", "ubuntu"):
            return "debian"
        if repo == "ceph/ceph":  # quay.io/ceph/ceph and docker.io/ceph/ceph
            return "ceph"
        if repo == "rook/ceph":
            return "rook"
        if name.startswith("registry.k8s.io/etcd:") or name.startswith("k8s.gcr.io/etcd:"):
            version = etcd_versions.for_image(name)
            return f"etcd-{version.minor}" if version else None
        return None

    def resolve(self, name: str) -> Image:
        kind = self.kind_of(name)
        if kind is None:
            raise ImagePullError(pull_error_message(name))
        rootfs = self.build(kind)
        digest = hashlib.sha256(f"{kind}:{rootfs}".encode()).hexdigest()
        repo = normalized_name(name).rsplit(":", 1)[0] if "@" not in name else name.split("@", 1)[0]
        env = (("PATH", _DEFAULT_PATH),)
        cmd: tuple[str, ...] = {"busybox": ("sh",), "debian": ("bash",), "ceph": ("bash",)}.get(kind, ())
        entrypoint: tuple[str, ...] = ("/usr/local/bin/rook",) if kind == "rook" else ()
        if kind.startswith("etcd-"):
            cmd = ("/usr/local/bin/etcd",)
        return Image(name=name, kind=kind, rootfs=rootfs, entrypoint=entrypoint, cmd=cmd, env=env,
                     image_id=f"{repo}@sha256:{digest}")

    def build(self, kind: str) -> Path:
        """Return the rootfs of ``kind``, building it once (safe across processes via a lock file)."""
        target = self.root / kind
        if (target / ".complete").exists():
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{kind}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (target / ".complete").exists():
                return target
            staging = self.root / f".{kind}.staging"
            shutil.rmtree(staging, ignore_errors=True)
            if kind == "busybox":
                _build_busybox(staging)
            elif kind == "debian":
                _build_debian(staging)
            elif kind == "ceph":
                _build_ceph(staging)
            elif kind == "rook":
                _build_rook(staging)
            else:
                _build_etcd(staging, etcd_versions.VERSIONS[kind.split("-", 1)[1]])
            # Marker outside the visible tree would be nicer, but containers never see the image
            # directory itself (each gets a copy without it, see sandbox.py).
            (staging / ".complete").write_text("")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        return target


def pull_error_message(name: str) -> str:
    """The status message of a failed pull: the CRI error as containerd words it for a repository
    that does not exist (the kubelet passes the runtime's error text through unchanged)."""
    ref = normalized_name(name)
    return (f'rpc error: code = Unknown desc = failed to pull and unpack image "{ref}": '
            f'failed to resolve reference "{ref}": '
            f"pull access denied, repository does not exist or may require authorization: "
            f"server message: insufficient_scope: authorization failed")


def _skeleton(root: Path) -> None:
    for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "usr", "home"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")


def _build_busybox(root: Path) -> None:
    _skeleton(root)
    shutil.copy2(BUSYBOX_BINARY, root / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX_BINARY), "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            (root / "bin" / applet).symlink_to("busybox")


_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def _linked_files(binary: Path) -> list[Path]:
    """The loader and shared libraries ``ldd`` lists for ``binary`` (none for a static binary)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    return [Path(m.group(1)) for line in out.splitlines() if (m := _LDD_LINE.search(line))]


def _copy_with_links(src: Path, root: Path) -> None:
    """Copy ``src`` to the same path under ``root``, recreating a symlink chain (the loader is one)."""
    dest = root / src.relative_to("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        link = os.readlink(src)
        if not dest.exists() and not dest.is_symlink():
            dest.symlink_to(link)
        _copy_with_links((src.parent / link).resolve() if not os.path.isabs(link) else Path(link), root)
    elif not dest.exists():
        shutil.copy2(src, dest)


def _build_etcd(root: Path, version: etcd_versions.EtcdVersion) -> None:
    # distroless static: no passwd tools; it does carry /etc/passwd and /tmp.
    for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "var/etcd", "var/lib/etcd", "usr/local/bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                         "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
                                         "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    (root / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")
    shutil.copy2(BASH_STATIC, root / "bin" / "sh")
    bin_dir = root / "usr" / "local" / "bin"
    for binary in (version.etcd, version.etcdctl):
        # The Makefile installs each bundled version as NAME-VERSION and the latest also as NAME.
        shutil.copy2(binary, bin_dir / binary.name)
        os.link(bin_dir / binary.name, bin_dir / f"{binary.name}-{version.version}")
        for lib in _linked_files(binary):
            _copy_with_links(lib, root)


def _package_programs(packages: tuple[str, ...]) -> list[Path]:
    """The executables the packages install in bin directories (as dpkg knows them)."""
    out = subprocess.run(["dpkg", "-L", *packages], check=True, capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        path = Path(line)
        if re.match(r"^/(usr/)?s?bin/[^/]+$", line) and (path.is_file() or path.is_symlink()):
            found.append(path)
    return found


def _build_debian(root: Path) -> None:
    # Debian 12 is merged-/usr (/bin → usr/bin, /lib → usr/lib …): the image has the same links, made
    # first, so that every program and library copied by its /bin or /lib path lands in /usr.
    for top in ("bin", "sbin", "lib", "lib64"):
        (root / "usr" / top).mkdir(parents=True, exist_ok=True)
        (root / top).symlink_to(f"usr/{top}")
    _skeleton(root)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                         "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    for program in _package_programs(DEBIAN_PACKAGES):
        _copy_with_links(program, root)
        if not program.is_symlink():
            for lib in _linked_files(program):
                _copy_with_links(lib, root)
    if not (root / "usr" / "bin" / "sh").exists():
        (root / "usr" / "bin" / "sh").symlink_to("dash")  # made by dash's maintainer script, not listed


def _build_ceph(root: Path) -> None:
    _build_debian(root)
    for program in [*CEPH_PROGRAMS, CEPH_PYTHON]:
        _copy_with_links(program, root)
        if not program.is_symlink():
            for lib in _linked_files(program):
                _copy_with_links(lib, root)
    (root / "usr" / "bin" / "python3").symlink_to(CEPH_PYTHON.name)
    # The plugins ceph-mon loads at start (erasure-code, compressor, crypto), with their libraries.
    plugins = Path("/usr/lib/x86_64-linux-gnu/ceph")
    for plugin in plugins.rglob("*.so*"):
        _copy_with_links(plugin, root)
        if not plugin.is_symlink():
            for lib in _linked_files(plugin):
                _copy_with_links(lib, root)
    stdlib = Path("/usr/lib/python3.11")
    shutil.copytree(stdlib, root / stdlib.relative_to("/"), symlinks=True,
                    ignore=shutil.ignore_patterns(*_STDLIB_SKIP))
    for so in (stdlib / "lib-dynload").glob("*.so"):
        for lib in _linked_files(so):
            _copy_with_links(lib, root)
    site = Path("/usr/lib/python3/dist-packages")
    (root / site.relative_to("/")).mkdir(parents=True, exist_ok=True)
    for module in (found for pattern in CEPH_PYTHON_MODULES for found in site.glob(pattern)):
        if module.is_dir():
            shutil.copytree(module, root / module.relative_to("/"), ignore=shutil.ignore_patterns("__pycache__"))
            continue
        _copy_with_links(module, root)
        if module.suffix == ".so":
            for lib in _linked_files(module):
                _copy_with_links(lib, root)
    # The ceph image's /var/run is /run (as on the host distribution), and /run/ceph is where every
    # daemon puts its admin socket (Rook's liveness probe reads /run/ceph/ceph-mon.ID.asok).
    (root / "run" / "ceph").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "var" / "run", ignore_errors=True)
    (root / "var" / "run").symlink_to("../run")
    for d in ("etc/ceph", "var/lib/ceph/mon", "var/log/ceph", "var/lib/ceph/crash"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/etc/os-release", root / "etc" / "os-release")  # the mon records the distribution
    with open(root / "etc" / "passwd", "a") as passwd:
        passwd.write("ceph:x:167:167:Ceph storage service:/var/lib/ceph:/sbin/nologin\n")
    with open(root / "etc" / "group", "a") as group:
        group.write("ceph:x:167:\n")


ROOK_ENTRYPOINT = """#!/bin/sh
# Loopback stand-in for Rook's operator binary: the loopback cluster does not reconcile CephClusters,
# so the operator only idles (its replicas are what the tests and the product look at). Like the real
# operator (a Go program that stops on SIGTERM), it ends when its pod is deleted or scaled down: an idle
# `sleep` as the container's PID 1 would ignore SIGTERM and hold every scale-down for the 30 s grace period.
echo "rook stand-in: $* (no reconciliation in the loopback cluster)"
trap 'echo "rook stand-in: stopping"; exit 0' TERM INT
sleep 2147483647 &
wait
"""


def _build_rook(root: Path) -> None:
    _build_busybox(root)
    entry = root / "usr" / "local" / "bin" / "rook"
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(ROOK_ENTRYPOINT)
    entry.chmod(0o755)
