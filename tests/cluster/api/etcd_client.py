"""An async etcd v3 client over etcd's JSON gateway (``/v3/kv/*``, ``/v3/watch``) with aiohttp.

Why the gateway and not the ``etcd3`` package: its gRPC calls block, so watches would need a thread per
stream and cancellation is unreliable; the gateway gives native asyncio streams and lets us fail over
to the next member simply by sending the same request elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

Json = dict[str, Any]


class EtcdError(Exception):
    """etcd answered with an error (other than an unreachable member)."""


class EtcdUnavailable(EtcdError):
    """No member answered."""


class EtcdCompacted(EtcdError):
    """The requested revision is older than the compaction revision."""

    def __init__(self, compact_revision: int, message: str = "") -> None:
        super().__init__(message or f"required revision has been compacted ({compact_revision})")
        self.compact_revision = compact_revision


def _b64(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def _unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix`` (clientv3.GetPrefixRangeEnd)."""
    raw = bytearray(prefix.encode())
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return _b64(bytes(raw[: i + 1]))
    return _b64(b"\x00")


@dataclass
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int

    @classmethod
    def from_json(cls, doc: Json) -> KeyValue:
        return cls(
            key=_unb64(doc.get("key")).decode(),
            value=_unb64(doc.get("value")),
            create_revision=int(doc.get("create_revision", 0)),
            mod_revision=int(doc.get("mod_revision", 0)),
            version=int(doc.get("version", 0)),
        )


@dataclass
class WatchEvent:
    type: str  # "PUT" or "DELETE"
    kv: KeyValue
    prev_kv: KeyValue | None


