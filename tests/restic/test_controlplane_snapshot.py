"""A control-plane snapshot in a restic repository is untrusted input: its list of files decides which of the
snapshot's files are read and under which part names they are staged, never a path outside the snapshot or a
part name outside the staging backup, and every file must match the list's size and SHA-256."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubectl_dr import cleanup
from kubectl_dr.controlplane import restic_store
from kubectl_dr.errors import DrError
from kubectl_dr.repo.restic import localfs
from kubectl_dr.repo.restic.backend import LocalBackend
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.ui.console import TerminalConsole
from kubectl_dr.ui.terminals import Terminals
from tests.restic.oracle import PASSWORD

CA = b"-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n"


def _snapshot(tmp_path: Path, records: list[dict[str, Any]]) -> tuple[Repository, Any]:
    """A snapshot shaped as ours: /etc/kubernetes/pki/ca.crt and /kubectl-dr/control-plane.json."""
    src = tmp_path / "src"
    (src / "etc/kubernetes/pki").mkdir(parents=True)
    (src / "etc/kubernetes/pki/ca.crt").write_bytes(CA)
    (src / "kubectl-dr").mkdir()
    (src / "kubectl-dr/control-plane.json").write_text(json.dumps({"node": "cp-0", "root": "/etc/kubernetes",
                                                                    "encryptionConfig": None, "files": records}))
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD.encode())
    return repo, _backup_root(repo, src)


def _backup_root(repo: Repository, src: Path) -> Any:
    # backup_dir wraps a directory in its snapshot path; a snapshot of "/" is the tree of src itself.
    snap = localfs.backup_dir(repo, src, snapshot_path="/x", hostname="cp-0", tags=["kind=control-plane"])
    (root,) = repo.load_tree(snap.tree)
    snap.tree, snap.id = str(root.subtree), ""
    repo.save_snapshot(snap)
    return snap


@pytest.fixture(autouse=True)
def _staging_removed() -> Iterator[None]:
    """The staging directories go as they go when a command ends (its cleanup stack)."""
    yield
    assert cleanup.current().unwind(lambda _: None) == []


def _record(**changes: Any) -> dict[str, Any]:
    return {"kind": "file", "path": "/etc/kubernetes/pki/ca.crt", "part": "f000-ca.crt", "size": len(CA),
            "sha256": hashlib.sha256(CA).hexdigest(), "mode": "0644", "uid": 0, "gid": 0, "role": "shared",
            "restore": True, **changes}


def _console() -> TerminalConsole:
    return TerminalConsole(terminals=Terminals(False, False, False))


def test_a_good_list_stages_a_backup_the_restore_reads(tmp_path: Path) -> None:
    repo, snap = _snapshot(tmp_path, [_record()])
    staged, backup_id = restic_store.stage(repo, snap, _console())
    backup = staged.get(backup_id)
    with staged.open_part(backup, "f000-ca.crt") as f:
        assert f.read() == CA
    assert backup.manifest.details["resticSnapshot"] == snap.id


@pytest.mark.parametrize(("changes", "said"), [
    ({"path": "/etc/kubernetes/../../root/.ssh/id"}, "not a plain absolute path"),
    ({"path": "/etc/kubernetes/pki/other.key"}, "has no /etc/kubernetes/pki/other.key"),
    ({"sha256": "0" * 64}, "its list says"),
    ({"size": 1}, "its list says"),
    ({"part": "../../escape"}, "invalid part name"),
    ({"size": "many"}, "malformed"),
])
def test_a_tampered_list_is_refused_before_anything_is_staged(tmp_path: Path, changes: dict[str, Any],
                                                              said: str) -> None:
    repo, snap = _snapshot(tmp_path, [_record(**changes)])
    with pytest.raises(Exception, match=said) as refused:
        restic_store.stage(repo, snap, _console())
    assert isinstance(refused.value, DrError)
