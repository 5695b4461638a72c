"""The krew manifest passes krew's rules, and the release archive's binary runs on its own."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from kubectl_dr import __version__
from kubectl_dr.cli.app import NOUNS
from kubectl_dr.repo import open_repository
from tests.azurite import Azurite
from tests.cli_runner import clean_env, executable, kubectl
from tests.release.build import ReleaseBuild, pyinstaller_installed
from tests.release.krew_install import KrewRefuses
from tests.release.krew_install import install as krew_install
from tests.release.krew_rules import validate
from tests.s3server import S3Server

REPO = Path(__file__).resolve().parents[2]


def test_committed_manifest_passes_krew_validation() -> None:
    manifest = yaml.safe_load((REPO / "plugin.yaml").read_text())
    assert validate("dr", manifest) == []
    spec = manifest["spec"]
    assert spec["version"] == f"v{__version__}"
    assert len(spec["shortDescription"]) <= 50
    assert spec["description"].strip() and spec["homepage"].startswith("https://")
    assert f"/v{__version__}/kubectl-dr_v{__version__}_linux_amd64.tar.gz" in spec["platforms"][0]["uri"]


def test_rules_catch_what_krew_refuses() -> None:
    manifest = yaml.safe_load((REPO / "plugin.yaml").read_text())
    manifest["spec"]["platforms"][0]["sha256"] = "ABC"
    manifest["spec"]["version"] = "0.1"
    manifest["spec"]["platforms"][0]["selector"] = {"matchLabels": {"distro": "debian"}}
    errors = validate("dr", manifest)
    assert any("sha256" in e for e in errors)
    assert any("version" in e for e in errors)
    assert any("distro" in e for e in errors)


def load_release_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release_script", REPO / "scripts" / "release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_manifest_installs_the_one_directory_layout(tmp_path: Path) -> None:
    # A stand-in for PyInstaller's one-directory output, symlinks included (PyInstaller links shared
    # libraries), packed by the release script and installed as krew does with the committed manifest.
    bundle = tmp_path / "bundle"
    (bundle / "_internal" / "lib").mkdir(parents=True)
    (bundle / "kubectl-dr").write_text("#!/bin/sh\necho \"$(basename \"$0\")\" \"$@\"\n")
    (bundle / "kubectl-dr").chmod(0o700)
    (bundle / "_internal" / "lib" / "libx.so.1").write_bytes(b"\x7fELF")
    (bundle / "_internal" / "libx.so.1").symlink_to("lib/libx.so.1")
    archive = load_release_script().make_archive(bundle, tmp_path / "dist", __version__)
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar}
    assert all(m.isdir() or m.isreg() for m in members.values())
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert members["kubectl-dr"].mode == 0o755 and members["LICENSE"].mode == 0o644
    assert members["_internal/libx.so.1"].size == 4

    platform = yaml.safe_load((REPO / "plugin.yaml").read_text())["spec"]["platforms"][0]
    link = krew_install("dr", f"v{__version__}", platform, archive, tmp_path / "krew")
    installed = link.resolve().parent
    assert sorted(p.name for p in installed.iterdir()) == ["LICENSE", "_internal", "kubectl-dr"]
    assert (installed / "_internal" / "lib" / "libx.so.1").read_bytes() == b"\x7fELF"
    result = subprocess.run([str(link), "--help"], capture_output=True, text=True, timeout=10)
    assert result.stdout == "kubectl-dr --help\n"


def test_release_archive_refuses_a_linked_directory_and_leaves_nothing(tmp_path: Path) -> None:
    # The walk does not enter a linked directory: packed, it would arrive empty and the build start broken.
    bundle = tmp_path / "bundle"
    (bundle / "_internal" / "lib").mkdir(parents=True)
    (bundle / "_internal" / "lib" / "libx.so.1").write_bytes(b"\x7fELF")
    (bundle / "_internal" / "alias").symlink_to("lib")
    with pytest.raises(SystemExit, match="_internal/alias links to a directory"):
        load_release_script().make_archive(bundle, tmp_path / "dist", __version__)
    assert list((tmp_path / "dist").iterdir()) == []


def test_krew_install_refuses_what_krew_refuses(tmp_path: Path) -> None:
    platform = {"bin": "kubectl-dr", "files": [{"from": "kubectl-dr", "to": "."}]}
    bad = (("kubectl-dr", tarfile.SYMTYPE), ("a..b", tarfile.REGTYPE), ("/kubectl-dr", tarfile.REGTYPE))
    for number, (name, kind) in enumerate(bad):
        archive = tmp_path / f"bad{number}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "elsewhere" if kind == tarfile.SYMTYPE else ""
            tar.addfile(info, io.BytesIO(b""))
        with pytest.raises(KrewRefuses):
            krew_install("dr", "v0.1.0", platform, archive, tmp_path / f"krew{number}")


@pytest.mark.slow
def test_release_archive_installs_with_krew_and_starts_fast(release_build: ReleaseBuild, seaweedfs: S3Server,
                                                            azurite: Azurite, tmp_path: Path) -> None:
    if not pyinstaller_installed():
        pytest.fail("PyInstaller is not installed: install the package with its `release` extra")
    release_build.wait(timeout=900)
    archive = release_build.out / f"kubectl-dr_v{__version__}_linux_amd64.tar.gz"
    data = yaml.safe_load(release_build.manifest.read_text())
    assert validate("dr", data) == []
    platform = data["spec"]["platforms"][0]
    assert platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    size_mib = archive.stat().st_size / 2**20
    print(f"\nrelease archive: {size_mib:.1f} MiB")
    # The one-file build was 59 MiB; what it carried that kubectl-dr never loads stays out.
    assert size_mib < 45

    # Installed as krew installs it, run through krew's link with no Python on the PATH.
    link = krew_install("dr", data["spec"]["version"], platform, archive, tmp_path / "krew")
    env = {"PATH": f"{link.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([link.name, "version", "--client"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Plugin Version: v{__version__}"
    assert "not installed" not in result.stdout

    # etcd3 and gRPC load lazily, through importlib, for an external etcd: they must be in the archive too.
    direct = subprocess.run([link.name, "etcd", "status", "--endpoints", "http://127.0.0.1:1"], capture_output=True,
                            text=True, timeout=60, env=env)
    assert direct.returncode == 1
    assert "no etcd endpoint answered" in direct.stderr and "UNAVAILABLE" in direct.stderr, direct.stderr

    # `auth-provider: oidc` users load the `kubernetes` package lazily (nothing else does): it must be in the
    # archive too. The provider is set up, then the dead server refuses the connection.
    oidc = tmp_path / "oidc-config"
    oidc.write_text(yaml.safe_dump({
        "clusters": [{"name": "dead", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "sso", "user": {"auth-provider": {"name": "oidc", "config": {
            "client-id": "x", "idp-issuer-url": "https://issuer.invalid", "id-token": "a.eyJzdWIiOiJ4In0.c"}}}}],
        "contexts": [{"name": "c", "context": {"cluster": "dead", "user": "sso"}}], "current-context": "c"}))
    lazily = subprocess.run([link.name, "version", "--kubeconfig", str(oidc)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert lazily.returncode == 1
    assert "The connection to the server 127.0.0.1:1 was refused" in lazily.stderr, lazily.stderr

    # Only the botocore models an S3 client loads are shipped: a real S3 server lists a backup through them.
    url = f"s3://{seaweedfs.new_bucket()}/release"
    s3_env = {**seaweedfs.env(), "KUBECTL_DR_CONFIG": os.devnull}
    with open_repository(url, {**os.environ, **s3_env}).create("pvc", {"namespace": "shop", "pvc": "db"},
                                                              "shop-db") as writer:
        with writer.open_part("data.tar") as part:
            part.write(b"data")
        backup_id = writer.commit({}).id
    listed = subprocess.run([link.name, "backups", "list", "--repo", url, "-o", "json"], capture_output=True,
                            text=True, timeout=60, env={**env, **s3_env})
    assert listed.returncode == 0, listed.stderr
    assert [item["id"] for item in json.loads(listed.stdout)["items"]] == [backup_id]
    # And the Azure SDK (with the cryptography it imports) is in the archive: Azurite lists one too.
    az_url = f"azure://{azurite.new_container()}/release"
    az_env = {**azurite.env(), "KUBECTL_DR_CONFIG": os.devnull}
    with open_repository(az_url, {**os.environ, **az_env}).create("pvc", {"namespace": "shop", "pvc": "db"},
                                                                 "shop-db") as writer:
        with writer.open_part("data.tar") as part:
            part.write(b"data")
        az_id = writer.commit({}).id
    az_listed = subprocess.run([link.name, "backups", "list", "--repo", az_url, "-o", "json"], capture_output=True,
                               text=True, timeout=60, env={**env, **az_env})
    assert az_listed.returncode == 0, az_listed.stderr
    assert [item["id"] for item in json.loads(az_listed.stdout)["items"]] == [az_id]

    # kubectl completes through `kubectl_complete-dr`: the same executable under that name.
    (link.parent / "kubectl_complete-dr").symlink_to(link.name)
    completed = subprocess.run(["kubectl_complete-dr", "version", "--cl"], capture_output=True, text=True,
                               timeout=60, env=env)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[0].split("\t")[0] == "--client"
    assert completed.stdout.splitlines()[-1].startswith(":")
    through_kubectl = subprocess.run([kubectl("1.33"), "__complete", "dr", ""], capture_output=True, text=True,
                                     timeout=60, env=env)
    names = [line.split("\t")[0] for line in through_kubectl.stdout.splitlines()]
    assert "pvc" in names and "etcd" in names and names[-1] == ":4", through_kubectl.stderr

    # The nouns are imported by name when first used (kubectl_dr/cli/lazy.py), where PyInstaller's analysis
    # sees no import: each one's help from the archive must be the pip install's.
    for noun in NOUNS:
        shipped = subprocess.run([link.name, noun.name, "--help"], capture_output=True, text=True, timeout=60,
                                 env=env)
        installed = subprocess.run([executable(), noun.name, "--help"], capture_output=True, text=True, timeout=60,
                                   env=clean_env())
        assert (shipped.returncode, shipped.stdout, shipped.stderr) == (0, installed.stdout, ""), noun.name

    # Every `kubectl dr` call and every TAB pays the start: compare with the pip install in the same run.
    archive_s = startup([str(link), "--help"], env)
    pip_s = startup([executable(), "--help"], clean_env())
    print(f"kubectl-dr --help: krew archive {archive_s:.3f} s, pip install {pip_s:.3f} s (best of 5)")
    # Generous (timing on a shared machine is noisy); the one-file build took 5 to 10 times pip's time.
    assert archive_s <= 4 * pip_s


def startup(args: list[str], env: dict[str, str]) -> float:
    """Best of 5 wall-clock runs after one warm-up (the first run also pays the disk cache)."""
    times = []
    for _ in range(6):
        began = time.perf_counter()
        result = subprocess.run(args, capture_output=True, env=env, timeout=60)
        times.append(time.perf_counter() - began)
        assert result.returncode == 0, result.stderr
    return min(times[1:])
