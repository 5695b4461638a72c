"""The session's command line: the exact command to paste in a rerun hint, whatever spelling was typed."""

from __future__ import annotations

import shlex

import pytest

from kubectl_dr.runs.run import Run
from kubectl_dr.session import Session, redact, without
from kubectl_dr.ui.console import TerminalConsole
from kubectl_dr.ui.terminals import Terminals


def _never() -> object:
    raise AssertionError("the command line needs no cluster")


def session(*argv: str) -> Session:
    return Session(console=TerminalConsole(terminals=Terminals(False, False, False)), run=Run(shlex.join(argv)),
                   connect=_never,  # type: ignore[arg-type]
                   argv=argv)


@pytest.mark.parametrize(("argv", "kept"), [
    (["pvc", "restore", "data", "-n", "shop", "--from", "latest"], ["pvc", "restore", "data"]),
    (["-nshop", "pvc", "restore", "data", "--from=latest", "--yes"], ["pvc", "restore", "data", "--yes"]),
    (["pvc", "restore", "--namespace=shop", "data", "--from", "x", "--clean"], ["pvc", "restore", "data", "--clean"]),
    (["--dry-run", "pvc", "restore", "data"], ["pvc", "restore", "data"]),  # bare: takes no value
    (["--dry-run", "client", "pvc", "restore", "data"], ["pvc", "restore", "data"]),
    (["pvc", "rescue", "data", "--", "ls", "-n", "x"], ["pvc", "rescue", "data", "--", "ls", "-n", "x"]),
])
def test_without_drops_flags_in_every_spelling(argv: list[str], kept: list[str]) -> None:
    assert without(argv, ["-n", "--namespace", "--from", "--dry-run"]) == kept


def test_command_line_is_pasteable() -> None:
    s = session("pvc", "restore", "data", "--repo", "/srv/my backups", "--from", "latest", "--yes")
    line = s.command_line(drop=["--from", "-n"], add=["-n", "shop", "--from", "20260101T000000Z-pvc-shop-data"])
    assert line == ("kubectl dr pvc restore data --repo '/srv/my backups' --yes -n shop "
                    "--from 20260101T000000Z-pvc-shop-data")
    assert shlex.split(line)[6] == "/srv/my backups"
    assert session().command_line(default=["pvc", "restore", "data"]) == "kubectl dr pvc restore data"


def test_a_password_in_a_url_never_reaches_a_hint() -> None:
    """A restic REST server's password typed into --repo: the hint shows *** where the user puts it back."""
    s = session("pvc", "restore", "data", "--repo", "restic:rest:https://dr:s3cr%40t@backup:8000/prod/",
                "--from=latest")
    line = s.command_line()
    assert "s3cr" not in line and "restic:rest:https://dr:***@backup:8000/prod/" in line
    assert redact("s3://bucket/prefix") == "s3://bucket/prefix" and redact("/data/a:b@c") == "/data/a:b@c"
