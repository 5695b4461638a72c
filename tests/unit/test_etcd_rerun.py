"""The etcd jobs' rerun hints: the command the user typed, ready to paste, pinned to what the run used."""

from __future__ import annotations

import shlex
from pathlib import Path

from kubectl_dr.etcd.replace import Replacement
from kubectl_dr.etcd.restore.run import command_line
from kubectl_dr.etcd.topology import Discovered
from kubectl_dr.runs.run import Run
from kubectl_dr.session import Session
from kubectl_dr.ui.console import TerminalConsole
from kubectl_dr.ui.terminals import Terminals


def _never() -> object:
    raise AssertionError("a rerun hint needs no cluster")


def session(*argv: str) -> Session:
    return Session(console=TerminalConsole(terminals=Terminals(False, False, False)), run=Run(shlex.join(argv)),
                   connect=_never,  # type: ignore[arg-type]
                   argv=argv)


ENDPOINTS = ["--endpoints", "https://10.0.0.20:2379", "--cacert", "/etc/my pki/ca.crt"]


def test_restore_rerun_pins_the_snapshot_and_keeps_everything_else() -> None:
    s = session("etcd", "restore", "--from", "latest", "--from-cluster", "prod", *ENDPOINTS, "--yes")
    line = command_line(s, "20260101T000000Z-etcd-ab12cd", Path("/ignored"))
    assert line == ("kubectl dr etcd restore --endpoints https://10.0.0.20:2379 --cacert '/etc/my pki/ca.crt' --yes "
                    "--from 20260101T000000Z-etcd-ab12cd")
    # Pasted back, the shell gives the same words: a path with a space stays one argument.
    assert shlex.split(line)[7] == "/etc/my pki/ca.crt"


def test_restore_rerun_keeps_another_clusters_consent_and_a_file_source() -> None:
    s = session("etcd", "restore", "--from=snap.db", "--from-other-cluster", "--dry-run=client")
    assert command_line(s, None, Path("snap.db")) == "kubectl dr etcd restore --from=snap.db --from-other-cluster"
    s = session("etcd", "restore", "--from", "0123abcd", "--from-other-cluster", "--yes")
    assert command_line(s, "20260101T000000Z-etcd-0123abcd", Path("/x")) == (
        "kubectl dr etcd restore --from-other-cluster --yes --from 20260101T000000Z-etcd-0123abcd")


def test_restore_rerun_with_a_longer_hold_replaces_the_old_one() -> None:
    s = session("etcd", "restore", "--from", "latest", "--hold-timeout=30", *ENDPOINTS, "--yes")
    line = command_line(s, "20260101T000000Z-etcd-ab12cd", Path("/x"), hold_timeout=60)
    assert "--hold-timeout=30" not in line and line.endswith(
        "--yes --from 20260101T000000Z-etcd-ab12cd --hold-timeout 60")


def test_restore_rerun_without_an_argv_names_the_snapshot() -> None:
    assert command_line(session(), None, Path("/srv/snap.db")) == "kubectl dr etcd restore --from /srv/snap.db"
    assert command_line(session(), "X-1", Path("/x")) == "kubectl dr etcd restore --from X-1"


def test_member_replace_rerun_is_the_command_as_typed() -> None:
    s = session("--context", "prod", "etcd", "member", "replace", "cp-2", "--yes", "--undo")
    job = Replacement(s, Discovered(()), "cp-2", "kube-system", "busybox")
    assert job.rerun() == "kubectl dr --context prod etcd member replace cp-2 --yes"
    assert job.rerun(undo=True) == "kubectl dr --context prod etcd member replace cp-2 --yes --undo"
    assert Replacement(session(), Discovered(()), "cp-3", "kube-system", "busybox").rerun() == (
        "kubectl dr etcd member replace cp-3 --yes")
