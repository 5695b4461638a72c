"""Who a run is: recorded on its leases and its pods, so any later run can tell it is alive or dead."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# On pods and leases: which run made them. The lease says whether that run is still alive.
RUN_ID_LABEL = "kubectl-dr.io/run-id"
LEASE_ANNOTATION = "kubectl-dr.io/lease"
HOLDER_ANNOTATION = "kubectl-dr.io/holder"
COMMAND_ANNOTATION = "kubectl-dr.io/command"


def new_run_id(moment: datetime | None = None) -> str:
    """When and which run: sortable, unique enough to tell two runs apart (a valid label value)."""
    return f"{(moment or datetime.now(timezone.utc)):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Run:
    command: str  # what the user ran, e.g. "pvc restore shop/data-db-0"
    id: str = field(default_factory=new_run_id)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    @property
    def holder(self) -> str:
        """A Lease's holderIdentity: host, pid and run id (one line, readable in `kubectl get lease`)."""
        return f"{self.host}/{self.pid}/{self.id}"

    def labels(self) -> dict[str, str]:
        return {RUN_ID_LABEL: self.id}

    def annotations(self, lease: str | None = None) -> dict[str, str]:
        out = {HOLDER_ANNOTATION: self.holder, COMMAND_ANNOTATION: self.command[:1000]}
        if lease:
            out[LEASE_ANNOTATION] = lease
        return out

    def describe(self) -> dict[str, Any]:
        return {"runID": self.id, "host": self.host, "pid": self.pid, "command": self.command}


@dataclass(frozen=True)
class Holder:
    """A holderIdentity read back: another run (or an earlier one of ours)."""

    host: str
    pid: int | None
    run_id: str

    @classmethod
    def parse(cls, text: str) -> Holder:
        host, _, rest = text.partition("/")
        pid, _, run_id = rest.partition("/")
        return cls(host, int(pid) if pid.isdigit() else None, run_id)

    def dead_here(self) -> bool:
        """True when the holder ran on this machine and its process is gone: its lease need not expire."""
        if self.host != socket.gethostname() or self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        try:  # a recycled pid running something else is not the holder either
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                return b"kubectl" not in f.read()
        except OSError:
            return False
