"""The kubectl-dr config file: defaults for the repository, S3 and encryption.

``$KUBECTL_DR_CONFIG``, else ``$XDG_CONFIG_HOME/kubectl-dr/config.yaml`` (``~/.config/kubectl-dr/config.yaml``).
A missing file means no defaults; a malformed one is an error that names the key, never ignored::

    repository: s3://backups/prod          # used when neither --repo nor KUBECTL_DR_REPO is given
    s3:
      endpoint: https://minio.example.com:9000
      region: eu-west-1
      profile: backups                     # a profile of ~/.aws/config and ~/.aws/credentials
      caBundle: ~/.config/kubectl-dr/minio-ca.pem
      addressingStyle: path                # path | virtual | auto (path when an endpoint is set)
    azure:                                 # for azure://CONTAINER/PREFIX (AZURE_STORAGE_* variables win)
      account: mystorageaccount
      endpoint: https://mystorageaccount.blob.core.windows.net   # Azurite, a sovereign cloud
      keyFile: ~/.config/kubectl-dr/azure-key          # or sasTokenFile, or connectionStringFile:
                                                       # files the user keeps private, never the secret here
    encryption:
      recipients:                          # every backup is encrypted to these (age or SSH public keys,
        - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p   #  or files of them)
        - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI… ops@example.com
      identities:                          # private keys tried when reading encrypted backups
        - ~/.config/kubectl-dr/age-identity.txt
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubectl_dr.repo.errors import RepoError

ENV_VAR = "KUBECTL_DR_CONFIG"
_KEYS: dict[str, set[str] | None] = {
    "apiVersion": None,
    "kind": None,
    "repository": None,
    "s3": {"endpoint", "region", "profile", "caBundle", "addressingStyle"},
    "azure": {"account", "endpoint", "keyFile", "sasTokenFile", "connectionStringFile"},
    "encryption": {"recipients", "identities"},
}


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    repository: str | None = None
    s3: dict[str, Any] = field(default_factory=dict)
    azure: dict[str, Any] = field(default_factory=dict)
    recipients: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()


def config_path(env: Mapping[str, str]) -> Path:
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    xdg = env.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path(env.get("HOME") or str(Path.home())) / ".config"
    return base / "kubectl-dr" / "config.yaml"


def load_config(env: Mapping[str, str]) -> Config:
    import yaml

    path = config_path(env)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if env.get(ENV_VAR):
            raise RepoError(f"the config file {path} ({ENV_VAR}) does not exist") from None
        return Config()
    except OSError as exc:
        raise RepoError(f"cannot read the config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RepoError(f"the config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RepoError(f"the config file {path} must be a mapping (key: value), not {type(data).__name__}")
    for key, value in data.items():
        if key not in _KEYS:
            raise RepoError(f"the config file {path} has an unknown key {key!r}",
                            hint=f"Known keys: {', '.join(_KEYS)}.")
        allowed = _KEYS[key]
        if allowed is not None:
            if not isinstance(value, dict):
                raise RepoError(f"{key} in the config file {path} must be a mapping")
            unknown = set(value) - allowed
            if unknown:
                raise RepoError(f"the config file {path} has an unknown key {key}.{sorted(unknown)[0]}",
                                hint=f"Known keys under {key}: {', '.join(sorted(allowed))}.")
    encryption = data.get("encryption") or {}
    repository = data.get("repository")
    if repository is not None and not isinstance(repository, str):
        raise RepoError(f"repository in the config file {path} must be a path, an s3:// or an azure:// URL")
    return Config(
        path=path,
        repository=repository,
        s3=dict(data.get("s3") or {}),
        azure=dict(data.get("azure") or {}),
        recipients=_strings(encryption.get("recipients"), "encryption.recipients", path),
        identities=tuple(str(Path(p).expanduser()) for p in _strings(encryption.get("identities"),
                                                                     "encryption.identities", path)),
    )


def _strings(value: Any, key: str, path: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise RepoError(f"{key} in the config file {path} must be a list of strings")
