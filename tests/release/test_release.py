"""The krew manifest passes krew's rules, and the release archive's binary runs on its own."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from kubectl_dr import __version__
from tests.release.build import ReleaseBuild, pyinstaller_installed
from tests.release.krew_rules import validate

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


@pytest.mark.slow
def test_release_archive_builds_extracts_and_runs(release_build: ReleaseBuild, tmp_path: Path) -> None:
    if not pyinstaller_installed():
        pytest.fail("PyInstaller is not installed: install the package with its `release` extra")
    release_build.wait(timeout=900)
    archive = release_build.out / f"kubectl-dr_v{__version__}_linux_amd64.tar.gz"
    data = yaml.safe_load(release_build.manifest.read_text())
    assert validate("dr", data) == []
    assert data["spec"]["platforms"][0]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()

    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["LICENSE", "kubectl-dr"]
        tar.extractall(unpacked, filter="data")
    binary = unpacked / "kubectl-dr"
    # No Python on the path: the executable must carry everything it needs.
    result = subprocess.run([str(binary), "version", "--client"], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Plugin Version: v{__version__}"
    assert "not installed" not in result.stdout
