#!/usr/bin/env python3
"""Build the krew release archive for linux/amd64 and write its version and SHA-256 into plugin.yaml.

    python scripts/release.py [--out dist] [--manifest plugin.yaml]

The archive holds one self-contained executable (PyInstaller, so users need no Python) and LICENSE.
The manifest is edited in place, line by line, so its layout and comments survive.
"""

from __future__ import annotations

import argparse
import hashlib
import re
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


def build_executable(work: Path) -> Path:
    subprocess.run(
        [
            sys.executable, "-m", "PyInstaller", "--onefile", "--noconfirm", "--clean", "--log-level", "WARN",
            "--name", "kubectl-dr",
            # Sub-commands import their modules lazily (fast --help); collect them explicitly.
            "--collect-submodules", "kubectl_dr",
            # `version` reads the client library's version from its installed metadata.
            "--copy-metadata", "kubernetes",
            "--distpath", str(work / "dist"), "--workpath", str(work / "build"), "--specpath", str(work),
            str(ENTRY),
        ],
        check=True,
        cwd=REPO,
    )
    return work / "dist" / "kubectl-dr"


def make_archive(binary: Path, out: Path, version: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"kubectl-dr_v{version}_linux_amd64.tar.gz"
    tmp = archive.with_suffix(".partial")
    with tarfile.open(tmp, "w:gz") as tar:
        for path, name in ((binary, "kubectl-dr"), (REPO / "LICENSE", "LICENSE")):
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755 if name == "kubectl-dr" else 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    tmp.replace(archive)
    return archive


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
        binary = build_executable(Path(work))
        archive = make_archive(binary, args.out, version)
    digest = sha256(archive)
    update_manifest(args.manifest, version, digest)
    print(f"{archive}\nsha256 {digest}\nupdated {args.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
