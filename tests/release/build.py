"""One release build, run as a user runs it: `scripts/release.py` into its own directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ReleaseBuild:
    """One `scripts/release.py` run into its own directory, on a copy of plugin.yaml."""

    work: Path
    proc: subprocess.Popen[bytes]

    @property
    def out(self) -> Path:
        return self.work / "dist"

    @property
    def manifest(self) -> Path:
        return self.work / "plugin.yaml"

    @property
    def log(self) -> Path:
        return self.work / "build.log"

    @classmethod
    def start(cls) -> ReleaseBuild:
        work = Path(tempfile.mkdtemp(prefix="kubectl-dr-release-"))
        shutil.copy(REPO / "plugin.yaml", work / "plugin.yaml")
        with (work / "build.log").open("wb") as log:
            proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "release.py"), "--out",
                                     str(work / "dist"), "--manifest", str(work / "plugin.yaml")],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        return cls(work, proc)

    def wait(self, timeout: float) -> None:
        """Until the build ends: it must have succeeded (its log is the failure message)."""
        code = self.proc.wait(timeout=timeout)
        assert code == 0, f"scripts/release.py exited {code}:\n{self.log.read_text(errors='replace')}"

    def discard(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def pyinstaller_installed() -> bool:
    return shutil.which("pyinstaller") is not None or subprocess.run(
        [sys.executable, "-c", "import PyInstaller"], capture_output=True).returncode == 0
