"""An external etcd: members on hosts of their own, run as a service manager would run them.

`up --external-etcd` plans one member per control-plane node on hosts named etcd-1, etcd-2, … that are not
nodes of the cluster (no kubelet, no pods can reach their files): DIR/nodes/etcd-N/ holds each host's
/etc/kubernetes/pki/etcd and /var/lib/etcd. The server process runs the members as plain processes with
kubeadm's flags (the layout kubeadm documents for external etcd), restarts one that exits (systemd's
Restart=always), and stops one while its host has `etc/etcd/disabled` (`systemctl stop etcd`;
`python -m tests.cluster stop-member --dir DIR etcd-2`). The API servers' --etcd-servers list every member.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import subprocess
import time

from tests.cluster.control import etcd_members as em
from tests.cluster.control.layout import Layout
from tests.cluster.etcd_versions import EtcdVersion

log = logging.getLogger("tests.cluster.external_etcd")
POLL_SECONDS = 0.5
RESTART_DELAY = 1.0
STOP_GRACE = 10.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Like the sandboxes' --die-with-parent: a killed server process leaves no member behind.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ExternalEtcd:
    def __init__(self, layout: Layout, members: list[em.Member], version: EtcdVersion) -> None:
        self.layout, self.members, self.version = layout, members, version
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._exited_at: dict[str, float] = {}

    def _start(self, m: em.Member) -> None:
        host = self.layout.node(m.name)
        (host / "var" / "lib" / "etcd").mkdir(parents=True, exist_ok=True, mode=0o700)
        command = em.etcd_command(m, self.members, host_root=str(host))
        with open(self.layout.logs / f"etcd-{m.name}.log", "ab") as out:
            self.procs[m.name] = subprocess.Popen([str(self.version.etcd), *command[1:]], stdin=subprocess.DEVNULL,
                                                  stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        log.info("external etcd %s: started (pid %d)", m.name, self.procs[m.name].pid)

    async def _stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        log.info("external etcd %s: stopped", name)

    async def sync(self) -> None:
        for m in self.members:
            wanted = not em.disabled_flag(self.layout.node(m.name)).exists()
            proc = self.procs.get(m.name)
            if proc is not None and proc.poll() is not None and wanted:
                log.warning("external etcd %s: exited with %s; restarting", m.name, proc.returncode)
                del self.procs[m.name]
                self._exited_at[m.name] = time.monotonic()
                proc = None
            if wanted and proc is None:
                if time.monotonic() - self._exited_at.get(m.name, 0.0) >= RESTART_DELAY:
                    self._start(m)
            elif not wanted and proc is not None:
                await self._stop(m.name)

    async def run(self) -> None:
        while True:
            await self.sync()
            await asyncio.sleep(POLL_SECONDS)

    async def stop_all(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                await self._stop(name)
