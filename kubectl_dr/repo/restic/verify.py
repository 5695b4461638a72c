"""`backups verify ID --repo restic:REPO`: every tree and data blob a snapshot references, read back and
checked (MAC, then SHA-256 against its ID, sizes against the index), as `restic check --read-data` does
for the whole repository but for one snapshot. `subset` (0 < subset ≤ 1) reads that share of the
data blobs, chosen by blob ID so that successive runs with different shares cover different blobs.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubectl_dr.repo.restic.nodes import DIR, FILE
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.snapshots import Snapshot


@dataclass
class Verified:
    snapshot: Snapshot
    trees: int
    data_blobs: int
    data_bytes: int
    skipped_blobs: int


def verify(repo: Repository, snap: Snapshot, *, subset: float = 1.0) -> Verified:
    seen: set[str] = set()
    trees = blobs = size = skipped = 0
    pending = [snap.tree]
    threshold = int(subset * 2**32)
    while pending:
        tree_id = pending.pop()
        if tree_id in seen:
            continue
        seen.add(tree_id)
        trees += 1
        for node in repo.load_tree(tree_id):
            if node.type == DIR and node.subtree:
                pending.append(node.subtree)
            if node.type != FILE:
                continue
            for blob in node.content:
                if blob in seen:
                    continue
                seen.add(blob)
                if int(blob[:8], 16) >= threshold:
                    skipped += 1
                    if not repo.has_blob(blob):  # even unread, a blob must be in the index
                        repo.load_blob(blob)
                    continue
                size += len(repo.load_blob(blob))
                blobs += 1
    return Verified(snap, trees, blobs, size, skipped)
