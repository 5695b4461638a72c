"""`coordination.k8s.io/v1` Leases that keep two runs off one claim (or one etcd member).

A run takes the lease before it changes anything and renews it while it works (`Heartbeat`); a second
run finds it held and refuses, naming the holder and how long ago it renewed. The lease expires
`LEASE_SECONDS` (plus a margin for clocks that disagree) after its last renewal, so a run killed with
SIGKILL blocks the claim for about a minute and a half; a holder that ran on this machine and whose
process is gone is known dead at once. Taking over an expired lease is what makes the pods of the dead
run leftovers (see `volumes.exposer`). Every write carries the resourceVersion it was computed from:
two runs racing for one lease cannot both win.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from kubectl_dr import units
from kubectl_dr.errors import ApiError, DrError
from kubectl_dr.runs.run import COMMAND_ANNOTATION, Holder, Run

if TYPE_CHECKING:  # a handle passed in: the client's import is paid by whoever connects, not by every start
    from kubectl_dr.kube.client import Kube

API = "/apis/coordination.k8s.io/v1"
LEASE_SECONDS = 60
# Renewals are written with the writer's clock and read with ours: this much disagreement is tolerated.
CLOCK_SKEW = timedelta(seconds=30)
ATTEMPTS = 5
MANAGED = {"app.kubernetes.io/managed-by": "kubectl-dr"}


class LeaseHeld(DrError):
    """Another run holds the lease: the command refuses before changing anything."""


class LeaseLost(DrError):
    """Our lease was taken by another run (ours had expired: this run stalled for longer than its term)."""


def lease_name(kind: str, name: str) -> str:
    """`kubectl-dr-pvc-data-db-0`; long names are cut and keep a hash, so they stay unique and valid."""
    full = f"kubectl-dr-{kind}-{name}".lower()
    if len(full) <= 253:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[:242].rstrip('-.')}-{digest}"


def micro_time(moment: datetime) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds, in UTC."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "at an unknown time"
    return f"{units.age((now - moment).total_seconds())} ago"


class Lease:
    def __init__(self, kube: Kube, namespace: str, name: str, run: Run, *, what: str,
                 duration: int = LEASE_SECONDS, dry_run: str = "none") -> None:
        self.kube, self.namespace, self.name, self.run = kube, namespace, name, run
        self.what = what  # "claim shop/data-db-0": for messages
        self.duration = duration
        self.dry_run = dry_run
        self.obj: dict[str, Any] | None = None
        self.previous: Holder | None = None  # the dead run we took the lease over from
        self.held = False
        # The heartbeat renews from its own thread while the run may be releasing: a renewal that found the
        # lease gone would take it again, leaving a released run's lease behind. One at a time.
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        return f"{API}/namespaces/{self.namespace}/leases/{self.name}"

    # --- reading -------------------------------------------------------------------------------------
    def read(self) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.kube.get(self.path)
            return obj
        except ApiError as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:
                exc.hint = self._rbac_hint()
            raise

    def _rbac_hint(self) -> str:
        return (f"kubectl dr takes a Lease ({self.name}) in namespace {self.namespace} so that two runs never work "
                f"on {self.what} at once: it needs get, create, update and delete on leases "
                "(coordination.k8s.io) there; see the README's RBAC.")

    def expired(self, obj: dict[str, Any], now: datetime | None = None) -> bool:
        spec = obj.get("spec") or {}
        holder = spec.get("holderIdentity")
        if not holder:
            return True
        if Holder.parse(str(holder)).dead_here():
            return True
        now = now or datetime.now(timezone.utc)
        renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
        if renewed is None:
            return True
        return now > renewed + timedelta(seconds=int(spec.get("leaseDurationSeconds") or self.duration)) + CLOCK_SKEW

    def held_by_other(self, obj: dict[str, Any] | None) -> str | None:
        """Why the lease cannot be ours now, or None."""
        if obj is None or self.expired(obj):
            return None
        spec = obj.get("spec") or {}
        holder = str(spec.get("holderIdentity"))
        if holder == self.run.holder:
            return None
        now = datetime.now(timezone.utc)
        who = Holder.parse(holder)
        command = ((obj.get("metadata") or {}).get("annotations") or {}).get(COMMAND_ANNOTATION)
        doing = f" ({command})" if command else ""
        return (f"another kubectl dr run is working on {self.what}: run {who.run_id or holder} on host {who.host} "
                f"(pid {who.pid}){doing}, which took it {_ago(parse_time(spec.get('acquireTime')), now)} and "
                f"renewed its lease {_ago(parse_time(spec.get('renewTime')), now)}")

    # --- holding -------------------------------------------------------------------------------------
    def _body(self, now: datetime, existing: dict[str, Any] | None) -> dict[str, Any]:
        spec = (existing or {}).get("spec") or {}
        transitions = int(spec.get("leaseTransitions") or 0)
        if existing is not None and spec.get("holderIdentity") not in (None, "", self.run.holder):
            transitions += 1
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                    "labels": {**((existing or {}).get("metadata") or {}).get("labels", {}),
                                               **MANAGED},
                                    "annotations": self.run.annotations()}
        if existing is not None:
            metadata["resourceVersion"] = existing["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": self.run.holder, "leaseDurationSeconds": self.duration,
                     "acquireTime": micro_time(now), "renewTime": micro_time(now), "leaseTransitions": transitions},
        }

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeld naming the run that has it. Dry runs write nothing
        (`server` sends the write with dryRun=All, so RBAC and admission still answer)."""
        dry = {"dryRun": "All"} if self.dry_run == "server" else None
        for _ in range(ATTEMPTS):
            existing = self.read()
            why = self.held_by_other(existing)
            if why:
                raise LeaseHeld(why, hint="Wait for it to finish (or stop it: Ctrl-C cleans up), then run this "
                                          "again. Nothing was changed.")
            if self.dry_run == "client":
                return
            now = datetime.now(timezone.utc)
            body = self._body(now, existing)
            try:
                if existing is None:
                    self.obj = self.kube.request("POST", f"{API}/namespaces/{self.namespace}/leases", body=body,
                                                 query=dry)
                else:
                    self.obj = self.kube.request("PUT", self.path, body=body, query=dry)
            except ApiError as exc:
                if exc.status == 409:  # someone else wrote it between our read and our write: look again
                    continue
                if exc.status == 403:
                    exc.hint = self._rbac_hint()
                raise
            if existing is not None:
                holder = ((existing.get("spec") or {}).get("holderIdentity"))
                if holder and holder != self.run.holder:
                    self.previous = Holder.parse(str(holder))
            self.held = self.dry_run == "none"
            return
        raise DrError(f"the lease {self.namespace}/{self.name} kept changing while kubectl dr tried to take it")

    def renew(self) -> None:
        """Push the renewal time on; LeaseLost if another run has taken the lease meanwhile."""
        with self._lock:
            self._renew()

    def _renew(self) -> None:
        if not self.held or self.obj is None:
            return
        for _ in range(ATTEMPTS):
            body = dict(self.obj)
            body["spec"] = {**(self.obj.get("spec") or {}), "renewTime": micro_time(datetime.now(timezone.utc))}
            try:
                self.obj = self.kube.request("PUT", self.path, body=body)
                return
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise
            current = self.read()
            if current is None:  # deleted by someone: hold it again
                self.obj = self.kube.request("POST", f"{API}/namespaces/{self.namespace}/leases",
                                             body=self._body(datetime.now(timezone.utc), None))
                return
            if (current.get("spec") or {}).get("holderIdentity") != self.run.holder:
                self.held = False
                raise LeaseLost(f"another run took the lease on {self.what}: this run stalled for longer than "
                                f"{units.duration(self.duration)}")
            self.obj = current
        raise DrError(f"the lease {self.namespace}/{self.name} kept changing while kubectl dr renewed it")

    def release(self) -> None:
        """Delete the lease if it is still ours (precondition on its resourceVersion)."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        if not self.held or self.obj is None:
            return
        self.held = False
        for _ in range(ATTEMPTS):
            rv = (self.obj.get("metadata") or {}).get("resourceVersion")
            try:
                self.kube.request("DELETE", self.path, body={"preconditions": {"resourceVersion": rv}})
                return
            except ApiError as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    raise
            current = self.read()
            if current is None or (current.get("spec") or {}).get("holderIdentity") != self.run.holder:
                return
            self.obj = current


def remove_restored(kube: Kube, namespace: str, name: str, run_id: str) -> bool:
    """Delete the lease `name` if the run `run_id` holds it: a run that is over, whose lease came back with data
    restored from a snapshot taken while it ran (a leftover that, restored from a recent snapshot, looks held and
    keeps its claim blocked for up to a lease term). A lease another run holds now is left alone. True if
    deleted."""
    path = f"{API}/namespaces/{namespace}/leases/{name}"
    try:
        obj = kube.get(path)
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    if Holder.parse(str((obj.get("spec") or {}).get("holderIdentity") or "")).run_id != run_id:
        return False
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        kube.request("DELETE", path, body={"preconditions": {"resourceVersion": rv}})
    except ApiError as exc:
        if exc.status in (404, 409):  # gone, or taken by another run meanwhile
            return False
        raise
    return True
