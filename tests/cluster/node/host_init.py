"""The node's init system, as far as a tool reaches it from a pod: `systemctl` on the node's root.

On a real node a privileged pod with hostPath / at /host restarts the kubelet with
`chroot /host systemctl restart kubelet` (what `oc debug node/NAME -- chroot /host …` does); systemctl then
asks systemd through its socket under /run/systemd. The loopback node's root (DIR/nodes/NODE/) gets just
enough of a userland for that: Debian's static busybox as /bin/sh and the few tools the script needs, and
/usr/bin/systemctl, a script that puts the request in a file under /run/systemd/requests/ and waits for the
answer. The runner below (one per node, in the server process) carries requests out:

- `restart kubelet`: the node's kubelet ends its loops and starts afresh (registration, a "Starting
  kubelet." event, a relist), while the pods, which belong to the container runtime, keep running;
- `is-active kubelet`: "active";
- any other unit: "Unit NAME.service not found." (exit 5, as systemctl); any other verb: exit 1.

systemd's D-Bus, unit files and every other unit are beyond a test cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tests.cluster.node.images import BUSYBOX_BINARY

if TYPE_CHECKING:
    from tests.cluster.node.kubelet import Kubelet

log = logging.getLogger("tests.cluster.node")
REQUESTS = "run/systemd/requests"
POLL_SECONDS = 0.2
TOOLS = ("sh", "mkdir", "mv", "rm", "sleep", "cat", "date")

SYSTEMCTL = r"""#!/bin/sh
# systemctl of a loopback node: the request goes to the node's init through /run/systemd/requests.
verb=""; unit=""
for a in "$@"; do
  case "$a" in
    -*) ;;
    *) if [ -z "$verb" ]; then verb=$a; elif [ -z "$unit" ]; then unit=${a%.service}; fi ;;
  esac
done
case "$verb" in
  restart|is-active) ;;
  *) echo "Unknown command verb '$verb'." >&2; exit 1 ;;
esac
[ -n "$unit" ] || { echo "Too few arguments." >&2; exit 1; }
d=/run/systemd/requests
mkdir -p "$d"
id="$$-$(date +%s)"
echo "$verb $unit" > "$d/.$id" && mv "$d/.$id" "$d/$id"
i=0
while [ ! -e "$d/$id.done" ]; do
  i=$((i + 1))
  if [ "$i" -gt 1200 ]; then echo "Failed to $verb $unit.service: Connection timed out" >&2; exit 1; fi
  sleep 0.1
done
{ read -r code; msg=$(cat); } < "$d/$id.done"
rm -f "$d/$id.done"
if [ -n "$msg" ]; then
  if [ "$code" = 0 ]; then echo "$msg"; else echo "$msg" >&2; fi
fi
exit "$code"
"""


def install_userland(root: Path) -> None:
    """busybox as /bin/sh (and the tools systemctl uses), /usr/bin/systemctl; kept if already there."""
    bin_dir, usr_bin = root / "bin", root / "usr" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    usr_bin.mkdir(parents=True, exist_ok=True)
    busybox = bin_dir / "busybox"
    if not busybox.exists():
        shutil.copy2(BUSYBOX_BINARY, busybox)
    for tool in TOOLS:
        link = bin_dir / tool
        if not link.is_symlink() and not link.exists():
            link.symlink_to("busybox")
    systemctl = usr_bin / "systemctl"
    if not systemctl.exists() or systemctl.read_text() != SYSTEMCTL:
        systemctl.write_text(SYSTEMCTL)
    systemctl.chmod(0o755)


class HostInit:
    def __init__(self, root: Path, kubelet: Kubelet) -> None:
        self.root = root
        self.kubelet = kubelet
        install_userland(root)
        self.requests = root / REQUESTS

    async def run(self) -> None:
        while True:
            for path in sorted(self.requests.glob("[!.]*")) if self.requests.is_dir() else []:
                if path.name.endswith(".done"):
                    continue
                try:
                    verb, _, unit = path.read_text().strip().partition(" ")
                    path.unlink()
                except OSError:
                    continue
                code, message = await self.handle(verb, unit)
                temp = path.with_name(f".{path.name}.done")
                temp.write_text(f"{code}\n{message}")
                os.replace(temp, path.with_name(f"{path.name}.done"))
            await asyncio.sleep(POLL_SECONDS)

    async def handle(self, verb: str, unit: str) -> tuple[int, str]:
        if unit != "kubelet":
            if verb == "is-active":
                return 3, "inactive"
            return 5, f"Failed to {verb} {unit}.service: Unit {unit}.service not found."
        if verb == "is-active":
            return 0, "active"
        log.info("node %s: systemctl restart kubelet", self.kubelet.node_name)
        await self.kubelet.restart()
        return 0, ""
