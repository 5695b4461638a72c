"""Pure rules of etcd membership changes: quorum arithmetic, `--initial-cluster`, and the static pod's flags.

No I/O here, so every rule is unit-tested on its own.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from kubectl_dr.errors import DrError
from kubectl_dr.etcd.errors import EtcdError
from kubectl_dr.etcd.model import MemberInfo
from kubectl_dr.nodes import staticpods
from kubectl_dr.units import count


class QuorumRefused(EtcdError):
    """Replacing the member now would leave the cluster without quorum: nothing was changed."""


def quorum(voting: int) -> int:
    """Votes a cluster of `voting` members needs for anything (raft majority)."""
    return voting // 2 + 1


@dataclass(frozen=True)
class QuorumCheck:
    voting: int  # voting members now (learners never vote)
    healthy_others: list[str]  # voting members other than the target that answered a health check
    unhealthy_others: list[str]

    @property
    def after_removal(self) -> int:
        return self.voting - 1

    @property
    def needed(self) -> int:
        return quorum(self.after_removal)

    @property
    def ok(self) -> bool:
        return self.after_removal >= 1 and len(self.healthy_others) >= self.needed


def check_quorum(members: list[MemberInfo], healthy_ids: set[str], target_id: str, target_name: str) -> QuorumCheck:
    """Would the rest of the cluster keep quorum without the target? Raise QuorumRefused if not.

    The target is counted as lost whatever its health (it is stopped before it is removed); a learner
    of another replacement counts for nothing, and a second learner is refused (etcd allows one)."""
    voting = [m for m in members if not m.is_learner]
    others = [m for m in voting if m.id != target_id]
    check = QuorumCheck(len(voting), [m.name or m.id for m in others if m.id in healthy_ids],
                        [m.name or m.id for m in others if m.id not in healthy_ids])
    learners = [m for m in members if m.is_learner and m.id != target_id]
    if learners:
        raise QuorumRefused(
            f"etcd already has a learner ({', '.join(m.name or m.id for m in learners)}): another member is being "
            "added or replaced, and etcd takes one learner at a time",
            hint="Wait until it is promoted (kubectl dr etcd status shows LEARNER false), or finish that "
                 "replacement first. Nothing was changed.")
    if check.after_removal < 1:
        raise QuorumRefused(
            f"the etcd member {target_name} is the only voting member: removing it would leave no cluster",
            hint="A single-member etcd cannot be repaired by replacing its member: restore it from a snapshot "
                 "instead. Nothing was changed.")
    if not check.ok:
        down = ", ".join(check.unhealthy_others) or "none"
        raise QuorumRefused(
            f"replacing the etcd member {target_name} would lose quorum: without it the cluster has "
            f"{count(check.after_removal, 'voting member')}, which need {check.needed} healthy to agree, and only "
            f"{len(check.healthy_others)} {'is' if len(check.healthy_others) == 1 else 'are'} healthy "
            f"(unhealthy besides {target_name}: {down})",
            hint="Bring the unhealthy members back first (or restore the cluster from a snapshot if they are "
                 "lost). Nothing was changed.")
    return check


def initial_cluster(members: list[MemberInfo], name: str, peer_urls: list[str]) -> str:
    """`--initial-cluster` for a member joining an existing cluster: every current member, by name.

    A member added but not started has no name yet; ours is the one with our peer URLs. etcd checks
    that this list has exactly the cluster's members, so nobody may be left out."""
    entries: list[str] = []
    ours = set(peer_urls)
    for m in members:
        member_name = name if ours & set(m.peer_urls) else m.name
        if not member_name:
            raise EtcdError(f"etcd member {m.id} has not started yet and has no name, so no --initial-cluster can "
                            "name it", hint="Another member is being added: wait until it started.")
        entries += [f"{member_name}={url}" for url in m.peer_urls]
    return ",".join(entries)


# --- the etcd static pod's manifest -----------------------------------------------------------------
def command_of(doc: dict[str, Any]) -> list[str]:
    return staticpods.command_of(doc, "etcd")


def set_flags(doc: dict[str, Any], flags: dict[str, str]) -> dict[str, Any]:
    """A copy of the manifest with these `--name=value` flags set in the etcd container's command/args."""
    out = copy.deepcopy(doc)
    containers = out["spec"]["containers"]
    index = next((i for i, c in enumerate(containers) if c.get("name") == "etcd"), 0)
    container = containers[index]
    for name, value in flags.items():
        done = False
        for key in ("command", "args"):
            parts = [str(a) for a in container.get(key) or []]
            for i, arg in enumerate(parts):
                if arg == f"--{name}" and i + 1 < len(parts):  # `--name value`
                    parts[i + 1] = value
                    done = True
                elif arg.startswith(f"--{name}="):
                    parts[i] = f"--{name}={value}"
                    done = True
            if done:
                container[key] = parts
                break
        if not done:
            key = "args" if container.get("args") else "command"
            container[key] = [*(container.get(key) or []), f"--{name}={value}"]
    return out


def host_path(doc: dict[str, Any], container_path: str, container_name: str = "etcd") -> str:
    """Where a path inside the static pod's container is on the node (an EtcdError if on no hostPath)."""
    try:
        return staticpods.host_path(doc, container_path, container_name)
    except DrError as exc:
        raise EtcdError(exc.message) from None


def aside_name(data_dir: str, run_id: str) -> str:
    """The name the old data dir is kept under, beside it: /var/lib/etcd.kubectl-dr-RUNID."""
    return f"{data_dir.rstrip('/')}.kubectl-dr-{re.sub(r'[^A-Za-z0-9-]', '-', run_id)}"
