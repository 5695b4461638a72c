"""Backup IDs: a UTC timestamp then a readable slug, so that sorting by name sorts by time.

An ID, a part's name and every key or path derived from them is one plain name: whoever can write
the repository must not be able to make a listing, a copy or a restore reach outside it (DESIGN §8).
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

from kubectl_dr.repo.errors import RepoError

_UNSAFE = re.compile(r"[^a-z0-9.]+")
MAX_SLUG = 80
# Far below NAME_MAX (255) and S3's 1024-byte keys, leaving room for the temp prefixes and suffixes.
MAX_NAME_BYTES = 200
# What the tool itself writes (a timestamp and a slug); anything else in a manifest was not written by it.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def slugify(text: str) -> str:
    slug = re.sub(r"\.{2,}", ".", _UNSAFE.sub("-", text.lower())).strip("-.")
    return slug[:MAX_SLUG].rstrip("-.") or "backup"


def base_id(moment: datetime, type: str, name_hint: str | None) -> str:
    """``20261122T015512Z-pvc-shop-data-db-0`` for type ``pvc`` and hint ``shop/data-db-0``."""
    stamp = moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    slug = slugify(f"{type}-{name_hint}" if name_hint else type)
    return f"{stamp}-{slug}"


def with_suffix(backup_id: str) -> str:
    """The same ID with a short random suffix, for two backups of one thing within one second."""
    return f"{backup_id}-{secrets.token_hex(2)}"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one component of a path or an S3 key in a repository (None: it can)."""
    if not name:
        return "it is empty"
    if "\0" in name:
        return "it contains a NUL character"
    if "/" in name or "\\" in name:
        return "it contains a slash"
    if ".." in name or name == ".":
        return "it contains '..'" if ".." in name else "it is '.'"
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        return f"it is {size} bytes long (at most {MAX_NAME_BYTES})"
    return None


def id_problem(backup_id: str) -> str | None:
    """Why ``backup_id`` is not a backup ID (None: it is one)."""
    problem = name_problem(backup_id)
    if problem is None and not _ID.fullmatch(backup_id):
        problem = "only letters, digits, '.', '_' and '-' are allowed, starting with a letter or a digit"
    return problem


def check_id(backup_id: str) -> str:
    """``backup_id`` itself, or a RepoError saying why it is not a backup ID."""
    problem = id_problem(backup_id)
    if problem is not None:
        shown = backup_id if len(backup_id) <= 60 else f"{backup_id[:40]}…"
        raise RepoError(f"invalid backup ID {shown!r}: {problem}")
    return backup_id
