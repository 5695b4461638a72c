"""Backup IDs: a UTC timestamp then a readable slug, so that sorting by name sorts by time."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

_UNSAFE = re.compile(r"[^a-z0-9.]+")
MAX_SLUG = 80


def slugify(text: str) -> str:
    slug = _UNSAFE.sub("-", text.lower()).strip("-.")
    return slug[:MAX_SLUG].rstrip("-.") or "backup"


def base_id(moment: datetime, type: str, name_hint: str | None) -> str:
    """``20261122T015512Z-pvc-shop-data-db-0`` for type ``pvc`` and hint ``shop/data-db-0``."""
    stamp = moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    slug = slugify(f"{type}-{name_hint}" if name_hint else type)
    return f"{stamp}-{slug}"


def with_suffix(backup_id: str) -> str:
    """The same ID with a short random suffix, for two backups of one thing within one second."""
    return f"{backup_id}-{secrets.token_hex(2)}"
