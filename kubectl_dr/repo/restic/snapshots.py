"""Snapshot files (`snapshots/ID`): the root tree, paths, host, tags, parent, time, and restic 0.17's summary."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.repo.restic.nodes import ResticFormatError, check_id, format_time, parse_time


@dataclass
class Snapshot:
    time: int  # ns since the epoch
    tree: str
    paths: list[str]
    hostname: str = ""
    username: str = ""
    uid: int = 0
    gid: int = 0
    tags: list[str] = field(default_factory=list)
    parent: str | None = None
    program_version: str = ""
    summary: dict[str, Any] | None = None
    id: str = ""  # the file's name once stored or loaded

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def tag_value(self, key: str) -> str | None:
        """The value of the one `KEY=VALUE` tag (None when there is none, or more than one)."""
        values = [t.split("=", 1)[1] for t in self.tags if t.startswith(f"{key}=")]
        return values[0] if len(values) == 1 else None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"time": format_time(self.time)}
        if self.parent:
            doc["parent"] = self.parent
        doc["tree"] = self.tree
        doc["paths"] = self.paths
        for key, value in (("hostname", self.hostname), ("username", self.username), ("uid", self.uid),
                           ("gid", self.gid), ("tags", self.tags), ("program_version", self.program_version),
                           ("summary", self.summary)):
            if value:
                doc[key] = value
        return doc

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes, snapshot_id: str) -> Snapshot:
        try:
            doc: Any = json.loads(data)
            snap = cls(
                time=parse_time(doc["time"]), tree=check_id(doc["tree"]),
                paths=[str(p) for p in doc.get("paths") or []],
                hostname=str(doc.get("hostname", "")), username=str(doc.get("username", "")),
                uid=int(doc.get("uid", 0)), gid=int(doc.get("gid", 0)),
                tags=[str(t) for t in doc.get("tags") or []],
                parent=check_id(doc["parent"]) if doc.get("parent") else None,
                program_version=str(doc.get("program_version", "")),
                summary=doc.get("summary") if isinstance(doc.get("summary"), dict) else None,
                id=snapshot_id)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ResticFormatError(f"snapshot {snapshot_id[:8]} is malformed ({exc})") from exc
        return snap
