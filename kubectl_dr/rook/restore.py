"""`kubectl dr rook mon restore-quorum GOOD`: Rook's "Restoring Mon Quorum", checked, journaled, undoable.

The steps are those of Rook's runbook and of `kubectl rook-ceph mons restore-quorum`, in that order; what we
add: GOOD must hold the newest state of the mons that answer; every object the run changes, and GOOD's mon
store (read from the maintenance pod while the mon is stopped), go to the repository first, checked with
byte count and SHA-256 on both sides; the extracted and the injected monmap are read back with
`monmaptool --print` and must say what we meant; each step is recorded in a ConfigMap of ours before the
next starts, so a rerun resumes where a run stopped, and `--undo` puts every object back while the store
is still untouched (before the inject). Unlike the plugin, the bad mons' Deployments, Services and claims
are left in place (scaled to 0) for Rook to replace once the operator runs again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubectl_dr import cleanup
from kubectl_dr.errors import ApiError, DrError, Interrupted, VerificationError
from kubectl_dr.kube.exec import Timeouts, open_exec
from kubectl_dr.kube.identity import identity_for_backup
from kubectl_dr.pauses import pauses
from kubectl_dr.repo import Repository
from kubectl_dr.rook import monexec, objects
from kubectl_dr.rook.monmap import Monmap, check_good
from kubectl_dr.rook.runbook import MONMAP, runbook
from kubectl_dr.rook.status import MAINTENANCE_LABEL, ask, mon_pod, pod_state
from kubectl_dr.runs import Heartbeat, Lease, lease_name
from kubectl_dr.session import Session

BACKUP_TYPE = "rook-mon-quorum"
JOURNAL = "kubectl-dr-rook-restore-quorum"
DO_NOT_RECONCILE = "ceph.rook.io/do-not-reconcile"
STORE_TAR = "/tmp/kubectl-dr-mon-store.tar"
# Test hook: stop as Ctrl-C would, right after this step is journaled (the e2e tests interrupt every step).
INTERRUPT_AFTER_ENV = "KUBECTL_DR_TEST_INTERRUPT_AFTER"
STEPS = ("saved", "operator-down", "bad-mons-down", "maintenance", "store-backup", "monmap-edited",
         "inject-started", "monmap-injected", "endpoints", "maintenance-removed", "deployment-restored", "quorum",
         "operator-up")
RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_VOLATILE = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")


@dataclass
class Result:
    good: str
    bad: list[str]
    backup_id: str | None
    location: str | None
    steps: list[str]
    quorum: list[str]
    left_for_rook: list[str]
    runbook: str
    undone: bool = False
    dry_run: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"good": self.good, "bad": self.bad, "backup": self.backup_id, "location": self.location,
                "steps": self.steps, "quorum": self.quorum, "leftForRook": self.left_for_rook,
                "undone": self.undone, "dryRun": self.dry_run, "runbook": self.runbook, **self.details}


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as it is to be put back: no server-set fields, no status."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in _VOLATILE:
        meta.pop(key, None)
    (meta.get("annotations") or {}).pop("deployment.kubernetes.io/revision", None)
    return out


class Job:
    def __init__(self, session: Session, namespace: str, good: str, *, operator_namespace: str | None = None,
                 timeout: float = 300.0, runbook_dir: Path | None = None) -> None:
        self.session = session
        self.kube = session.kube
        self.namespace = namespace
        self.good = objects.valid_mon_id(good)
        self.console = session.console
        self.objs = objects.Objects(self.kube, namespace, operator_namespace)
        self.timeout = timeout
        self.runbook_dir = runbook_dir  # where the break-glass runbook is written as a file (None: not written)
        self.journal: dict[str, Any] = {}

    # --- lease and runbook --------------------------------------------------------------------------------

    def _take_lease(self) -> None:
        """The run lease of this namespace's restore-quorum, kept alive while the run changes things and
        released at exit: a second run (or an --undo) started meanwhile stops naming the run that holds it,
        where the journal alone would have let both act on the same objects."""
        lease = Lease(self.kube, self.namespace, lease_name("rook", "restore-quorum"), self.session.run,
                      what=f"the restore-quorum of namespace {self.namespace}")
        lease.acquire()
        heartbeat = Heartbeat(self.console.warn)
        heartbeat.hold(lease)

        def release() -> None:
            heartbeat.stop()
            lease.release()

        cleanup.current().push("release the restore-quorum lease", release)

    def _write_runbook(self, book: str) -> None:
        """The runbook as a local file too: the copy in the backup is out of reach if the repository is remote
        and the tool cannot run. Written once the run holds the lease, before it changes anything."""
        if self.runbook_dir is None:
            return
        run_id = str(self.journal.get("runId"))
        if not RUN_ID.fullmatch(run_id):  # the journal is a ConfigMap anyone may edit: no path from it
            run_id = self.session.run.id
        path = self.runbook_dir / f"rook-restore-quorum-runbook-{run_id}.sh"
        try:
            path.write_text(book)
            self.console.say(f"break-glass runbook written to {path}")
        except OSError as exc:
            self.console.warn(f"cannot write the runbook to {path} ({exc.strerror}); it is part runbook.sh of "
                              "the backup")

    # --- journal ----------------------------------------------------------------------------------------

    def read_journal(self) -> dict[str, Any] | None:
        cm = self.objs.find("configmaps", JOURNAL)
        if cm is None:
            return None
        try:
            data: dict[str, Any] = json.loads((cm.get("data") or {})["journal"])
        except (KeyError, ValueError) as exc:
            raise DrError(f"ConfigMap {self.namespace}/{JOURNAL} is not a journal kubectl dr can read ({exc})",
                          hint="Inspect it; delete it only if no restore-quorum run is in progress.") from None
        return data

    def _write_journal(self, *, create: bool = False) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": JOURNAL, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/managed-by": "kubectl-dr"}},
                "data": {"journal": json.dumps(self.journal, sort_keys=True)}}
        path = f"/api/v1/namespaces/{self.namespace}/configmaps"
        if create:
            # The first write creates: of two runs started at once, the second gets 409 and stops here.
            try:
                self.kube.request("POST", path, body=body)
            except ApiError as exc:
                if exc.status == 409:
                    raise DrError(f"another restore-quorum run started in namespace {self.namespace} just now "
                                  f"(ConfigMap {JOURNAL} exists)", hint="Let it finish, or run this command again "
                                  "to resume it once it has stopped.") from None
                raise
            return
        try:
            self.kube.request("PUT", f"{path}/{JOURNAL}", body=body)
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.kube.request("POST", path, body=body)

    def _done(self, step: str) -> bool:
        return step in self.journal.get("steps", [])

    def _record(self, step: str, **facts: Any) -> None:
        first = not self.journal.get("steps")
        self.journal.setdefault("steps", []).append(step)
        self.journal.update(facts)
        self._write_journal(create=first)
        self.console.say(f"step {len(self.journal['steps'])}/{len(STEPS)} done: {step}")
        if os.environ.get(INTERRUPT_AFTER_ENV) == step:
            raise Interrupted("SIGINT")

    # --- preflight --------------------------------------------------------------------------------------

    def plan(self) -> dict[str, Any]:
        """What the run will do, from the objects as they are now (nothing changed)."""
        cm = self.objs.find("configmaps", objects.ENDPOINTS)
        if cm is None:
            raise DrError(f"no ConfigMap {objects.ENDPOINTS} in namespace {self.namespace}: is this Rook's cluster "
                          "namespace?", hint="Give the CephCluster's namespace with -n.")
        endpoints = objects.parse_endpoints(str((cm.get("data") or {}).get("data") or ""))
        by_mon = {e.mon: e.address for e in endpoints}
        if self.good not in by_mon:
            raise DrError(f"mon {self.good} is not in {objects.ENDPOINTS} (mons: {', '.join(by_mon) or 'none'})")
        deployments = self.objs.mon_deployments()
        if self.good not in deployments:
            raise DrError(f"mon {self.good} has no Deployment (labels app=rook-ceph-mon, ceph_daemon_id="
                          f"{self.good}) in namespace {self.namespace}")
        config = self.objs.find("secrets", objects.CONFIG_SECRET)
        if config is None:
            raise DrError(f"no Secret {objects.CONFIG_SECRET} in namespace {self.namespace}")
        entries = objects.split_mon_host(objects.decode(config, "mon_host"))
        good_entry = objects.entry_for(entries, by_mon[self.good])
        if good_entry is None:
            raise DrError(f"Secret {objects.CONFIG_SECRET}: mon_host has no entry with mon {self.good}'s address "
                          f"{by_mon[self.good]} ({', '.join(entries)})")
        fsid = objects.decode(self.objs.find("secrets", objects.MON_SECRET) or {}, "fsid")
        if not fsid:
            raise DrError(f"no fsid in Secret {objects.MON_SECRET} of namespace {self.namespace}")
        operator = self.objs.operator()
        bad = sorted((set(by_mon) | set(deployments)) - {self.good})
        return {"good": self.good, "bad": bad, "address": by_mon[self.good], "monHost": good_entry, "fsid": fsid,
                "endpoints": cm, "config": config, "deployments": deployments, "operator": operator}

    def check(self, plan: dict[str, Any]) -> None:
        statuses, errors = {}, {}
        for mon, d in plan["deployments"].items():
            statuses[mon], errors[mon] = ask(self.kube, self.namespace, mon_pod(self.objs, d), mon)
        for mon in plan["bad"]:
            if mon not in statuses:
                statuses[mon], errors[mon] = None, "no Deployment"
        check_good(self.good, statuses, errors)
        mine = statuses[self.good]
        assert mine is not None
        if mine.fsid and mine.fsid != plan["fsid"]:
            raise DrError(f"mon {self.good} belongs to cluster {mine.fsid}, Secret {objects.MON_SECRET} says "
                          f"{plan['fsid']}")
        self.console.say(f"mon {self.good}: {mine.state}, election epoch {mine.election_epoch}, monmap epoch "
                         f"{mine.monmap_epoch} ({', '.join(mine.monmap)}); no other mon answers with newer state")

    # --- the run ----------------------------------------------------------------------------------------

    def run(self, repo: Repository | None, *, confirm: bool = True) -> Result:
        dry_run = self.session.dry
        journal = self.read_journal()
        if journal is not None and journal.get("good") != self.good:
            raise DrError(f"a restore-quorum run to mon {journal.get('good')} is in progress (ConfigMap "
                          f"{self.namespace}/{JOURNAL}); finish it by running it again, or undo it with --undo",
                          hint=f"kubectl dr rook mon restore-quorum {journal.get('good')} [--undo]")
        plan = self.plan() if journal is None else None
        if plan is not None:
            self.check(plan)
        elif journal is not None:
            self.console.say(f"resuming the restore-quorum run {journal.get('runId')} to mon {self.good} after step "
                             f"{(journal.get('steps') or ['none'])[-1]}")
        bad = plan["bad"] if plan else list(journal["bad"]) if journal else []
        book = runbook(self.namespace, self.good, bad, plan or journal or {}, self.objs.operator_namespace)
        if dry_run:
            return Result(self.good, bad, None, None, list((journal or {}).get("steps") or []), [], bad, book,
                          dry_run=True)
        if repo is None:
            raise DrError("restore-quorum needs a repository for its backup")
        if journal is None and confirm:
            self.console.confirm(f"restore the quorum of {self.namespace}'s mons to mon {self.good} alone, "
                                 f"removing mon(s) {', '.join(bad)} from its monmap")
        self._take_lease()
        # Read again under the lease: a run that held it until just now may have started or finished one.
        journal = self.read_journal()
        if journal is not None and journal.get("good") != self.good:
            raise DrError(f"a restore-quorum run to mon {journal.get('good')} started meanwhile (ConfigMap "
                          f"{self.namespace}/{JOURNAL})", hint=f"kubectl dr rook mon restore-quorum "
                                                                f"{journal.get('good')} [--undo]")
        if journal is None:
            if plan is None:
                raise DrError(f"the restore-quorum run to mon {self.good} finished or was undone meanwhile",
                              hint="`kubectl dr rook status` shows the mons as they are now.")
            self.journal = {"version": 1, "good": self.good, "bad": bad, "runId": time.strftime("%Y%m%dT%H%M%SZ",
                            time.gmtime()), "address": plan["address"], "monHost": plan["monHost"],
                            "fsid": plan["fsid"], "steps": []}
            self._write_runbook(book)
            self._record("saved", saved=self._saved(plan))
        else:
            self.journal = journal
            self._write_runbook(book)
        return self._steps(repo, book)

    def _saved(self, plan: dict[str, Any]) -> dict[str, Any]:
        return {"deployments": {m: clean(d) for m, d in plan["deployments"].items()},
                "operator": clean(plan["operator"]) if plan["operator"] else None,
                "endpoints": clean(plan["endpoints"]), "config": clean(plan["config"])}

    def _steps(self, repo: Repository, book: str) -> Result:
        saved = self.journal["saved"]
        good_name = saved["deployments"][self.good]["metadata"]["name"]
        maintenance = f"{good_name}-maintenance"
        if not self._done("operator-down"):
            if saved["operator"] is not None:
                self.objs.scale(objects.OPERATOR, 0, self.objs.operator_namespace)
                self.objs.wait_no_pods(saved["operator"]["spec"]["selector"]["matchLabels"],
                                       "scaling the operator down", self.timeout, self.objs.operator_namespace)
            self._record("operator-down")
        if not self._done("bad-mons-down"):
            for mon in self.journal["bad"]:
                d = saved["deployments"].get(mon)
                if d is not None:
                    self.objs.scale(d["metadata"]["name"], 0)
            self._record("bad-mons-down")
        if not self._done("maintenance"):
            self._start_maintenance(saved["deployments"][self.good], maintenance)
            self._record("maintenance")
        pod = self._maintenance_pod(maintenance) if not self._done("maintenance-removed") else ""
        store = store_path(saved["deployments"][self.good], self.good)
        if not self._done("store-backup"):
            backup_id, location = self._backup_store(repo, pod, store, book)
            self._record("store-backup", backup=backup_id, location=location)
        if not self._done("inject-started"):
            before = self._extract(pod, store)
            self._check_monmap(before, expect_all=False)
            remove = [m for m in before.mons if m != self.good]
            if remove:
                self._exec(pod, ["monmaptool", MONMAP, *(a for m in remove for a in ("--rm", m))], "monmaptool --rm")
            edited = Monmap.parse(self._exec(pod, ["monmaptool", "--print", MONMAP], "monmaptool --print").decode())
            self._check_monmap(edited, expect_all=True)
            self._record("monmap-edited", monmapBefore=before.mons, monmapEpochBefore=before.epoch)
            # From here on the store is changed: --undo is no longer possible (the backup puts it back).
            self._record("inject-started")
        if not self._done("monmap-injected"):
            # Rerun-safe: extracting again and removing whatever is not GOOD gives the same map either way.
            current = self._extract(pod, store)
            remove = [m for m in current.mons if m != self.good]
            if remove:
                self._exec(pod, ["monmaptool", MONMAP, *(a for m in remove for a in ("--rm", m))], "monmaptool --rm")
            self._exec(pod, ["ceph-mon", f"--id={self.good}", f"--mon-data={store}", f"--inject-monmap={MONMAP}"],
                       "ceph-mon --inject-monmap")
            after = self._extract(pod, store)
            self._check_monmap(after, expect_all=True)
            self._record("monmap-injected", monmapAfter=after.mons, monmapEpochAfter=after.epoch)
        if not self._done("endpoints"):
            self._write_endpoints(saved)
            self._record("endpoints")
        if not self._done("maintenance-removed"):
            self._delete_deployment(maintenance)
            self.objs.wait_no_pods({**_selector(saved["deployments"][self.good]), MAINTENANCE_LABEL: "true"},
                                   "removing the maintenance pod", self.timeout)
            self._record("maintenance-removed")
        if not self._done("deployment-restored"):
            self._put_back(saved["deployments"][self.good])
            self._record("deployment-restored")
        if not self._done("quorum"):
            quorum = self._wait_quorum(saved["deployments"][self.good])
            self._record("quorum", quorum=quorum)
        if not self._done("operator-up"):
            if saved["operator"] is not None:
                self.objs.scale(objects.OPERATOR, objects.replicas(saved["operator"]), self.objs.operator_namespace)
            self._record("operator-up")
        left = self._left_for_rook(saved)
        steps = list(self.journal["steps"])
        self._delete_journal()
        return Result(self.good, list(self.journal["bad"]), self.journal.get("backup"), self.journal.get("location"),
                      steps, list(self.journal.get("quorum") or []), left, book,
                      details={"monmapBefore": self.journal.get("monmapBefore"),
                               "monmapAfter": self.journal.get("monmapAfter")})

    # --- undo ---------------------------------------------------------------------------------------------

    def undo(self) -> Result:
        journal = self.read_journal()
        if journal is None:
            raise DrError(f"no restore-quorum run to undo in namespace {self.namespace} (no ConfigMap {JOURNAL})")
        if journal.get("good") != self.good:
            raise DrError(f"the run in progress restores to mon {journal.get('good')}, not {self.good}")
        self._take_lease()
        journal = self.read_journal()
        if journal is None:
            raise DrError(f"the restore-quorum run in namespace {self.namespace} finished or was undone meanwhile")
        self.journal = journal
        if self._done("inject-started"):
            raise DrError(
                f"the new monmap may already be in mon {self.good}'s store (step inject-started was reached): "
                "--undo only puts objects back before that",
                hint=f"Finish the run (run the same command again without --undo), or put the store back from backup "
                     f"{journal.get('backup')} as its runbook says.")
        saved = journal["saved"]
        good_name = saved["deployments"][self.good]["metadata"]["name"]
        self._delete_deployment(f"{good_name}-maintenance")
        self.objs.wait_no_pods({**_selector(saved["deployments"][self.good]), MAINTENANCE_LABEL: "true"},
                               "removing the maintenance pod", self.timeout)
        for d in saved["deployments"].values():
            self._put_back(d)
        for key, kind in (("endpoints", "configmaps"), ("config", "secrets")):
            self._put_object(kind, saved[key])
        if saved["operator"] is not None:
            self._put_back(saved["operator"], self.objs.operator_namespace)
        self._delete_journal()
        self.console.say(f"undone: every object is as it was before the run (backup {journal.get('backup') or 'none'} "
                         "stays in the repository)")
        return Result(self.good, list(journal["bad"]), journal.get("backup"), journal.get("location"),
                      list(journal.get("steps") or []), [], [], "", undone=True)

    # --- helpers ------------------------------------------------------------------------------------------

    def _start_maintenance(self, saved: dict[str, Any], name: str) -> None:
        self.objs.scale(saved["metadata"]["name"], 0)
        self._wait_mon_gone(saved)
        if self.objs.find("deployments", name) is not None:
            return
        d = clean(saved)
        meta = d["metadata"]
        meta["name"] = name
        meta.pop("annotations", None)
        meta["labels"] = {**(meta.get("labels") or {}), DO_NOT_RECONCILE: "true", MAINTENANCE_LABEL: "true"}
        spec = d["spec"]
        spec["replicas"] = 1
        spec["selector"] = {"matchLabels": {**_selector(saved), MAINTENANCE_LABEL: "true"}}
        template = spec["template"]
        template.setdefault("metadata", {}).setdefault("labels", {})[MAINTENANCE_LABEL] = "true"
        container = template["spec"]["containers"][0]
        for probe in ("livenessProbe", "startupProbe", "readinessProbe"):
            container.pop(probe, None)
        # Not a bare `sleep infinity`: as PID 1 it ignores SIGTERM, so removing the maintenance pod would wait
        # out the whole grace period (30 s by default) at a step where the cluster has no quorum.
        container["command"] = ["bash", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
        container["args"] = []
        self.console.say(f"starting {name}: mon {self.good}'s pod with its store, sleeping instead of ceph-mon")
        self.kube.request("POST", f"/apis/apps/v1/namespaces/{self.namespace}/deployments", body=d)

    def _wait_mon_gone(self, saved: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.timeout
        pause = pauses(1.0)
        while True:
            left = [p["metadata"]["name"] for p in self.objs.pods(_selector(saved))
                    if MAINTENANCE_LABEL not in (p["metadata"].get("labels") or {})]
            if not left:
                return
            if time.monotonic() > deadline:
                raise DrError(f"mon {self.good}'s pods {', '.join(left)} did not stop within {self.timeout:.0f}s")
            time.sleep(next(pause))

    def _maintenance_pod(self, name: str) -> str:
        selector = {**_selector(self.journal["saved"]["deployments"][self.good]), MAINTENANCE_LABEL: "true"}
        deadline = time.monotonic() + self.timeout
        state = "no pod"
        pause = pauses(1.0)
        while time.monotonic() < deadline:
            for p in self.objs.pods(selector):
                state = pod_state(p)
                statuses = (p.get("status") or {}).get("containerStatuses") or []
                if state == "Running" and statuses and all((s.get("state") or {}).get("running") for s in statuses):
                    return str(p["metadata"]["name"])
            time.sleep(next(pause))
        raise DrError(f"the maintenance pod of {name} is not running after {self.timeout:.0f}s ({state})",
                      hint=f"kubectl -n {self.namespace} describe pods -l {MAINTENANCE_LABEL}=true; the run resumes "
                           "when started again, or --undo puts everything back")

    def _exec(self, pod: str, command: list[str], what: str) -> bytes:
        return monexec.run(self.kube, self.namespace, pod, command, what)

    def _extract(self, pod: str, store: str) -> Monmap:
        self._exec(pod, ["ceph-mon", f"--id={self.good}", f"--mon-data={store}", f"--extract-monmap={MONMAP}"],
                   "ceph-mon --extract-monmap")
        return Monmap.parse(self._exec(pod, ["monmaptool", "--print", MONMAP], "monmaptool --print").decode())

    def _check_monmap(self, monmap: Monmap, *, expect_all: bool) -> None:
        if monmap.fsid != self.journal["fsid"]:
            raise VerificationError(f"the monmap of mon {self.good} has fsid {monmap.fsid}, the cluster's is "
                                    f"{self.journal['fsid']}")
        if self.good not in monmap.mons:
            raise VerificationError(f"the monmap extracted from mon {self.good}'s store does not list mon {self.good} "
                                    f"(it lists {', '.join(monmap.mons) or 'no mon'})")
        if expect_all and list(monmap.mons) != [self.good]:
            raise VerificationError(f"the monmap should list mon {self.good} alone, it lists "
                                    f"{', '.join(monmap.mons)}")

    def _backup_store(self, repo: Repository, pod: str, store: str, book: str) -> tuple[str, str]:
        """GOOD's stopped store as a tar, and every saved object, into the repository, checked both sides."""
        listing = "/tmp/kubectl-dr-files.sha256"
        script = (f"set -e; cd {shlex.quote(store)}; find . -type f -exec sha256sum {{}} + | sort -k2 > {listing}; "
                  f"tar -cf {STORE_TAR} .; wc -c < {STORE_TAR}; sha256sum {STORE_TAR}; cat {listing}")
        listed = self._exec(pod, ["sh", "-c", script], "archiving the mon store").decode().splitlines()
        size, digest, files = int(listed[0].strip()), listed[1].split()[0], "\n".join(listed[2:]) + "\n"
        self.console.say(f"copying mon {self.good}'s store ({size} bytes) off through the API")
        data = bytearray()
        stream = open_exec(self.kube, self.namespace, pod, ["cat", STORE_TAR], container=monexec.CONTAINER,
                           timeouts=Timeouts(connect=30.0, idle=300.0))
        stream.run(stdout=data.extend).check(f"reading mon {self.good}'s store")
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise VerificationError(f"mon {self.good}'s store arrived as {len(data)} bytes with SHA-256 "
                                    f"{hashlib.sha256(data).hexdigest()}, the pod has {size} with {digest}")
        source = {"cluster": self.kube.resolved.server, "namespace": self.namespace, "mon": self.good}
        cluster = identity_for_backup(self.kube, self.console.say)
        with repo.create(BACKUP_TYPE, source, name_hint=f"mon-{self.good}", cluster=cluster) as writer:
            parts = {}
            for name, payload in (("mon-store.tar", bytes(data)), ("mon-store-files.sha256", files.encode()),
                                  ("objects.json", json.dumps(self.journal["saved"], indent=1).encode()),
                                  ("runbook.sh", book.encode())):
                part = writer.open_part(name, size_hint=len(payload))
                part.write(payload)
                written = part.close()
                if written.size != len(payload) or written.sha256 != hashlib.sha256(payload).hexdigest():
                    raise VerificationError(f"part {name}: stored {written.size} bytes with SHA-256 {written.sha256}")
                parts[name] = {"size": written.size, "sha256": written.sha256}
            manifest = writer.commit({"mon": self.good, "bad": self.journal["bad"], "fsid": self.journal["fsid"],
                                      "store": store, "storeSize": size, "storeSha256": digest, "parts": parts})
        self._exec(pod, ["rm", "-f", STORE_TAR], "removing the archive")
        location = repo.backup_location(manifest.id)
        self.console.say(f"backup {manifest.id}: mon {self.good}'s store and the objects this run changes, in "
                         f"{location}; the break-glass runbook is its part runbook.sh")
        return manifest.id, location

    def _write_endpoints(self, saved: dict[str, Any]) -> None:
        cm = self.objs.get("configmaps", objects.ENDPOINTS)
        data = cm.setdefault("data", {})
        data["data"] = objects.format_endpoints([objects.Endpoint(self.good, self.journal["address"])])
        try:
            mapping = json.loads(data.get("mapping") or "{}")
            nodes = mapping.get("node") or {}
            mapping["node"] = {k: v for k, v in nodes.items() if k == self.good}
            data["mapping"] = json.dumps(mapping)
        except ValueError:
            pass  # Rook rewrites it; an unreadable mapping is left as it is
        self.kube.request("PUT", f"/api/v1/namespaces/{self.namespace}/configmaps/{objects.ENDPOINTS}", body=cm)
        secret = self.objs.get("secrets", objects.CONFIG_SECRET)
        secret.setdefault("data", {}).update({"mon_host": objects.encode(self.journal["monHost"]),
                                              "mon_initial_members": objects.encode(self.good)})
        self.kube.request("PUT", f"/api/v1/namespaces/{self.namespace}/secrets/{objects.CONFIG_SECRET}", body=secret)

    def _delete_deployment(self, name: str) -> None:
        try:
            self.kube.request("DELETE", f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{name}",
                              body={"propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.status != 404:
                raise

    def _put_back(self, saved: dict[str, Any], namespace: str | None = None) -> None:
        """Replace the Deployment with the saved one, exactly (labels, annotations, spec, replicas)."""
        ns = namespace or self.namespace
        name = saved["metadata"]["name"]
        path = f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"
        current = self.objs.find("deployments", name, ns)
        body = copy.deepcopy(saved)
        if current is None:
            self.kube.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body=body)
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.kube.request("PUT", path, body=body)

    def _put_object(self, kind: str, saved: dict[str, Any]) -> None:
        name = saved["metadata"]["name"]
        current = self.objs.get(kind, name)
        body = copy.deepcopy(saved)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.kube.request("PUT", f"/api/v1/namespaces/{self.namespace}/{kind}/{name}", body=body)

    def _wait_quorum(self, saved: dict[str, Any]) -> list[str]:
        deadline = time.monotonic() + self.timeout
        last = "no answer yet"
        pause = pauses(2.0, first=0.25)  # an exec into the mon's pod a look: a quorum of one forms within moments
        while time.monotonic() < deadline:
            status, error = ask(self.kube, self.namespace, mon_pod(self.objs, saved), self.good)
            if status is not None and status.in_quorum and list(status.quorum) == [self.good]:
                self.console.say(f"mon {self.good} is {status.state} of a quorum of one (election epoch "
                                 f"{status.election_epoch}, monmap epoch {status.monmap_epoch})")
                return list(status.quorum)
            last = error or (f"{status.state}, quorum {','.join(status.quorum) or 'none'}" if status else "no answer")
            time.sleep(next(pause))
        raise DrError(f"mon {self.good} did not form a quorum of one within {self.timeout:.0f}s ({last})",
                      hint="Run the command again to keep waiting; `kubectl dr rook status` shows the mon's state.")

    def _left_for_rook(self, saved: dict[str, Any]) -> list[str]:
        left = []
        for mon in self.journal["bad"]:
            d = saved["deployments"].get(mon)
            if d is None:
                continue
            left.append(f"deployment/{d['metadata']['name']} (replicas 0)")
            for v in d["spec"]["template"]["spec"].get("volumes") or []:
                claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
                if claim:
                    left.append(f"persistentvolumeclaim/{claim}")
            if self.objs.find("services", f"rook-ceph-mon-{mon}") is not None:
                left.append(f"service/rook-ceph-mon-{mon}")
        return left

    def _delete_journal(self) -> None:
        try:
            self.kube.request("DELETE", f"/api/v1/namespaces/{self.namespace}/configmaps/{JOURNAL}")
        except ApiError as exc:
            if exc.status != 404:
                raise


def _selector(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})


def store_path(deployment: dict[str, Any], mon: str) -> str:
    """Where the mon container has its store: the mount at /var/lib/ceph/mon/ceph-ID (Rook's dataDirHostPath
    or PVC mount), as ceph-mon's default --mon-data is."""
    wanted = f"/var/lib/ceph/mon/ceph-{mon}"
    containers = deployment["spec"]["template"]["spec"]["containers"]
    mon_container = next((c for c in containers if c.get("name") == monexec.CONTAINER), containers[0])
    for mount in mon_container.get("volumeMounts") or []:
        if str(mount.get("mountPath", "")).rstrip("/") == wanted:
            return wanted
    for arg in mon_container.get("args") or []:
        if str(arg).startswith("--mon-data="):
            return str(arg).split("=", 1)[1]
    return wanted
