"""`backups verify ID --repo restic:REPO`: every tree and data blob a snapshot references, read back and
checked (MAC, then SHA-256 against its ID, sizes against the index), as `restic check --read-data` does
for the whole repository but for one snapshot. A `Subset` reads part of the data blobs, written as restic's
`--read-data-subset` is: `n/t` is group n of t (by blob ID, so `1/5` … `5/5` on five nights read every blob
once), `x%` a random share (each run another sample), and a fraction `0.1` the same as `10%`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from kubectl_dr.repo.restic.nodes import DIR, FILE
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.snapshots import Snapshot


@dataclass(frozen=True)
class Subset:
    group: int = 1
    groups: int = 1
    share: float = 1.0
    text: str = "100%"
    _rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Subset:
        """restic's forms, or ValueError saying which ones there are."""
        spelled = text.strip()
        if m := re.fullmatch(r"(\d+)/(\d+)", spelled):
            group, groups = int(m[1]), int(m[2])
            if not 1 <= group <= groups:
                raise ValueError(f"{text!r}: in n/t, n must be 1 to t (1/5 … 5/5)")
            return cls(group=group, groups=groups, text=f"{group}/{groups}")
        try:
            share = float(spelled[:-1]) / 100 if spelled.endswith("%") else float(spelled)
        except ValueError:
            raise ValueError(f"{text!r} is not a subset: give n/t (2/5: the second of five groups), a percentage "
                             "(10%) or a fraction (0.1)") from None
        if not 0 < share <= 1:
            raise ValueError(f"{text!r}: a share must be more than 0 and at most 100% (1.0)")
        return cls(share=share, text=f"{share * 100:g}%")

    def wants(self, blob_id: str) -> bool:
        if self.groups > 1:
            return int(blob_id[:8], 16) % self.groups == self.group - 1
        return self.share >= 1 or self._rng.random() < self.share


@dataclass
class Verified:
    snapshot: Snapshot
    trees: int
    data_blobs: int
    data_bytes: int
    skipped_blobs: int


def verify(repo: Repository, snap: Snapshot, *, subset: Subset | None = None) -> Verified:
    chosen = subset or Subset()
    seen: set[str] = set()
    trees = blobs = size = skipped = 0
    pending = [snap.tree]
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
                if not chosen.wants(blob):
                    skipped += 1
                    if not repo.has_blob(blob):  # even unread, a blob must be in the index
                        repo.load_blob(blob)
                    continue
                size += len(repo.load_blob(blob))
                blobs += 1
    return Verified(snap, trees, blobs, size, skipped)
