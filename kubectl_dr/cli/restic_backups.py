"""`kubectl dr backups …` on a restic repository (`--repo restic:REPO`): its snapshots, whoever wrote them."""

from __future__ import annotations

import re
import stat
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kubectl_dr import units
from kubectl_dr.cli.repo_options import open_restic
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError, UsageError
from kubectl_dr.repo.restic.location import shown
from kubectl_dr.repo.retention import Policy
from kubectl_dr.ui.output import emit, render_table, write_bytes
from kubectl_dr.units import count

if TYPE_CHECKING:
    from kubectl_dr.repo.restic.nodes import Node


def list_etcd_snapshots(console: Console, repo: str, output: str, *, password_file: str | None,
                        s3_endpoint: str | None, azure_endpoint: str | None = None,
                        nodes: list[str] | None = None) -> None:
    """The etcd snapshots kept in a restic repository (kind=etcd-snapshot), newest first."""
    from kubectl_dr.etcd import restic_snapshot

    repository = open_restic(repo, password_file=password_file, s3_endpoint=s3_endpoint,
                             azure_endpoint=azure_endpoint)
    where = repository.backend.describe()
    found = [k for k in restic_snapshot.kept(repository) if not nodes or k.node in nodes]
    if not found and output == "table":
        console.say(f"No etcd snapshots in {where}" + (f" of node {', '.join(nodes)}" if nodes else "") + ".")
        return
    data = {"kind": "List", "repository": shown(where), "items": [k.to_dict() for k in found]}
    emit(data, output, table=render_table(
        ["ID", "TAKEN", "NODE", "MEMBER", "REVISION", "SIZE", "SHA256"],
        [[k.short_id, _to_second(k.to_dict()["time"]), k.node or "-", k.member or "-",
          k.revision if k.revision is not None else "-", units.size(k.size) if k.size is not None else "-",
          (k.sha256 or "-")[:16]] for k in found]))


def _to_second(stamp: str) -> str:
    """restic's nanosecond time as the table shows times (to the second, its zone kept); JSON keeps restic's."""
    return re.sub(r"(T\d\d:\d\d:\d\d)\.\d+", r"\1", stamp, count=1)


def list_snapshots(console: Console, repo: str, output: str, *, password_file: str | None,
                   s3_endpoint: str | None, azure_endpoint: str | None = None, type: str | None = None) -> None:
    """Every snapshot (of kind=TYPE with a type), newest first; etcd snapshots with their own columns."""
    from kubectl_dr.repo.restic import nodes

    if type == "etcd-snapshot":
        list_etcd_snapshots(console, repo, output, password_file=password_file, s3_endpoint=s3_endpoint,
                            azure_endpoint=azure_endpoint)
        return
    repository = open_restic(repo, password_file=password_file, s3_endpoint=s3_endpoint,
                             azure_endpoint=azure_endpoint)
    # newest first, as every list of backups
    snaps = [s for s in reversed(repository.snapshots()) if type is None or f"kind={type}" in s.tags]
    now = datetime.now(timezone.utc).timestamp()
    data = {"kind": "List", "repository": shown(repository.backend.describe()),
            "items": [{"id": s.id, "shortId": s.short_id, "time": nodes.format_time(s.time), "hostname": s.hostname,
                       "paths": s.paths, "tags": s.tags, "parent": s.parent, "program": s.program_version,
                       "bytes": (s.summary or {}).get("total_bytes_processed")} for s in snaps]}
    if not snaps and output == "table":
        console.say(f"No snapshots found in {repository.backend.describe()}.")
    table = render_table(
        ["ID", "HOST", "PATHS", "TAGS", "SIZE", "AGE", "WRITER"],
        [[s.short_id, s.hostname or "-", ",".join(s.paths), ",".join(s.tags) or "-",
          units.size(int((s.summary or {}).get("total_bytes_processed") or 0)) if s.summary else "-",
          units.age(max(0.0, now - s.time / nodes.NS)),
          "kubectl-dr" if s.program_version.startswith("kubectl-dr") else "restic"]
         for s in snaps]) if snaps else ""
    emit(data, output, table=table)


def _mode_text(node: Node) -> str:
    from kubectl_dr.repo.restic import nodes

    kinds = {nodes.DIR: stat.S_IFDIR, nodes.SYMLINK: stat.S_IFLNK, nodes.FIFO: stat.S_IFIFO,
             nodes.CHARDEV: stat.S_IFCHR, nodes.DEV: stat.S_IFBLK, nodes.SOCKET: stat.S_IFSOCK}
    return stat.filemode(kinds.get(node.type, stat.S_IFREG) | node.perm)


