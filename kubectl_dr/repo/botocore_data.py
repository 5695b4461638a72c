"""The data botocore loads to build an S3 client, loaded leaner: the endpoint table cut to the services an
S3 repository's session can call, and every JSON file parsed into plain dicts.

Why: a client keeps what its session loaded for as long as it lives (its creator holds the endpoint
resolver, its service model the parsed model), and a `pvc backup` to S3 has to stay within 100 MiB of
peak RSS (issue 24). botocore's table of every AWS service in every partition (endpoints.json) takes
6.7 MiB parsed, of which S3's client needs one service; botocore parses every file into OrderedDicts,
which take 40-70 % more memory than the dicts that keep insertion order in every Python we support.
Measured beside a stock client (benchmarks/README.md): ~5 MiB less RSS for the same client.

Only botocore's public loader interface is used: ``Loader(file_loader=...)`` with an object that has the
``exists``/``load_file`` methods of botocore's own JSONFileLoader, registered as the session's
``data_loader`` component.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Collection, Mapping
from typing import Any

import botocore.loaders

# The clients a session behind an S3 repository can make: S3 itself, and those of the AWS credential chain
# (STS for an assumed role or a web identity, SSO and SSO-OIDC for IAM Identity Center, signin for
# `aws login`). Their entries in the endpoint table are kept as they are; others are dropped. The table is
# keyed by each service's endpoint prefix, not its name: SSO is `portal.sso`, SSO-OIDC `oidc`.
SESSION_SERVICES = frozenset({"s3", "sts", "portal.sso", "oidc", "signin"})
ENDPOINTS = "endpoints"  # botocore's endpoint table, data/endpoints.json
# How botocore names its data files on disk, in the order it tries them (its JSONFileLoader's).
_SUFFIXES = (".json", ".json.gz")


def only_services(table: Mapping[str, Any], services: Collection[str]) -> dict[str, Any]:
    """The endpoint table with each partition's services cut to ``services`` (their entries unchanged, and
    everything else of a partition kept: its regions, defaults, DNS suffix and variants)."""
    partitions = table.get("partitions")
    if not isinstance(partitions, list):
        return dict(table)  # a layout this code does not know: kept whole rather than guessed at
    return {**table, "partitions": [
        {**p, "services": {name: entry for name, entry in (p.get("services") or {}).items() if name in services}}
        if isinstance(p, Mapping) else p
        for p in partitions]}


def _read(path: str) -> bytes:
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as packed:
            return packed.read()
    with open(path, "rb") as f:
        return f.read()


class LeanJsonFiles(botocore.loaders.JSONFileLoader):
    """botocore's JSON data files as plain dicts, the endpoint table cut to ``services``. Both of the file
    loader's public methods are replaced: none of botocore's own file reading is used."""

    def __init__(self, services: Collection[str] = SESSION_SERVICES) -> None:
        self.services = frozenset(services)

    def exists(self, file_path: str) -> bool:
        return any(os.path.isfile(file_path + suffix) for suffix in _SUFFIXES)

    def load_file(self, file_path: str) -> Any:
        """The file's data (``file_path`` without its suffix, as botocore passes it), None when absent."""
        for suffix in _SUFFIXES:
            if os.path.isfile(file_path + suffix):
                data = json.loads(_read(file_path + suffix).decode("utf-8"))
                if os.path.basename(file_path) == ENDPOINTS and isinstance(data, Mapping):
                    return only_services(data, self.services)
                return data
        return None


def lean_loader(data_path: str | None) -> botocore.loaders.Loader:
    """A data loader like the one botocore makes for a session (``data_path`` is AWS_DATA_PATH or the
    config file's data_path, searched before botocore's own data, as botocore's create_loader does)."""
    extra = None
    if data_path:
        extra = [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)]
    return botocore.loaders.Loader(extra_search_paths=extra, file_loader=LeanJsonFiles())
