"""How a restic repository's password is found: restic's own order (command, file, environment)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from kubectl_dr.repo.errors import RepoError
from kubectl_dr.repo.restic.backend import LocalBackend
from kubectl_dr.repo.restic.location import backend_for, is_restic, read_password, shown
from kubectl_dr.repo.restic.restbackend import RestBackend


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
        backend_for("restic:sftp:user@host:/srv/restic")
    rest = backend_for("restic:rest:http://ann:s%3Acret@host:8000/a//b")
    assert isinstance(rest, RestBackend) and rest.base == "http://host:8000/a/b/"
    assert rest.describe() == "rest:http://ann:***@host:8000/a//b"  # as restic prints it: no password
    # What output names: the string --repo takes back, with restic: (every command the same), no password.
    assert shown("restic:rest:http://ann:s%3Acret@host:8000/a//b") == "restic:rest:http://ann:***@host:8000/a//b"
    assert shown(rest.describe()) == shown("restic:" + rest.describe()) == "restic:rest:http://ann:***@host:8000/a//b"
    assert shown("/srv/r") == "restic:/srv/r"
    assert rest.headers["Authorization"] == "Basic " + base64.b64encode(b"ann:s:cret").decode()
    from_env = backend_for("restic:rest:https://host/", env={"RESTIC_REST_USERNAME": "u", "RESTIC_REST_PASSWORD": "p"})
    assert isinstance(from_env, RestBackend) and from_env.user == "u" and from_env.base == "https://host/"
    for bad in ("restic:rest:unix:/run/rest.sock", "restic:rest:http://host/a/../b/", "restic:rest:ftp://host/"):
        with pytest.raises(RepoError, match="rest:http"):
            backend_for(bad)
    with pytest.raises(RepoError, match="needs restic's repository string"):
        backend_for("restic:")
