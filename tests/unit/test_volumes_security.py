"""The rescue pod's security plan, and the plan after a Pod Security rejection (pure logic)."""

from __future__ import annotations

from kubectl_dr.volumes import security


def test_root_plan_is_replanned_as_restricted_once() -> None:
    identity = {"runAsUser": 1000, "fsGroup": 2000}
    root = security.plan(security.UNKNOWN, identity, write=True)
    assert root.root and root.pod["runAsUser"] == 0
    better = security.replan(root)
    assert better is not None and not better.root and better.level == security.RESTRICTED
    assert better.pod["runAsUser"] == 1000 and better.pod["fsGroup"] == 2000 and better.write
    assert better.container["capabilities"] == {"drop": ["ALL"]} and better.notes
    assert security.replan(better) is None  # nothing meets more than "restricted"
