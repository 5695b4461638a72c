"""`monmaptool --print` read back, and the choice of the mon to restore quorum from."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubectl_dr.errors import DrError
from kubectl_dr.rook.monexec import MonStatus

_MON_LINE = re.compile(r"^\s*(\d+):\s+(\S+)\s+mon\.(\S+)\s*$")


@dataclass(frozen=True)
class Monmap:
    fsid: str
    epoch: int
    mons: dict[str, str]  # name → address vector as printed

    @classmethod
    def parse(cls, text: str) -> Monmap:
        fsid, epoch, mons = "", -1, {}
        for line in text.splitlines():
            if line.startswith("fsid "):
                fsid = line.split()[1]
            elif line.startswith("epoch "):
                epoch = int(line.split()[1])
            elif m := _MON_LINE.match(line):
                mons[m.group(3)] = m.group(2)
        if not fsid or epoch < 0:
            raise DrError(f"cannot read monmaptool's output (no fsid or epoch):\n{text.strip()[:500]}")
        return cls(fsid, epoch, mons)


def check_good(good: str, statuses: dict[str, MonStatus | None], errors: dict[str, str | None]) -> None:
    """Refuse unless GOOD answers and holds the newest committed state of the mons that answer: no other mon
    has a higher monmap epoch or election epoch, and no quorum exists to be broken."""
    mine = statuses.get(good)
    answering = {m: s for m, s in statuses.items() if s is not None}
    described = ", ".join(f"{m} ({s.state}, election epoch {s.election_epoch}, monmap epoch {s.monmap_epoch})"
                          for m, s in sorted(answering.items())) or "none"
    if mine is None:
        raise DrError(f"mon {good} does not answer on its admin socket ({errors.get(good) or 'not running'}): its "
                      "store's state cannot be read, so kubectl dr cannot tell it holds the newest committed state; "
                      f"mons that answer: {described}",
                      hint="Choose a mon that answers (see `kubectl dr rook status`), or start this one first.")
    in_quorum = sorted(m for m, s in answering.items() if s.in_quorum)
    if in_quorum:
        raise DrError(f"the mons have a quorum ({', '.join(in_quorum)} in quorum): there is nothing to restore, "
                      "and forcing a quorum of one would throw the others' state away",
                      hint="See `kubectl dr rook status`; replace a failed mon through Rook instead.")
    newer = [(m, s) for m, s in sorted(answering.items()) if m != good and
             (s.monmap_epoch > mine.monmap_epoch or s.election_epoch > mine.election_epoch)]
    if newer:
        m, s = max(newer, key=lambda item: (item[1].monmap_epoch, item[1].election_epoch))
        raise DrError(f"mon {good} does not hold the newest state: mon {m} has monmap epoch {s.monmap_epoch} and "
                      f"election epoch {s.election_epoch}, mon {good} only {mine.monmap_epoch} and "
                      f"{mine.election_epoch}; restoring from {good} would lose what {m} committed since",
                      hint=f"Restore from mon {m}: kubectl dr rook mon restore-quorum {m}")
