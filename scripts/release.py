#!/usr/bin/env python3
"""Build the krew release archive for linux/amd64 and write its version and SHA-256 into plugin.yaml.

    python scripts/release.py [--out dist] [--manifest plugin.yaml]

The archive holds a self-contained one-directory build (PyInstaller, so users need no Python): the
`kubectl-dr` executable, the `_internal/` directory it loads its Python runtime and modules from, and
LICENSE. A one-file build unpacks its ~60 MB into a temporary directory at every start (2 s for `--help`,
paid on every `kubectl dr` call and every TAB); the directory starts as fast as a pip install.
The tar holds only directories and regular files, since krew's extraction refuses any other entry type.
The manifest is edited in place, line by line, so its layout and comments survive.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENTRY = REPO / "scripts" / "kubectl_dr_entry.py"


def package_version() -> str:
    text = (REPO / "kubectl_dr" / "__init__.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    if not match:
        raise SystemExit("error: no __version__ in kubectl_dr/__init__.py")
    return match.group(1)


# Modules that optional imports of our dependencies reach but kubectl-dr never loads: the standard library's
# GUI and tooling, build tools, and the test extra's packages. (cryptography stays: azure-storage-blob imports
# it when an Azure repository is opened.)
EXCLUDED_MODULES = ("tkinter", "pydoc_data", "lib2to3", "setuptools", "pkg_resources", "pip", "PyInstaller",
                    "pytest", "_pytest", "mypy", "IPython", "moto", "flask", "werkzeug", "jinja2",
                    "markupsafe", "aiohttp")
# botocore ships the API models of ~400 AWS services (tens of MB); kubectl-dr makes S3 clients only. STS and
# SSO stay because an AWS profile may take its credentials from an assumed role or from SSO.
BOTOCORE_SERVICES = ("s3", "sts", "sso", "sso-oidc")


def build_bundle(work: Path) -> Path:
    """The one-directory build: `kubectl-dr` beside `_internal/`."""
    args = [
        sys.executable, "-m", "PyInstaller", "--onedir", "--noconfirm", "--clean", "--log-level", "WARN",
        "--name", "kubectl-dr",
        # Shared libraries without symbols: the archive shrinks, nothing needs them to debug a user's run.
        "--strip",
        # Sub-commands import their modules lazily (fast --help); collect them explicitly.
        "--collect-submodules", "kubectl_dr",
        # etcd3 (and gRPC, protobuf) load through importlib, only for `--endpoints`: PyInstaller cannot see them.
        "--collect-submodules", "etcd3", "--hidden-import", "grpc", "--hidden-import", "google.protobuf.unknown_fields",
        # The oidc path's `kubernetes` package with its installed metadata, as pip leaves it (`version` itself
        # reads urllib3's version from the module, not from metadata).
        "--copy-metadata", "kubernetes",
        "--distpath", str(work / "dist"), "--workpath", str(work / "build"), "--specpath", str(work),
    ]
    for module in EXCLUDED_MODULES:
        args += ["--exclude-module", module]
    # etcd3's generated modules import only under protobuf's pure-Python implementation (as at run time, see
    # kubectl_dr/etcd/client.py); without it PyInstaller's probe of etcd3 fails and collects nothing.
    # Its own PyInstaller cache: --clean empties the shared one (~/.cache/pyinstaller) at the start, so two builds
    # at once (two test workers, or a developer's build beside the suite's) corrupted each other's bincache
    # index ("PyInstaller bincache may be corrupted"). With --clean a shared cache saves nothing anyway.
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
           "PYINSTALLER_CONFIG_DIR": str(work / "pyinstaller")}
    subprocess.run([*args, str(ENTRY)], check=True, cwd=REPO, env=env)
    bundle = work / "dist" / "kubectl-dr"
    prune_botocore(bundle / "_internal" / "botocore" / "data")
    return bundle


def prune_botocore(data: Path) -> None:
    """Keep the service models kubectl-dr's S3 client can load; the shared files at the top stay."""
    for service in data.iterdir():
        if service.is_dir() and service.name not in BOTOCORE_SERVICES:
            shutil.rmtree(service)


def make_archive(bundle: Path, out: Path, version: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"kubectl-dr_v{version}_linux_amd64.tar.gz"
    tmp = archive.with_suffix(".partial")
    try:
        # gzip level 6: 25 s less than tarfile's default 9 on this archive, for 0.3 % more bytes.
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            for path in sorted(bundle.rglob("*")):
                add(tar, path, path.relative_to(bundle).as_posix())
            add(tar, REPO / "LICENSE", "LICENSE")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(archive)
    return archive


def add(tar: tarfile.TarFile, path: Path, name: str) -> None:
    """One entry, owned by root, as a directory or a regular file: a symlink is stored as what it points to,
    since krew refuses symlinks in an archive."""
    if ".." in name:
        # krew refuses any name with "..", even inside a word.
        raise SystemExit(f"error: krew would refuse the archive entry {name!r}")
    if path.is_symlink() and path.is_dir():
        # The walk does not enter a linked directory: stored as a directory it would arrive empty.
        raise SystemExit(f"error: {name} links to a directory, which the archive cannot hold")
    info = tar.gettarinfo(str(path.resolve()), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if info.isdir():
        info.mode = 0o755
        tar.addfile(info)
        return
    info.mode = 0o755 if info.mode & 0o111 else 0o644
    with path.open("rb") as fh:
        tar.addfile(info, fh)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def update_manifest(manifest: Path, version: str, digest: str) -> None:
    text = manifest.read_text()
    text = re.sub(r"(?m)^(  version: )v\S+$", rf"\g<1>v{version}", text)
    text = re.sub(
        r"(?m)^(\s+uri: \S+/download/)v[^/]+/kubectl-dr_v[^_]+_", rf"\g<1>v{version}/kubectl-dr_v{version}_", text
    )
    text = re.sub(r"(?m)^(\s+sha256: )\S+$", rf"\g<1>{digest}", text)
    manifest.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="where the archive goes (default: dist/)")
    parser.add_argument("--manifest", type=Path, default=REPO / "plugin.yaml", help="krew manifest to update")
    args = parser.parse_args()
    version = package_version()
    with tempfile.TemporaryDirectory(prefix="kubectl-dr-release-") as work:
        bundle = build_bundle(Path(work))
        archive = make_archive(bundle, args.out, version)
    digest = sha256(archive)
    update_manifest(args.manifest, version, digest)
    print(f"{archive}\nsha256 {digest}\nupdated {args.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
