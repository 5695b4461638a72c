"""`pvc backup`: the volume's contents into the backup repository, verified on both sides.

Order of events: find the claim and its consumers; stop them only if the claim is ReadWriteOncePod or
--quiesce asks; start a read-only rescue pod (on the consumer's node for ReadWriteOnce, so the app
keeps running); stream `tar -c` into a repository part; commit only when the pod's size and SHA-256
equal ours, tar and the exec both succeeded, and the archive reads back as a tar; then remove the pod
and start the consumers again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubectl_dr import __version__
from kubectl_dr.errors import DrError
from kubectl_dr.kube.client import Kube
from kubectl_dr.repo import Manifest, Repository
from kubectl_dr.ui.progress import Transfer
from kubectl_dr.volumes import archive, quiesce, rescue_pod, security, transfer
from kubectl_dr.volumes.claims import get_claim

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
    stale = rescue_pod.leftovers(kube, claim)
    # Another run's rescue pod (maybe still working) is not a consumer to stop.
    consumers = [c for c in quiesce.find_consumers(kube, opts.namespace, opts.claim)
                 if not (c.kind == "Pod" and c.name in stale)]
    running = [c for c in consumers if c.pods]
    must_stop = bool(running) and (opts.quiesce or claim.single_pod)
    stopped = None
    if must_stop:
        quiesce.refuse_unstoppable(consumers, opts.namespace, opts.claim, "back up")
        why = "--quiesce" if opts.quiesce else "the claim is ReadWriteOncePod (one pod at a time)"
        say(f"stopping {', '.join(c.ref for c in consumers)} ({why})")
        stopped = quiesce.stop(kube, consumers, run_id=quiesce.run_id("backup"),
                               reason=f"kubectl dr pvc backup {opts.namespace}/{opts.claim}", progress=say)
    nodes = quiesce.consumer_nodes(running) if not must_stop else []
    node = nodes[0] if claim.single_node and nodes else None
    if len(nodes) > 1 and claim.single_node:
        say(f"warning: ReadWriteOnce claim used on several nodes ({', '.join(nodes)}); using {node}")

    identity = security.consumer_identity([c.security_context() for c in consumers])
    level = security.namespace_level(kube, opts.namespace)
    sec = security.plan(level, identity, write=False)
    for note in sec.notes:
        say(f"note: {note}")
    where = f" on node {node} (next to the running consumer)" if node else ""
    say(f"starting rescue pod for {opts.namespace}/{opts.claim}{where}, volume mounted read-only")
    pod = rescue_pod.start(kube, claim, image=opts.image, purpose="pvc-backup", read_only=True, node=node,
                           security=sec, progress=say)
    estimate = transfer.estimate_size(kube, pod)

    hint = opts.name or f"{opts.namespace}-{opts.claim}"
    source: dict[str, Any] = {
        **claim.describe(),
        "server": kube.resolved.server,
        "context": kube.resolved.context_name,
        "node": node,
        "consumers": [c.ref for c in consumers],
    }
    with repo.create(TYPE, source, hint) as writer:
        with writer.open_part(PART) as part, Transfer(f"backup {opts.namespace}/{opts.claim}", estimate) as bar:
            checked = transfer.receive(kube, pod, part, bar)
        if checked.warnings:
            say(f"tar reported:\n{checked.warnings}")
        listing = archive.list_file(part.path)
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
    pod.delete()
    if stopped is not None:
        say("starting the consumers again")
        stopped.restore()
    return {"id": manifest.id, "path": str(repo.path / manifest.id), **manifest.to_dict()}


def check_name(name: str | None) -> None:
    if name is not None and not name.strip():
        raise DrError("--name must not be empty")