def ls(repo: str, snapshot: str, path: str, output: str, *, password_file: str | None,
       s3_endpoint: str | None,
        azure_endpoint: str | None = None) -> None:
    """Entries under PATH of a snapshot, like `ls -l` (one level; a file lists itself)."""
    from kubectl_dr.repo.restic import archiver, nodes

    repository = open_restic(repo, password_file=password_file, s3_endpoint=s3_endpoint,
                             azure_endpoint=azure_endpoint)
    snap = repository.find_snapshot(snapshot)
    root = archiver.volume_root(repository, snap.tree, snap.paths)
    path = archiver.relative(snap.paths[0], path)
    node = archiver.find(repository, root, path)
    prefix = "/".join(p for p in path.split("/") if p not in ("", "."))
    listed = ([(f"{prefix}/{n.name}" if prefix else n.name, n) for n in repository.load_tree(node.subtree or "")]
              if node.type == nodes.DIR else [(prefix, node)])
    items: list[dict[str, Any]] = [
        {"path": p, "type": n.type, "mode": _mode_text(n), "uid": n.uid, "gid": n.gid, "size": n.size,
         "mtime": nodes.format_time(n.mtime), "links": n.links, "target": n.linktarget or None}
        for p, n in listed]
    table = render_table(
        ["MODE", "UID", "GID", "SIZE", "MTIME", "PATH"],
        [[i["mode"], i["uid"], i["gid"], units.size(i["size"]) if i["type"] == nodes.FILE else "-",
          i["mtime"], i["path"] + (f" -> {i['target']}" if i["target"] else "")] for i in items])
    emit({"kind": "List", "snapshot": snap.id, "items": items}, output, table=table)


def cat(repo: str, snapshot: str, path: str, *, password_file: str | None, s3_endpoint: str | None,
        azure_endpoint: str | None = None) -> None:
    """One file of a snapshot to stdout, every blob checked against its ID before it is written."""
    from kubectl_dr.repo.restic import archiver, nodes

    repository = open_restic(repo, password_file=password_file, s3_endpoint=s3_endpoint,
                             azure_endpoint=azure_endpoint)
    snap = repository.find_snapshot(snapshot)
    root = archiver.volume_root(repository, snap.tree, snap.paths)
    node = archiver.find(repository, root, archiver.relative(snap.paths[0], path))
    if node.type != nodes.FILE:
        raise DrError(f"{path!r} in snapshot {snap.short_id} is a {node.type}, not a file")
    write_bytes(repository.file_content(node))


def verify(repo: str, snapshot: str, output: str, *, password_file: str | None, s3_endpoint: str | None,
           subset: str, azure_endpoint: str | None = None) -> None:
    from kubectl_dr.repo.restic.verify import Subset
    from kubectl_dr.repo.restic.verify import verify as verify_snapshot

    try:
        chosen = Subset.parse(subset)
    except ValueError as exc:
        raise UsageError(f"--read-data-subset {exc}") from None
    repository = open_restic(repo, password_file=password_file, s3_endpoint=s3_endpoint,
                             azure_endpoint=azure_endpoint)
    found = verify_snapshot(repository, repository.find_snapshot(snapshot), subset=chosen)
    data = {"id": found.snapshot.id, "verified": True, "trees": found.trees, "dataBlobs": found.data_blobs,
            "dataBytes": found.data_bytes, "unreadBlobs": found.skipped_blobs, "readDataSubset": chosen.text}
    emit(data, output, table=render_table(
        ["ID", "VERIFIED", "TREES", "BLOBS", "SIZE", "UNREAD"],
        [[found.snapshot.short_id, "ok", found.trees, found.data_blobs, units.size(found.data_bytes),
          found.skipped_blobs]]))


