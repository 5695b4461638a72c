"""The two etcd versions the loopback cluster runs, and where their binaries are on the machine.

3.4 is Debian 12's etcd-server/etcd-client (/usr/bin); 3.5 is Debian 13's, unpacked by .ci/run and
scripts/quickstart.sh into a directory of its own (ETCD_35_ROOT) so both versions live side by side.
Only 3.5 has etcdutl (and `snapshot restore --bump-revision/--mark-compacted`).
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ETCD_35_ROOT = Path("/opt/etcd-3.5")


@functools.cache
def _reported(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    m = re.search(r"etcd Version: (\d+\.\d+\.\d+)", out)
    return m.group(1) if m else None


@dataclass(frozen=True)
class EtcdVersion:
    minor: str       # "3.5": what `up --etcd-version` takes
    expected: str    # "3.5.16": what the packages .ci/run installs ship
    bin_dir: Path

    @property
    def version(self) -> str:
        """What the binary reports (a Debian point release may move the patch version on)."""
        return _reported(self.etcd) or self.expected

    @property
    def image_tag(self) -> str:
        """kubeadm's registry.k8s.io/etcd tag for this version (VERSION-0)."""
        return f"{self.version}-0"

    @property
    def etcd(self) -> Path:
        return self.bin_dir / "etcd"

    @property
    def etcdctl(self) -> Path:
        return self.bin_dir / "etcdctl"

    @property
    def etcdutl(self) -> Path | None:
        path = self.bin_dir / "etcdutl"
        return path if self.minor != "3.4" else None

    @property
    def image(self) -> str:
        return f"registry.k8s.io/etcd:{self.image_tag}"

    def binaries(self) -> list[Path]:
        return [self.etcd, self.etcdctl, *([self.etcdutl] if self.etcdutl else [])]


VERSIONS = {
    "3.4": EtcdVersion("3.4", "3.4.23", Path("/usr/bin")),
    "3.5": EtcdVersion("3.5", "3.5.16", ETCD_35_ROOT / "usr" / "bin"),
}
DEFAULT = "3.5"


def for_image(name: str) -> EtcdVersion | None:
    """The version a registry.k8s.io/etcd:X.Y.Z-N reference runs here (by major.minor), if we have it."""
    if "@" in name:
        name = name.split("@", 1)[0]
    tag = name.rsplit(":", 1)[-1] if ":" in name.rsplit("/", 1)[-1] else ""
    return VERSIONS.get(".".join(tag.split("-", 1)[0].split(".")[:2]))
