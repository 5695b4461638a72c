"""The pure parts of the Rook-Ceph commands: Rook's formats, monmaptool's output, the choice of GOOD."""

from __future__ import annotations

import pytest

from kubectl_dr.errors import DrError
from kubectl_dr.rook import objects
from kubectl_dr.rook.monexec import MonStatus
from kubectl_dr.rook.monmap import Monmap, check_good
from kubectl_dr.rook.restore import store_path
from kubectl_dr.rook.runbook import runbook

# monmaptool --print of Debian 12's 16.2.15, as the loopback's mons print it.
PRINTED = """monmaptool: monmap file /tmp/kubectl-dr-monmap
epoch 1
fsid d159dd19-dfdc-4671-b861-c235331a85b5
last_changed 2026-12-06T09:27:01.377891+0000
created 2026-12-06T09:27:01.377891+0000
min_mon_release 16 (pacific)
election_strategy: 1
0: [v2:127.0.0.1:13300/0,v1:127.0.0.1:16789/0] mon.a
1: [v2:127.0.0.1:13301/0,v1:127.0.0.1:16790/0] mon.b
2: [v2:127.0.0.1:13302/0,v1:127.0.0.1:16791/0] mon.c
"""


def status(name: str, state: str = "probing", election: int = 10, monmap_epoch: int = 1,
           quorum: tuple[str, ...] = ()) -> MonStatus:
    return MonStatus(name, state, election, quorum, monmap_epoch, ("a", "b", "c"), "fsid")


def test_monmap_print_is_read_back() -> None:
    m = Monmap.parse(PRINTED)
    assert m.epoch == 1 and m.fsid == "d159dd19-dfdc-4671-b861-c235331a85b5"
    assert list(m.mons) == ["a", "b", "c"]
    assert m.mons["b"] == "[v2:127.0.0.1:13301/0,v1:127.0.0.1:16790/0]"
    with pytest.raises(DrError, match="cannot read monmaptool"):
        Monmap.parse("monmaptool: monmap file x\ncouldn't open x: (2) No such file or directory\n")


def test_mon_status_maps_quorum_ranks_to_names() -> None:
    mons = [{"rank": 0, "name": "b"}, {"rank": 1, "name": "a"}, {"rank": 2, "name": "c"}]
    s = MonStatus.parse({"name": "a", "state": "leader", "election_epoch": 14, "quorum": [0, 2],
                         "monmap": {"epoch": 3, "fsid": "f", "mons": mons}})
    assert s.quorum == ("b", "c") and s.in_quorum and s.monmap_epoch == 3


def test_good_must_answer_hold_the_newest_state_and_there_must_be_no_quorum() -> None:
    check_good("a", {"a": status("a"), "b": None, "c": None}, {"b": "pod CrashLoopBackOff", "c": "no pod"})
    with pytest.raises(DrError, match=r"mon c does not answer on its admin socket \(pod CrashLoopBackOff\).*"
                                      r"mons that answer: a \(probing, election epoch 10, monmap epoch 1\)"):
        check_good("c", {"a": status("a"), "c": None}, {"c": "pod CrashLoopBackOff"})
    with pytest.raises(DrError, match="mon b has monmap epoch 2 and election epoch 9, mon a only 1 and 10") as exc:
        check_good("a", {"a": status("a"), "b": status("b", election=9, monmap_epoch=2)}, {})
    assert exc.value.hint == "Restore from mon b: kubectl dr rook mon restore-quorum b"
    with pytest.raises(DrError, match="election epoch 12, mon a only 1 and 10"):
        check_good("a", {"a": status("a"), "b": status("b", election=12)}, {})
    with pytest.raises(DrError, match=r"the mons have a quorum \(a, c in quorum\)"):
        check_good("a", {"a": status("a", "leader", quorum=("a", "c")), "c": status("c", "peon", quorum=("a", "c"))},
                   {})


def test_rook_formats() -> None:
    eps = objects.parse_endpoints("a=10.0.0.1:6789,b=10.0.0.2:6789")
    assert [(e.mon, e.address) for e in eps] == [("a", "10.0.0.1:6789"), ("b", "10.0.0.2:6789")]
    assert objects.format_endpoints(eps[:1]) == "a=10.0.0.1:6789"
    with pytest.raises(DrError, match="cannot read the entry"):
        objects.parse_endpoints("a=10.0.0.1:6789,../x")
    entries = objects.split_mon_host("[v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:10.0.0.2:3300,v1:10.0.0.2:6789]")
    assert entries == ["[v2:10.0.0.1:3300,v1:10.0.0.1:6789]", "[v2:10.0.0.2:3300,v1:10.0.0.2:6789]"]
    assert objects.entry_for(entries, "10.0.0.2:6789") == entries[1]
    assert objects.entry_for(objects.split_mon_host("10.0.0.1:6789,10.0.0.2:6789"), "10.0.0.2:6789") == "10.0.0.2:6789"
    assert objects.entry_for(entries, "10.0.0.3:6789") is None
    with pytest.raises(DrError, match="is not a mon ID"):
        objects.valid_mon_id("a;rm -rf /")


def test_runbook_names_this_cluster_and_store_path_follows_the_mount() -> None:
    book = runbook("rook-ceph", "a", ["b", "c"], {"fsid": "F", "address": "10.0.0.1:6789",
                                                  "monHost": "[v2:10.0.0.1:3300,v1:10.0.0.1:6789]"}, "rook-ceph")
    assert "fsid F" in book and "monmaptool /tmp/kubectl-dr-monmap --rm b --rm c" in book
    assert "kubectl -n rook-ceph scale deployment rook-ceph-mon-c --replicas=0" in book
    assert '{"data": {"data": "a=10.0.0.1:6789"}}' in book
    deployment = {"spec": {"template": {"spec": {"containers": [
        {"name": "mon", "volumeMounts": [{"mountPath": "/var/lib/ceph/mon/ceph-a"}]}]}}}}
    assert store_path(deployment, "a") == "/var/lib/ceph/mon/ceph-a"
