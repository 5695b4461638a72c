"""The rules of a member replacement: quorum counted without the target, --initial-cluster, manifest flags."""

from __future__ import annotations

from typing import Any

import pytest

from kubectl_dr.etcd.errors import EtcdError
from kubectl_dr.etcd.membership import (
    QuorumRefused,
    aside_name,
    check_quorum,
    host_path,
    initial_cluster,
    quorum,
    set_flags,
)
from kubectl_dr.etcd.model import MemberInfo


def members(n: int, learner: int | None = None) -> list[MemberInfo]:
    return [MemberInfo(f"{i}a", f"cp-{i}", [f"https://10.0.0.{i}:2380"], [f"https://10.0.0.{i}:2379"],
                       is_learner=i == learner) for i in range(1, n + 1)]


def test_quorum() -> None:
    assert [quorum(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_dead_member_of_three_can_be_replaced() -> None:
    check = check_quorum(members(3), {"1a", "3a"}, "2a", "cp-2")
    assert (check.after_removal, check.needed, check.healthy_others) == (2, 2, ["cp-1", "cp-3"])


def test_healthy_member_while_another_is_down_is_refused() -> None:
    with pytest.raises(QuorumRefused,
                       match=r"lose quorum.*2 voting members, which need 2.*only 1 is healthy.*besides cp-1: cp-3"):
        check_quorum(members(3), {"1a", "2a"}, "1a", "cp-1")


def test_five_members_two_down_still_fine() -> None:
    assert check_quorum(members(5), {"1a", "2a", "3a"}, "5a", "cp-5").ok


def test_single_member_and_second_learner_refused() -> None:
    with pytest.raises(QuorumRefused, match="only voting member"):
        check_quorum(members(1), {"1a"}, "1a", "cp-1")
    with pytest.raises(QuorumRefused, match=r"already has a learner .*cp-3"):
        check_quorum(members(3, learner=3), {"1a", "2a"}, "2a", "cp-2")


def test_initial_cluster_names_the_unstarted_member_by_its_peer_url() -> None:
    listed = members(3)
    listed[1].name = ""  # added, not started
    assert initial_cluster(listed, "cp-2", ["https://10.0.0.2:2380"]) == (
        "cp-1=https://10.0.0.1:2380,cp-2=https://10.0.0.2:2380,cp-3=https://10.0.0.3:2380")
    listed[2].name = ""
    with pytest.raises(EtcdError, match="has not started"):
        initial_cluster(listed, "cp-2", ["https://10.0.0.2:2380"])


def pod(command: list[str], args: list[str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "etcd", "command": command,
                                 "volumeMounts": [{"name": "etcd-data", "mountPath": "/var/lib/etcd"},
                                                  {"name": "certs", "mountPath": "/etc/kubernetes/pki/etcd"}]}
    if args is not None:
        container["args"] = args
    return {"spec": {"containers": [container],
                     "volumes": [{"name": "etcd-data", "hostPath": {"path": "/data/etcd"}},
                                 {"name": "certs", "hostPath": {"path": "/etc/kubernetes/pki/etcd"}}]}}


def test_set_flags_replaces_both_spellings_and_appends_missing() -> None:
    doc = pod(["etcd", "--name=cp-1", "--initial-cluster-state", "new", "--data-dir=/var/lib/etcd"])
    out = set_flags(doc, {"initial-cluster-state": "existing", "initial-cluster": "cp-1=https://a:2380"})
    assert out["spec"]["containers"][0]["command"] == [
        "etcd", "--name=cp-1", "--initial-cluster-state", "existing", "--data-dir=/var/lib/etcd",
        "--initial-cluster=cp-1=https://a:2380"]
    assert doc["spec"]["containers"][0]["command"][3] == "new"  # a copy: the original is untouched
    with_args = set_flags(pod(["etcd"], ["--initial-cluster-state=new"]), {"initial-cluster-state": "existing"})
    assert with_args["spec"]["containers"][0]["args"] == ["--initial-cluster-state=existing"]


def test_host_path_follows_the_deepest_hostpath_mount() -> None:
    assert host_path(pod(["etcd"]), "/var/lib/etcd") == "/data/etcd"
    assert host_path(pod(["etcd"]), "/var/lib/etcd/member") == "/data/etcd/member"
    with pytest.raises(EtcdError, match="on no hostPath"):
        host_path(pod(["etcd"]), "/srv/etcd")
    assert aside_name("/var/lib/etcd/", "20261202T220035Z-fec989") == "/var/lib/etcd.kubectl-dr-20261202T220035Z-fec989"
