"""Where the repository and its defaults come from: flags, environment, the config file, XDG."""

from __future__ import annotations

from pathlib import Path

import pyrage
import pytest

from kubectl_dr.repo import LocalRepository, RepoError, load_config, open_repository, resolve_repo_ref
from kubectl_dr.repo.s3 import S3Repository


def test_precedence_flag_env_config_default(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    assert resolve_repo_ref(None, {"HOME": home}) == f"{home}/.local/share/kubectl-dr/backups"
    assert resolve_repo_ref(None, {"HOME": home}, "s3://cfg/x") == "s3://cfg/x"
    env = {"HOME": home, "KUBECTL_DR_REPO": "s3://env/y"}
    assert resolve_repo_ref(None, env, "s3://cfg/x") == "s3://env/y"
    assert resolve_repo_ref("/srv/dr", env, "s3://cfg/x") == "/srv/dr"


def test_config_file_supplies_defaults(tmp_path: Path) -> None:
    key = pyrage.x25519.Identity.generate()
    identity = tmp_path / "id.txt"
    identity.write_text(f"{key}\n")
    config = tmp_path / "kubectl-dr" / "config.yaml"
    config.parent.mkdir()
    config.write_text(
        "repository: s3://backups/prod\n"
        "s3:\n  endpoint: https://minio.example.com:9000\n  region: eu-west-1\n  addressingStyle: path\n"
        f"encryption:\n  recipients: [{key.to_public()}]\n  identities: [{identity}]\n"
    )
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    loaded = load_config(env)
    assert loaded.path == config and loaded.repository == "s3://backups/prod"
    repo = open_repository(None, env)
    assert isinstance(repo, S3Repository) and repo.location == "s3://backups/prod"
    assert repo.settings.endpoint == "https://minio.example.com:9000" and repo.settings.region == "eu-west-1"
    assert [r.text for r in repo.recipients] == [str(key.to_public())] and len(repo.identities) == 1
    # Flags and the environment come first.
    flagged = open_repository(str(tmp_path / "local"), {**env, "AWS_ENDPOINT_URL": "http://other:9000"},
                              recipients=[])
    assert isinstance(flagged, LocalRepository)
    assert [r.text for r in flagged.recipients] == [str(key.to_public())]  # an empty flag list: the defaults
    other = open_repository(None, {**env, "AWS_ENDPOINT_URL": "http://other:9000"}, s3_endpoint="http://flag:1")
    assert isinstance(other, S3Repository) and other.settings.endpoint == "http://flag:1"


@pytest.mark.parametrize(("text", "error"), [
    ("repo: /x\n", "unknown key 'repo'"),
    ("s3:\n  endpiont: x\n", "unknown key s3.endpiont"),
    ("s3: yes\n", "s3 in the config file .* must be a mapping"),
    ("encryption:\n  recipients: 5\n", "must be a list of strings"),
    ("- a\n- b\n", "must be a mapping"),
    ("key: [unclosed\n", "not valid YAML"),
])
def test_a_malformed_config_file_is_an_error(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(RepoError, match=error):
        load_config({"KUBECTL_DR_CONFIG": str(path)})


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="does not exist"):
        load_config({"KUBECTL_DR_CONFIG": str(tmp_path / "missing.yaml")})
    assert load_config({"HOME": str(tmp_path)}).path is None


@pytest.mark.parametrize("ref", ["gs://b/p", "S3://b/p", "s3:/b/p", "Azure://c/p", "azure:/c/p", "file:///srv/dr"])
def test_an_unknown_repository_scheme_is_refused_wherever_it_comes_from(tmp_path: Path, ref: str) -> None:
    from kubectl_dr.errors import UsageError

    env = {"HOME": str(tmp_path)}
    for where, call in (("--repo", lambda: resolve_repo_ref(ref, env)),
                        ("KUBECTL_DR_REPO", lambda: resolve_repo_ref(None, {**env, "KUBECTL_DR_REPO": ref})),
                        ("the config file", lambda: resolve_repo_ref(None, env, ref))):
        with pytest.raises(UsageError, match=f"unknown repository scheme .*{where}") as info:
            call()
        assert "s3://BUCKET/PREFIX" in (info.value.hint or "")


def test_a_restic_repository_where_only_ours_are_taken_says_so(tmp_path: Path) -> None:
    from kubectl_dr.errors import UsageError

    env = {"HOME": str(tmp_path)}
    with pytest.raises(UsageError, match="--repo restic:/x is a restic repository, which this command does") as info:
        resolve_repo_ref("restic:/x", env)
    assert "pvc backup" in (info.value.hint or "") and "s3://BUCKET/PREFIX" in (info.value.hint or "")
    for where, call in (("KUBECTL_DR_REPO", lambda: resolve_repo_ref(None, {**env, "KUBECTL_DR_REPO": "restic:/x"})),
                        ("the config file", lambda: resolve_repo_ref(None, env, "restic:/x"))):
        with pytest.raises(UsageError, match=f"{where}.* names a restic repository .*given with --repo"):
            call()


def test_paths_with_a_colon_are_still_paths(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    for ref in ("./a:b", "/srv/dr:old", "~/dr:1", "backups"):
        assert resolve_repo_ref(ref, env).endswith(ref.lstrip("./~"))
