"""The break-glass runbook of `rook mon restore-quorum`: the same restore as kubectl commands for this cluster
(namespace, mons, addresses, fsid), for when kubectl dr cannot run. Stored in the backup as runbook.sh."""

from __future__ import annotations

import json
import shlex
from typing import Any

MONMAP = "/tmp/kubectl-dr-monmap"


def runbook(namespace: str, good: str, bad: list[str], facts: dict[str, Any], operator_namespace: str) -> str:
    """The same restore as exact commands for this cluster, for when kubectl dr cannot run."""
    q = shlex.quote
    ns = q(namespace)
    dep = f"rook-ceph-mon-{good}"
    store = f"/var/lib/ceph/mon/ceph-{good}"
    address = facts.get("address", "IP:PORT")
    mon_host = facts.get("monHost", "[v2:IP:3300,v1:IP:6789]")
    lines = [
        f"# Break-glass runbook: restore the mon quorum of Rook-Ceph in namespace {namespace} to mon {good} alone.",
        f"# fsid {facts.get('fsid', '?')}; mon {good} at {address} ({mon_host}); mons removed: {', '.join(bad) or '-'}",
        "# Keyring in the mon pods: /etc/ceph/keyring-store/keyring (Secret rook-ceph-mons-keyring).",
        "# Run from a machine with kubectl for this cluster, in order; check each output before going on.",
        "",
        "## 1. Stop the operator and the bad mons; keep a copy of the good mon's Deployment.",
        f"kubectl -n {q(operator_namespace)} scale deployment rook-ceph-operator --replicas=0",
        *(f"kubectl -n {ns} scale deployment rook-ceph-mon-{m} --replicas=0" for m in bad),
        f"kubectl -n {ns} get deployment {dep} -o yaml > {dep}.yaml",
        "",
        "## 2. Make the good mon's pod sleep instead of running ceph-mon.",
        f"kubectl -n {ns} patch deployment {dep} --type=json -p "
        "'[{\"op\":\"replace\",\"path\":\"/spec/template/spec/containers/0/command\",\"value\":[\"sleep\",\"infinity\"]},"
        "{\"op\":\"replace\",\"path\":\"/spec/template/spec/containers/0/args\",\"value\":[]},"
        "{\"op\":\"remove\",\"path\":\"/spec/template/spec/containers/0/livenessProbe\"}]'",
        f"kubectl -n {ns} rollout status deployment {dep}",
        "",
        "## 3. Back up the store, extract the monmap, remove the bad mons, inject it, check it.",
        f"kubectl -n {ns} exec deploy/{dep} -c mon -- tar -C {store} -cf - . > mon-{good}-store.tar",
        f"kubectl -n {ns} exec deploy/{dep} -c mon -- ceph-mon --id={good} --mon-data={store} "
        f"--extract-monmap={MONMAP}",
        f"kubectl -n {ns} exec deploy/{dep} -c mon -- monmaptool --print {MONMAP}",
        f"kubectl -n {ns} exec deploy/{dep} -c mon -- monmaptool {MONMAP} " + " ".join(f"--rm {m}" for m in bad),
        f"kubectl -n {ns} exec deploy/{dep} -c mon -- ceph-mon --id={good} --mon-data={store} "
        f"--inject-monmap={MONMAP}",
        f"kubectl -n {ns} exec deploy/{dep} -c mon -- monmaptool --print {MONMAP}   # mon.{good} alone",
        "",
        "## 4. Point Rook at the good mon alone.",
        f"kubectl -n {ns} patch configmap rook-ceph-mon-endpoints --type=merge -p "
        + q(json.dumps({"data": {"data": f"{good}={address}"}})),
        f"kubectl -n {ns} patch secret rook-ceph-config --type=merge -p "
        + q(json.dumps({"stringData": {"mon_host": mon_host, "mon_initial_members": good}})),
        "",
        "## 5. Put the Deployment back as it was, wait for a quorum of one, start the operator.",
        f"kubectl replace --force -f {dep}.yaml",
        f"kubectl -n {ns} exec deploy/{dep} -c mon -- ceph --admin-daemon /run/ceph/ceph-mon.{good}.asok mon_status",
        f"kubectl -n {q(operator_namespace)} scale deployment rook-ceph-operator --replicas=1",
        "",
        "## To put the good mon's store back as it was (from this backup's mon-store.tar), with the mon stopped",
        "## (step 2 done): stream it into the pod and unpack it over the emptied store directory.",
        f"kubectl -n {ns} exec -i deploy/{dep} -c mon -- sh -c 'rm -rf {store}/* && tar -C {store} -xf -' "
        f"< mon-{good}-store.tar",
        "",
    ]
    return "\n".join(lines)