def prune(console: Console, repo: str, policy: Policy, output: str, *, dry_run: bool, password_file: str | None,
          s3_endpoint: str | None, azure_endpoint: str | None = None, max_unused: str | None = None,
          max_repack_size: str | None = None, repack_uncompressed: bool = False, repack_small: bool = False,
          repack_smaller_than: str | None = None, repack_cacheable_only: bool = False) -> None:
    """restic's forget policy per claim, then what no kept snapshot uses goes: asked first, a dry run first.
    The repack flags are restic 0.18 prune's (--max-unused 5%|100M|unlimited, --max-repack-size…): which
    partly used packs are rewritten. Without any of them, packs more than a fifth unused are."""
    from kubectl_dr.repo.restic import nodes
    from kubectl_dr.repo.restic.prune import PACK_SIZE, RepackOptions, parse_max_unused, parse_size
    from kubectl_dr.repo.restic.prune import prune as prune_repository

    flags = {"maxUnused": max_unused, "maxRepackSize": max_repack_size, "repackUncompressed": repack_uncompressed,
             "repackSmall": repack_small, "repackSmallerThan": repack_smaller_than,
             "repackCacheableOnly": repack_cacheable_only}
    repack = None
    try:
        if any(flags.values()):
            smaller = parse_size(repack_smaller_than, "--repack-smaller-than") if repack_smaller_than else None
            if smaller is not None and not 0 <= smaller <= PACK_SIZE:
                raise ValueError(f"--repack-smaller-than {repack_smaller_than}: give a size of at most the pack "
                                 f"size, {units.size(PACK_SIZE)} (as restic)")
            if smaller == 0:
                smaller = None  # restic 0.18 takes 0 as plain --repack-small (its default small-pack size)
            repack = RepackOptions(
                max_unused=parse_max_unused(max_unused) if max_unused is not None else None,
                max_repack_bytes=parse_size(max_repack_size, "--max-repack-size") if max_repack_size else None,
                repack_uncompressed=repack_uncompressed, repack_small=repack_small or repack_smaller_than is not None,
                small_pack_bytes=smaller, cacheable_only=repack_cacheable_only)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    repository = open_restic(repo, password_file=password_file, s3_endpoint=s3_endpoint,
                             azure_endpoint=azure_endpoint)
    if repack_uncompressed and repository.config.version < 2:
        raise UsageError("--repack-uncompressed needs a repository of format version 2 (compression), as in "
                         "restic: `restic migrate upgrade_repo_v2` upgrades this one")
    plan = prune_repository(repository, policy, dry_run=True, repack=repack)
    done = plan
    if not dry_run and (plan.forgotten or plan.packs_removed or plan.packs_repacked):
        console.confirm(f"forget {count(len(plan.forgotten), 'snapshot')}, remove the data no kept snapshot uses "
                        f"({units.size(plan.bytes_freed)} in {count(plan.packs_removed, 'pack')}, of which "
                        f"{count(plan.packs_repacked, 'pack')} repacked first)")
    if not dry_run:
        done = prune_repository(repository, policy, dry_run=False, repack=repack, say=console.say)
    verb = "would forget" if dry_run else "forgot"
    lines: list[str] = []
    for group in sorted({d.group for d in done.decisions}):
        members = [d for d in done.decisions if d.group == group]
        kept = [d for d in members if d.keep]
        lines.append(f"group {group}: keep {len(kept)}, {verb} {len(members) - len(kept)}")
        lines += render_table(["ID", "TIME", "KEEP", "REASONS"],
                              [[d.snapshot.short_id, nodes.format_time(d.snapshot.time), "yes" if d.keep else "no",
                                ", ".join(d.reasons) or "-"] for d in members]).splitlines()
        lines.append("")
    limit = ""
    if max_repack_size:
        limit = f"; --max-repack-size {max_repack_size} " + (
            "reached: the packs it kept back wait for the next prune" if done.max_repack_reached else "not reached")
    removes = "would remove" if dry_run else "removed"
    copied = "would copy" if dry_run else "copied"
    lines.append(f"{removes} {count(done.packs_removed, 'pack')} ({units.size(done.bytes_freed)}); {copied} the "
                 f"used blobs of {count(done.packs_repacked, 'pack')} into new ones; {units.size(done.unused_kept)} "
                 "unused left in packs mostly used"
                 + (f" (--max-unused {max_unused})" if max_unused is not None else "")
                 + limit)
    data = {"dryRun": dry_run, "repository": shown(repository.backend.describe()),
            "snapshots": [{"id": d.snapshot.id, "group": d.group, "keep": d.keep, "reasons": d.reasons}
                          for d in done.decisions],
            "packsRemoved": done.packs_removed, "bytesFreed": done.bytes_freed,
            "packsRepacked": done.packs_repacked, "blobsRepacked": done.blobs_repacked,
            "bytesRepacked": done.bytes_repacked, "packsWritten": done.packs_written,
            "unusedBytesKept": done.unused_kept, "maxRepackSizeReached": done.max_repack_reached, **flags}
    emit(data, output, table="\n".join(lines) + "\n")