class EtcdClient:
    """Talks to any of ``endpoints``; the member that last answered is tried first."""

    def __init__(self, endpoints: list[str], *, ca_file: Path | None = None, cert_file: Path | None = None,
                 key_file: Path | None = None, request_timeout: float = 10.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.endpoints = list(endpoints)
        self._current = 0
        self._ssl: ssl.SSLContext | None = None
        if any(e.startswith("https://") for e in endpoints):
            ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if cert_file and key_file:
                ctx.load_cert_chain(str(cert_file), str(key_file))
            self._ssl = ctx
        self._request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl else False, limit=64)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _order(self) -> list[str]:
        n = len(self.endpoints)
        return [self.endpoints[(self._current + i) % n] for i in range(n)]

    async def _call(self, path: str, body: Json) -> Json:
        # One deadline for the whole request, retries included, as the API server's etcd client has its
        # request's context (a real one: --request-timeout, 60 s): a member that lost quorum holds a read
        # until the deadline once, not once per pass.
        deadline = asyncio.get_running_loop().time() + self._request_timeout
        last: Exception | None = None
        for attempt in range(2):
            for endpoint in self._order():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise EtcdUnavailable(f"no etcd member answered within {self._request_timeout:g}s: {last}")
                timeout = aiohttp.ClientTimeout(total=left, connect=min(left, 3.0))
                try:
                    async with self._get_session().post(endpoint + path, json=body, timeout=timeout) as resp:
                        text = await resp.text()
                        doc: Json = json.loads(text) if text else {}
                        if resp.status == 200:
                            self._current = self.endpoints.index(endpoint)
                            return doc
                        message = str(doc.get("message") or doc.get("error") or text)
                        if "compacted" in message:
                            raise EtcdCompacted(0, message)
                        if resp.status >= 500 and ("leader" in message or "unavailable" in message
                                                   or "timed out" in message):
                            # A member that lost quorum answers 503: try another one.
                            last = EtcdError(message)
                            continue
                        raise EtcdError(message)
                except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
                    last = exc
            if attempt == 0:
                await asyncio.sleep(0.3)
        raise EtcdUnavailable(f"no etcd member answered: {last}")

    async def get(self, key: str) -> tuple[KeyValue | None, int]:
        """One key and the store's current revision."""
        doc = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = doc.get("kvs") or []
        return (KeyValue.from_json(kvs[0]) if kvs else None), int(doc["header"]["revision"])

    async def range_prefix(self, prefix: str, *, start: str | None = None, limit: int = 0,
                           revision: int = 0) -> tuple[list[KeyValue], int, bool]:
        """Keys under ``prefix`` from ``start`` on (inclusive): kvs, header revision, more."""
        body: Json = {"key": _b64(start or prefix), "range_end": prefix_end(prefix)}
        if limit:
            body["limit"] = str(limit)
        if revision:
            body["revision"] = str(revision)
        doc = await self._call("/v3/kv/range", body)
        kvs = [KeyValue.from_json(kv) for kv in doc.get("kvs") or []]
        return kvs, int(doc["header"]["revision"]), bool(doc.get("more"))

    async def create(self, key: str, value: bytes) -> int | None:
        """Put ``key`` only if absent; the new revision, or None when it already exists."""
        doc = await self._call("/v3/kv/txn", {
            "compare": [{"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
        })
        return int(doc["header"]["revision"]) if doc.get("succeeded") else None

    async def update(self, key: str, value: bytes, mod_revision: int) -> int | None:
        """Put ``key`` only if its mod_revision is unchanged; the new revision, or None on conflict."""
        doc = await self._call("/v3/kv/txn", {
            "compare": [{"key": _b64(key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": str(mod_revision)}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
        })
        return int(doc["header"]["revision"]) if doc.get("succeeded") else None

    async def delete(self, key: str, mod_revision: int) -> int | None:
        """Delete ``key`` only if unchanged; the deletion revision, or None on conflict."""
        doc = await self._call("/v3/kv/txn", {
            "compare": [{"key": _b64(key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": str(mod_revision)}],
            "success": [{"request_delete_range": {"key": _b64(key)}}],
        })
        return int(doc["header"]["revision"]) if doc.get("succeeded") else None

    async def compact(self, revision: int) -> None:
        await self._call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    async def status(self) -> Json:
        return await self._call("/v3/maintenance/status", {})

    async def watch_prefix(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Events under ``prefix`` from ``start_revision`` on, across member failures.

        Raises :class:`EtcdCompacted` when ``start_revision`` is older than the compaction.
        """
        next_rev = start_revision
        failures = 0
        while True:
            endpoint = self._order()[0]
            try:
                async for event in self._watch_once(endpoint, prefix, next_rev):
                    failures = 0
                    next_rev = event.kv.mod_revision + 1
                    yield event
                # The member ended the stream (e.g. shutting down): resume elsewhere.
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError, aiohttp.ClientPayloadError):
                pass
            failures += 1
            self._current = (self._current + 1) % len(self.endpoints)
            await asyncio.sleep(min(0.1 * failures, 1.0))

    async def _watch_once(self, endpoint: str, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        body = {"create_request": {"key": _b64(prefix), "range_end": prefix_end(prefix),
                                   "start_revision": str(start_revision), "prev_kv": True}}
        timeout = aiohttp.ClientTimeout(total=None, connect=3.0, sock_read=None)
        async with self._get_session().post(endpoint + "/v3/watch", json=body, timeout=timeout) as resp:
            if resp.status != 200:
                raise aiohttp.ClientConnectionError(f"watch answered {resp.status}")
            async for line in resp.content:
                if not line.strip():
                    continue
                result = json.loads(line).get("result", {})
                if result.get("compact_revision") and result.get("canceled"):
                    raise EtcdCompacted(int(result["compact_revision"]))
                if result.get("canceled"):
                    raise aiohttp.ClientConnectionError(result.get("cancel_reason", "watch canceled"))
                for ev in result.get("events") or []:
                    kv = KeyValue.from_json(ev["kv"])
                    prev = KeyValue.from_json(ev["prev_kv"]) if ev.get("prev_kv") else None
                    yield WatchEvent(ev.get("type", "PUT"), kv, prev)
