"""Authentication: verified client certificates (user = CN, groups = O) and static bearer tokens.

The tokens file uses kube-apiserver's ``--token-auth-file`` CSV format: ``token,user,uid,"group1,group2"``.
Every authenticated user also gets ``system:authenticated``, as a real server adds it.
"""

from __future__ import annotations

import csv
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

ADMIN_GROUPS = frozenset({"system:masters", "kubeadm:cluster-admins"})


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return bool(ADMIN_GROUPS.intersection(self.groups))


def load_tokens(path: Path | None) -> dict[str, User]:
    tokens: dict[str, User] = {}
    if path is None or not path.exists():
        return tokens
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if len(row) < 2 or not row[0].strip() or row[0].startswith("#"):
                continue
            groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
            tokens[row[0].strip()] = User(row[1], (*groups, "system:authenticated"),
                                          row[2] if len(row) > 2 else "")
    return tokens


def _cert_user(peercert: dict[str, Any]) -> User | None:
    cn = ""
    orgs: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    if not cn:
        return None
    return User(cn, (*orgs, "system:authenticated"))


def authenticate(request: web.Request, tokens: dict[str, User]) -> User | None:
    """The user of a request, or None when it carries no valid credentials."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return tokens.get(header[7:].strip())
    transport = request.transport
    if transport is not None:
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            peercert = ssl_object.getpeercert()
            if peercert:
                return _cert_user(peercert)
    return None
