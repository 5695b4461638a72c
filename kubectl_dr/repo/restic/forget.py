"""Which snapshots of a restic repository to keep: restic's own `forget` policy, bucket for bucket.

Grouped as `restic forget` groups by default (host and paths): our snapshots of a claim have host
NS/CLAIM and path /CLAIM, so a group is a claim. Within a group, newest first, each rule (last, hourly,
daily, weekly, monthly, yearly) keeps a snapshot whose bucket differs from the one it kept last, while
its count lasts; and, as restic 0.16 and later do, the oldest snapshot of the group is kept by a rule
that still has counts left (the longest history the counts allow). Buckets are taken in UTC: the times
we write are UTC, and restic reads a snapshot's time in the zone it was written with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from kubectl_dr.repo.restic.nodes import NS
from kubectl_dr.repo.restic.snapshots import Snapshot
from kubectl_dr.repo.retention import RULES, Policy


def _when(snap: Snapshot) -> datetime:
    return datetime.fromtimestamp(snap.time / NS, timezone.utc)


def _ymdh(d: datetime, nr: int) -> int:
    return d.year * 1_000_000 + d.month * 10_000 + d.day * 100 + d.hour


_BUCKETS: dict[str, Callable[[datetime, int], int]] = {
    "last": lambda d, nr: nr,
    "hourly": _ymdh,
    "daily": lambda d, nr: d.year * 10_000 + d.month * 100 + d.day,
    "weekly": lambda d, nr: d.isocalendar()[0] * 100 + d.isocalendar()[1],
    "monthly": lambda d, nr: d.year * 100 + d.month,
    "yearly": lambda d, nr: d.year,
}
_REASON = {"last": "last snapshot", "hourly": "hourly snapshot", "daily": "daily snapshot",
           "weekly": "weekly snapshot", "monthly": "monthly snapshot", "yearly": "yearly snapshot"}


@dataclass
class Decision:
    snapshot: Snapshot
    keep: bool
    group: str
    reasons: list[str] = field(default_factory=list)


def group_of(snap: Snapshot) -> str:
    return f"{snap.hostname} {','.join(sorted(snap.paths))}"


def apply(snapshots: Sequence[Snapshot], policy: Policy) -> list[Decision]:
    """Keep or forget each snapshot, with the rules that keep it (restic's reasons). An empty policy keeps all."""
    groups: dict[str, list[Snapshot]] = {}
    # Newest first; restic's sort is stable on time only, the ID breaks ties here so the answer is one.
    for snap in sorted(snapshots, key=lambda s: (-s.time, s.id)):
        groups.setdefault(group_of(snap), []).append(snap)
    decisions: list[Decision] = []
    now = time.time_ns()
    for group, members in groups.items():
        left = {rule: getattr(policy, rule) for rule in RULES if getattr(policy, rule)}
        last: dict[str, int] = {}
        cutoff = _within_cutoff(members, policy, now)
        for nr, snap in enumerate(members):
            decision = Decision(snap, policy.empty, group)
            for tags in policy.tags:  # not counted: every snapshot that has all of a list's tags
                if has_tags(snap, tags):
                    decision.reasons.append(f"has tags [{', '.join(tags)}]")
                    decision.keep = True
            if policy.within is not None and not policy.within.zero and (cutoff is None or snap.time > cutoff):
                decision.reasons.append(f"within {policy.within}")
                decision.keep = True
            for rule in list(left):
                if left[rule] <= 0:
                    continue
                value = _BUCKETS[rule](_when(snap), nr)
                oldest = nr == len(members) - 1
                if value != last.get(rule) or oldest:
                    reason = _REASON[rule]
                    decision.reasons.append(f"oldest {reason}" if value == last.get(rule) else reason)
                    last[rule] = value
                    left[rule] -= 1
                    decision.keep = True
            decisions.append(decision)
    return decisions


def has_tags(snap: Snapshot, tags: Sequence[str]) -> bool:
    """restic's HasTags: every tag of the list is on the snapshot (an empty tag: a snapshot without tags)."""
    for tag in tags:
        if tag == "" and not snap.tags:
            return True
        if tag not in snap.tags:
            return False
    return True


def _within_cutoff(members: Sequence[Snapshot], policy: Policy, now: int) -> int | None:
    """--keep-within counts back from the group's newest snapshot that is not in the future (restic's
    findLatestTimestamp), not from now: a group whose backups stopped keeps its last stretch."""
    if policy.within is None or policy.within.zero:
        return None
    past = [s.time for s in members if s.time < now]
    if not past:  # restic's zero time: every snapshot is after it
        return None
    return policy.within.before_ns(max(past))
