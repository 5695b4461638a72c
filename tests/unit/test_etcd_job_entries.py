"""The etcd jobs take what the CLI parsed as plain strings and refuse what does not go together themselves: before
they open a repository or connect to a cluster, with a usage error that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubectl_dr.errors import UsageError
from kubectl_dr.etcd import snapshot_run
from kubectl_dr.etcd import status as etcd_status
from kubectl_dr.etcd.restore import run as restore_run
from kubectl_dr.etcd.restore.options import RestoreOptions
from kubectl_dr.repo import LocalRepository
from kubectl_dr.repo.ref import RepoRef
from kubectl_dr.runs.run import Run
from kubectl_dr.session import Session
from kubectl_dr.ui.console import TerminalConsole
from kubectl_dr.ui.terminals import Terminals


def _never() -> object:
    raise AssertionError("refused before any cluster is asked")


def session(dry_run: str = "none", namespace: str | None = None) -> Session:
    return Session(console=TerminalConsole(terminals=Terminals(False, False, False)), run=Run("test"),
                   connect=_never, dry_run=dry_run, namespace_flag=namespace)  # type: ignore[arg-type]


@pytest.fixture
def untouched(tmp_path: Path) -> Path:
    """A repository path that must still not exist afterwards: nothing was opened or created."""
    return tmp_path / "repo"


def test_snapshot_into_restic_refuses_copies_and_encryption(untouched: Path) -> None:
    for where, opts in ((RepoRef(f"restic:{untouched}"), snapshot_run.SnapshotOptions(copy_to=("/elsewhere",))),
                        (RepoRef(f"restic:{untouched}", encrypt_to=("age1x",)), snapshot_run.SnapshotOptions())):
        with pytest.raises(UsageError, match="do not apply to a restic repository"):
            snapshot_run.run(session(), where, opts)
    assert not untouched.exists()


def test_snapshot_refuses_a_password_file_for_a_plain_repository(untouched: Path) -> None:
    with pytest.raises(UsageError, match="--password-file applies to a restic repository"):
        snapshot_run.run(session(), RepoRef(str(untouched), password_file="/pw"), snapshot_run.SnapshotOptions())
    assert not untouched.exists()


def test_restore_refuses_what_does_not_go_with_endpoints(untouched: Path) -> None:
    endpoints = ("https://10.0.0.20:2379",)
    with pytest.raises(UsageError, match="--no-bump-revision does not apply with --endpoints"):
        restore_run.run(session(), RepoRef(str(untouched)),
                        RestoreOptions("latest", endpoints=endpoints, no_bump=True))
    with pytest.raises(UsageError, match="does not go with --endpoints") as refused:
        restore_run.run(session(), RepoRef(f"restic:{untouched}"), RestoreOptions("latest", endpoints=endpoints))
    assert refused.value.hint is not None and "--from DIR/snapshot.db" in refused.value.hint
    with pytest.raises(UsageError, match="only apply with --endpoints"):
        restore_run.run(session(), RepoRef(str(untouched)), RestoreOptions("latest", cacert="/ca.crt"))
    assert not untouched.exists()


def test_restore_from_restic_takes_an_id_not_a_file(tmp_path: Path, untouched: Path) -> None:
    snapshot = tmp_path / "snapshot.db"
    snapshot.write_bytes(b"")
    with pytest.raises(UsageError, match="is a file here"):
        restore_run.run(session(), RepoRef(f"restic:{untouched}"), RestoreOptions(str(snapshot)))
    with pytest.raises(UsageError, match="--password-file applies to a restic repository"):
        restore_run.run(session(), RepoRef(str(untouched), password_file="/pw"), RestoreOptions(str(snapshot)))
    assert not untouched.exists()


def test_status_refuses_a_dry_run_and_node_with_endpoints() -> None:
    with pytest.raises(UsageError, match="cannot run as a dry run"):
        etcd_status.run(session("client"), etcd_status.StatusOptions())
    with pytest.raises(UsageError, match="--node does not apply with --endpoints"):
        etcd_status.run(session(), etcd_status.StatusOptions(node="cp-1", endpoints=["https://10.0.0.20:2379"]))


def test_the_pods_namespace_is_kube_system_unless_given() -> None:
    assert RestoreOptions("latest").namespace == "kube-system"
    assert RestoreOptions("latest", namespace_flag="dr").namespace == "dr"


def test_a_repo_ref_opens_the_repository_it_names(tmp_path: Path) -> None:
    opened = RepoRef(str(tmp_path)).open()
    assert isinstance(opened, LocalRepository) and opened.location == str(tmp_path)
    assert RepoRef("restic:/srv/restic").is_restic and not RepoRef(str(tmp_path)).is_restic
