"""Which backups to keep: restic's `forget` rules, applied per series.

A series is what a backup is *of*, never how it was taken: (type, namespace, claim) for volumes, so that
a claim's backups stay one series when its consumers, the API server address or its capacity change;
(type, cluster, member) for etcd snapshots; for any other type, the type and the source minus the keys
that describe how it was taken.

The rules mean what they mean in restic: ``last N`` keeps the N newest; ``hourly N`` keeps the newest
backup of each of the N most recent hours that have one (and likewise days, ISO weeks, months, years).
A backup kept by any rule is kept. Times are bucketed in the given time zone (local time, as restic).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from kubectl_dr.repo.manifest import Manifest

# Source keys that say *how* a backup was taken, not *what* it is of.
VOLATILE_SOURCE_KEYS = frozenset({
    "node", "endpoint", "context", "user", "pod", "server", "consumers", "capacity", "volume",
    "storageClass", "accessModes",
})


def series_key(manifest: Manifest) -> str:
    """What retention groups by; also shown to the user as the series' name.

    Backups of one claim (or member) in two clusters sharing the repository are two series: one cluster's
    newer backups must never count against the other's, nor its newest be the only one kept of both.
    """
    key = _what(manifest)
    return f"{key} @{manifest.cluster.uid}" if manifest.cluster is not None else key


def _what(manifest: Manifest) -> str:
    source = manifest.source
    if manifest.type == "pvc":
        return f"pvc {source.get('namespace', '')}/{source.get('pvc', '')}"
    if manifest.type == "etcd-snapshot":
        cluster = source.get("cluster") or source.get("etcdCluster") or ""
        return f"etcd-snapshot {cluster} {source.get('member') or ''}".rstrip()
    # A control-plane backup is of one node's /etc/kubernetes (its own kubeconfigs, serving certificates and
    # static pods): one series per node, as restic groups by host. Pruned as one series, a newer backup of cp-2
    # would have removed cp-1's only one.
    kept = {"node"} if manifest.type == "control-plane" else set()
    stable = {k: v for k, v in source.items() if k not in VOLATILE_SOURCE_KEYS or k in kept}
    return f"{manifest.type} {json.dumps(stable, sort_keys=True, default=str)}"


RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
_DURATION = re.compile(r"(\d+)([ymdh])")
_NS = 1_000_000_000


@dataclass(frozen=True)
class Duration:
    """restic's `--keep-within` duration: years, months, days and hours (`1y6m`, `14d`, `36h`), counted
    back from a moment as Go's AddDate counts (months and days overflow into the next: Mar 31 - 1m = Mar 3)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        spec = text.strip()
        values: dict[str, int] = {}
        at = 0
        for match in _DURATION.finditer(spec):
            if match.start() != at:
                break
            values[match.group(2)] = int(match.group(1))  # a unit given twice: the last one counts, as in restic
            at = match.end()
        if not spec or at != len(spec):
            raise ValueError(f"{text!r} is not a duration: give numbers with units y, m, d, h, such as 7d, "
                             "1y6m or 36h (restic's format)")
        return cls(values.get("y", 0), values.get("m", 0), values.get("d", 0), values.get("h", 0))

    @property
    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def __str__(self) -> str:
        return "".join(f"{n}{unit}" for n, unit in ((self.years, "y"), (self.months, "m"), (self.days, "d"),
                                                     (self.hours, "h")) if n)

    def before_ns(self, moment_ns: int) -> int | None:
        """The moment this long before `moment_ns` (ns since the epoch, UTC); None before year 1."""
        seconds, rest = divmod(moment_ns, _NS)
        t = datetime.fromtimestamp(seconds, timezone.utc)
        months = (t.year - self.years) * 12 + (t.month - 1) - self.months
        year, month0 = divmod(months, 12)
        try:
            start = datetime(year, month0 + 1, 1, t.hour, t.minute, t.second, tzinfo=timezone.utc)
            back = start + timedelta(days=t.day - 1 - self.days, hours=-self.hours)
        except (ValueError, OverflowError):
            return None
        return (int(back.timestamp()) * _NS) + rest


@dataclass(frozen=True)
class Policy:
    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    # restic's --keep-within and --keep-tag (each a list of tags a snapshot must all have); restic
    # repositories only, where snapshots carry tags.
    within: Duration | None = None
    tags: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        for rule in RULES:
            value = getattr(self, rule)
            if value is not None and value < 0:
                raise ValueError(f"--keep-{rule} must be 0 or more, not {value}")

    @property
    def empty(self) -> bool:
        return (all(getattr(self, rule) is None for rule in RULES) and (self.within is None or self.within.zero)
                and not self.tags)

    def describe(self) -> str:
        parts = [f"{rule} {getattr(self, rule)}" for rule in RULES if getattr(self, rule) is not None]
        if self.within is not None and not self.within.zero:
            parts.append(f"within {self.within}")
        parts += [f"tag {','.join(tags)}" for tags in self.tags]
        return ", ".join(parts)


def _bucket(rule: str, moment: datetime, tz: tzinfo | None) -> Any:
    local = moment.astimezone(tz)
    if rule == "hourly":
        return (local.year, local.month, local.day, local.hour)
    if rule == "daily":
        return (local.year, local.month, local.day)
    if rule == "weekly":
        iso = local.isocalendar()
        return (iso[0], iso[1])
    if rule == "monthly":
        return (local.year, local.month)
    return local.year


@dataclass
class Decision:
    manifest: Manifest
    keep: bool
    reasons: list[str] = field(default_factory=list)


def plan(manifests: Sequence[Manifest], policy: Policy, *, tz: tzinfo | None = None,
         intact: Callable[[Manifest], bool] = lambda m: True) -> list[Decision]:
    """Keep or remove each backup, with the rules that keep it. ``intact(m)`` says whether a backup may
    stand as its series' newest verified one (asked newest first, only until one answers yes)."""
    if policy.within is not None or policy.tags:
        raise ValueError("--keep-within and --keep-tag apply to restic repositories only")
    groups: dict[str, list[Manifest]] = {}
    for m in sorted(manifests, key=lambda m: (m.created_at, m.id), reverse=True):
        groups.setdefault(series_key(m), []).append(m)
    decisions: list[Decision] = []
    for members in groups.values():
        left = {rule: getattr(policy, rule) for rule in RULES if getattr(policy, rule)}
        last_bucket: dict[str, Any] = {}
        series: list[Decision] = []
        for m in members:
            decision = Decision(m, False)
            for rule, count in left.items():
                if count <= 0:
                    continue
                if rule == "last":
                    decision.reasons.append("last")
                else:
                    bucket = _bucket(rule, m.created_at, tz)
                    if last_bucket.get(rule) == bucket:
                        continue
                    last_bucket[rule] = bucket
                    decision.reasons.append(rule)
                left[rule] = count - 1
            decision.keep = bool(decision.reasons)
            series.append(decision)
        for decision in series:  # the newest intact backup of a series is never removed
            if intact(decision.manifest):
                if not decision.keep:
                    decision.keep = True
                    decision.reasons.append("newest verified")
                break
        decisions += series
    return decisions
