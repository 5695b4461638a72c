"""Commands in a mon's pod (container ``mon``): its admin socket, and the monmap tools.

The admin socket answers ``mon_status`` whether or not there is a quorum, which is why status and the
restore's preflight ask it rather than the cluster (``ceph status`` hangs without quorum).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubectl_dr.errors import DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import ExecResult, Timeouts, open_exec

CONTAINER = "mon"
ASOK = "/run/ceph/ceph-mon.{id}.asok"


@dataclass(frozen=True)
class MonStatus:
    """What one mon says about itself through its admin socket."""

    name: str
    state: str
    election_epoch: int
    quorum: tuple[str, ...]
    monmap_epoch: int
    monmap: tuple[str, ...]
    fsid: str

    @classmethod
    def parse(cls, data: dict[str, Any]) -> MonStatus:
        monmap = data.get("monmap") or {}
        mons = [str(m.get("name")) for m in monmap.get("mons") or []]
        ranks = {int(m.get("rank", i)): str(m.get("name")) for i, m in enumerate(monmap.get("mons") or [])}
        quorum = tuple(sorted(ranks.get(int(r), str(r)) for r in data.get("quorum") or []))
        return cls(name=str(data.get("name")), state=str(data.get("state")),
                   election_epoch=int(data.get("election_epoch") or 0), quorum=quorum,
                   monmap_epoch=int(monmap.get("epoch") or 0), monmap=tuple(mons), fsid=str(monmap.get("fsid") or ""))

    @property
    def in_quorum(self) -> bool:
        return self.state in ("leader", "peon") and bool(self.quorum)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "electionEpoch": self.election_epoch, "quorum": list(self.quorum),
                "monmapEpoch": self.monmap_epoch, "monmap": list(self.monmap), "fsid": self.fsid}


def run(kube: Kube, namespace: str, pod: str, command: list[str], what: str,
        timeout: float = 120.0) -> bytes:
    """Run ``command`` in the pod's mon container; its stdout, or DrError with its stderr and exit status."""
    out = bytearray()
    stream = open_exec(kube, namespace, pod, command, container=CONTAINER,
                       timeouts=Timeouts(connect=30.0, idle=timeout))
    result: ExecResult = stream.run(stdout=out.extend)
    if not result.ok:
        err = result.stderr.decode(errors="replace").strip()[-400:]
        raise DrError(f"{what} in pod {namespace}/{pod}: {result.describe()}" + (f": {err}" if err else ""))
    return bytes(out)


def mon_status(kube: Kube, namespace: str, pod: str, mon: str) -> MonStatus:
    out = run(kube, namespace, pod, ["ceph", "--admin-daemon", ASOK.format(id=mon), "mon_status"],
              f"mon_status of mon {mon}", timeout=30.0)
    try:
        return MonStatus.parse(json.loads(out))
    except (ValueError, TypeError) as exc:
        raise DrError(f"mon {mon}: cannot read its mon_status answer ({exc})") from None
