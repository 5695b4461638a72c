"""`pvc backup`: the volume's contents into the backup repository, verified on both sides.

Order of events: find the claim and its consumers; stop them only if the claim is ReadWriteOncePod or
--quiesce asks; start a read-only rescue pod (on the consumer's node for ReadWriteOnce, so the app
keeps running); stream `tar -c` into a repository part; commit only when the pod's size and SHA-256
equal ours, tar and the exec both succeeded, and the archive reads back as a tar; then remove the pod
and start the consumers again.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubectl_dr import __version__
from kubectl_dr.errors import DrError, Interrupted, VerificationError
from kubectl_dr.kube.client import Kube
from kubectl_dr.repo import BackupWriter, Manifest, Repository
from kubectl_dr.ui.progress import Transfer
from kubectl_dr.volumes import archive, quiesce, rescue_pod, security, transfer
from kubectl_dr.volumes.claims import get_claim, require_nodes_ready

PART = "data.tar"
TYPE = "pvc"


@dataclass
class BackupOptions:
    namespace: str
    claim: str
    image: str = rescue_pod.DEFAULT_IMAGE
    name: str | None = None
    quiesce: bool = False


def run(kube: Kube, repo: Repository, opts: BackupOptions, say: Callable[[str], None]) -> dict[str, Any]:
    claim = get_claim(kube, opts.namespace, opts.claim)
    # kubectl dr's own pods (another run's, or one left by a killed run) are never consumers to stop.
    consumers, own = quiesce.consumers(kube, opts.namespace, opts.claim)
    running = [c for c in consumers if c.pods]
    must_stop = bool(running) and (opts.quiesce or claim.single_pod)
    nodes = quiesce.consumer_nodes(running) if not must_stop else []
    if claim.single_node and not nodes and not must_stop:
        # No consumer runs, but a pod of ours may still hold the ReadWriteOnce volume on its node.
        nodes = sorted({p.node for p in own if p.node})
    node = nodes[0] if claim.single_node and nodes else None
    if must_stop:
        quiesce.refuse_unstoppable(consumers, opts.namespace, opts.claim, "back up")
        require_nodes_ready(kube, claim, quiesce.placed(running), "back up")
    elif node:
        require_nodes_ready(kube, claim, {node: quiesce.placed(running).get(node) or [p.name for p in own]},
                            "back up")
    stopped = None
    if own and claim.single_pod and not must_stop:
        rescue_pod.remove_leftovers(kube, claim, own, say)  # a ReadWriteOncePod claim admits no second pod
    if must_stop:
        if own:
            rescue_pod.remove_leftovers(kube, claim, own, say)
        why = "--quiesce" if opts.quiesce else "the claim is ReadWriteOncePod (one pod at a time)"
        say(f"stopping {', '.join(c.ref for c in consumers)} ({why})")
        stopped = quiesce.stop(kube, consumers, run_id=quiesce.run_id("backup"),
                               reason=f"kubectl dr pvc backup {opts.namespace}/{opts.claim}", progress=say)
    if len(nodes) > 1 and claim.single_node:
        say(f"warning: ReadWriteOnce claim used on several nodes ({', '.join(nodes)}); using {node}")

    identity = security.consumer_identity([c.security_context() for c in consumers])
    level = security.namespace_level(kube, opts.namespace)
    plan = security.plan(level, identity, write=False)
    for note in plan.notes:
        say(f"note: {note}")
    where = f" on node {node} (where the volume is in use)" if node else ""
    say(f"starting rescue pod for {opts.namespace}/{opts.claim}{where}, volume mounted read-only")
    pod = rescue_pod.start(kube, claim, image=opts.image, purpose="pvc-backup", read_only=True, node=node,
                           security=plan, progress=say)
    sec = pod.security  # the plan the pod runs with (Pod Security admission may have asked for another)
    estimate = transfer.estimate_size(kube, pod)

    hint = opts.name or f"{opts.namespace}-{opts.claim}"
    source: dict[str, Any] = {
        **claim.describe(),
        "server": kube.resolved.server,
        "context": kube.resolved.context_name,
        "node": node,
        "consumers": [c.ref for c in consumers],
    }
    writer: BackupWriter | None = None
    try:
        with repo.create(TYPE, source, hint) as writer, ThreadPoolExecutor(1, "list-archive") as beside:
            with writer.open_part(PART, keep_local=True) as part, \
                    Transfer(f"backup {opts.namespace}/{opts.claim}", estimate) as bar:
                checked = transfer.receive(kube, pod, part, bar)
                # What is left overlaps: the pod terminates, the archive is listed while the part is flushed.
                pod.release()
                listed = beside.submit(archive.list_file, part.path)
            if checked.warnings:
                say(f"tar reported:\n{checked.warnings}")
            listing = listed.result()
            details: dict[str, Any] = {
                "name": opts.name,
                "archive": {"format": "tar", "part": PART, **listing.summary()},
                "transfer": {
                    "size": checked.size, "sha256Pod": checked.sha256, "sha256Local": part.sha256,
                    "execProtocol": checked.protocol, "seconds": round(bar.elapsed, 3),
                },
                "rescuePod": {"image": opts.image, "node": node, "securityContext": sec.describe()},
                "quiesced": [c.ref for c in consumers] if must_stop else [],
                "toolVersion": __version__,
            }
            manifest: Manifest = writer.commit(details)
    except (Interrupted, VerificationError):
        # Said here because the next lines are about the pod and the consumers: the user should not
        # have to wonder whether a cut-short archive now sits in the repository.
        if writer is not None and writer.state == "aborted":
            say("the incomplete backup was removed: nothing was kept in the repository")
        raise
    pod.delete()
    if stopped is not None:
        say("starting the consumers again")
        stopped.restore()
    return {"id": manifest.id, "path": repo.backup_location(manifest.id), **manifest.to_dict()}


def check_name(name: str | None) -> None:
    if name is not None and not name.strip():
        raise DrError("--name must not be empty")
