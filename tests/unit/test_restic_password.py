"""How a restic repository's password is found: restic's own order (command, file, environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubectl_dr.repo.errors import RepoError
from kubectl_dr.repo.restic.backend import LocalBackend
from kubectl_dr.repo.restic.location import backend_for, is_restic, read_password


def test_command_then_file_then_environment(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("  from-file \n")
    assert read_password({"RESTIC_PASSWORD": "env"}) == b"env"
    assert read_password({"RESTIC_PASSWORD": "env", "RESTIC_PASSWORD_FILE": str(pw)}) == b"from-file"
    assert read_password({"RESTIC_PASSWORD": "env"}, str(pw)) == b"from-file"
    assert read_password({"RESTIC_PASSWORD": "env", "RESTIC_PASSWORD_COMMAND": "echo 'from command'"}) == \
        b"from command"
    with pytest.raises(RepoError, match="mutually exclusive"):
        read_password({"RESTIC_PASSWORD_COMMAND": "echo x"}, str(pw))
    with pytest.raises(RepoError, match="no password"):
        read_password({})
    with pytest.raises(RepoError, match="cannot read the password file"):
        read_password({}, str(tmp_path / "missing"))
    with pytest.raises(RepoError, match="exited with 1"):
        read_password({"RESTIC_PASSWORD_COMMAND": "false"})


def test_repository_strings() -> None:
    assert is_restic("restic:/srv/r") and not is_restic("/srv/r") and not is_restic(None)
    backend = backend_for("restic:/srv/r")
    assert isinstance(backend, LocalBackend) and backend.root == Path("/srv/r")
    with pytest.raises(RepoError, match="not supported"):
        backend_for("restic:rest:http://host:8000/")
    with pytest.raises(RepoError, match="needs restic's repository string"):
        backend_for("restic:")
