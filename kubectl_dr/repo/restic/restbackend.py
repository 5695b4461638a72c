"""A restic repository behind restic's REST server (protocol v2), named as restic names it:
`rest:http(s)://[USER:PASSWORD@]HOST[:PORT]/[PATH/]`.

The server lays the files out itself; the client speaks in (type, name) URLs:

    HEAD/GET/POST {base}config        POST {base}?create=true        GET {base}{type}/  (v2: names and sizes)
    HEAD/GET/POST/DELETE {base}{type}/{name}          GET with Range for a part of a pack

Credentials come from the URL, else from RESTIC_REST_USERNAME and RESTIC_REST_PASSWORD (restic ≥ 0.17's
names); HTTPS trusts the system's CAs, or RESTIC_CACERT's file. The password never appears in what we print
(restic prints `user:***@` too). rest-server checks the SHA-256 of every file it is sent against its name;
what we read is checked for its length here and for its MAC and SHA-256 by the repository layer.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import urllib3

from kubectl_dr.repo.errors import RepoError
from kubectl_dr.repo.restic.backend import (
    CONFIG,
    Data,
    ResticBackendError,
    as_bytes,
    check_kind,
    check_length,
    check_name,
)

V2 = "application/vnd.x.restic.rest.v2"
_TIMEOUT = urllib3.Timeout(connect=15, read=300)


def parse(ref: str, env: Mapping[str, str] | None = None) -> tuple[str, str, str]:
    """(base URL ending in '/', user, password) of restic's `rest:` repository string."""
    if not ref.startswith("rest:"):
        raise ResticBackendError(f"{ref!r} is not a restic rest: repository")
    url = urlsplit(ref[5:])
    if url.scheme not in ("http", "https") or not url.hostname:
        raise RepoError(f"{redact(ref)}: expected rest:http(s)://[USER:PASSWORD@]HOST[:PORT]/[PATH/]",
                        hint="A rest-server over a unix socket (rest:unix:…) is not supported by kubectl dr.")
    parts = [p for p in url.path.split("/") if p]
    if any(unquote(p) in (".", "..") or "\x00" in unquote(p) for p in parts):
        raise RepoError(f"{redact(ref)}: the repository path must not contain '.', '..' or NUL")
    env = env or {}
    user = unquote(url.username) if url.username is not None else env.get("RESTIC_REST_USERNAME", "")
    password = unquote(url.password) if url.password is not None else env.get("RESTIC_REST_PASSWORD", "")
    netloc = url.hostname if ":" not in url.hostname else f"[{url.hostname}]"
    if url.port is not None:
        netloc += f":{url.port}"
    path = "/" + "".join(p + "/" for p in parts)
    return urlunsplit((url.scheme, netloc, path, "", "")), user, password


def redact(ref: str) -> str:
    """The repository string as restic prints it: a password in the URL replaced by ***."""
    body = ref[5:] if ref.startswith("rest:") else ref
    url = urlsplit(body)
    if url.password is None:
        return ref
    host = url.netloc.rsplit("@", 1)[1]
    return "rest:" + urlunsplit((url.scheme, f"{url.username}:***@{host}", url.path, url.query, url.fragment))


class RestBackend:
    def __init__(self, ref: str, env: Mapping[str, str] | None = None) -> None:
        env = env or {}
        self.base, user, password = parse(ref, env)
        self.ref = redact(ref)
        self.headers: dict[str, str] = {}
        if user or password:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.user = user
        cacert = env.get("RESTIC_CACERT") or None
        # No silent retries: a dead or refusing server is said at once, with what to do.
        self.http = urllib3.PoolManager(timeout=_TIMEOUT, retries=False, ca_certs=cacert,
                                        cert_reqs="CERT_REQUIRED" if self.base.startswith("https:") else None)

    def describe(self) -> str:
        return self.ref

    def _url(self, kind: str, name: str) -> str:
        check_name(kind, name)
        return self.base + (CONFIG if kind == CONFIG else f"{kind}/{quote(name)}")

    def _request(self, method: str, url: str, doing: str, *, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Any:
        try:
            return self.http.request(method, url, body=body, headers={**self.headers, **(headers or {})},
                                     redirect=False)
        except urllib3.exceptions.SSLError as exc:
            raise RepoError(f"TLS to the rest server {self.base} failed while {doing}: {exc}",
                            hint="Give the server's CA certificate in RESTIC_CACERT.") from None
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise RepoError(f"cannot reach the rest server {self.base} while {doing}: {reason}",
                            hint="Check that rest-server is running there and the URL's host and port.") from None

    def _fail(self, resp: Any, doing: str) -> RepoError:
        if resp.status == 401:
            who = f"user {self.user!r}" if self.user else "no user"
            return RepoError(f"the rest server {self.base} refused the credentials ({who}) while {doing} (401)",
                             hint="Give USER:PASSWORD in the URL (rest:https://USER:PASSWORD@HOST/PATH/) or in "
                                  "RESTIC_REST_USERNAME and RESTIC_REST_PASSWORD.")
        if resp.status == 403:
            return RepoError(f"the rest server {self.base} forbids {doing} (403)",
                             hint="An --append-only or --private-repos server allows only some paths and "
                                  "methods; a prune needs a server that allows deletes.")
        if resp.status == 413:
            return RepoError(f"the rest server {self.base} refused {doing}: the repository is over its --max-size "
                             "(413)", hint="Free space in the repository (backups prune) or raise the limit.")
        text = resp.data[:300].decode(errors="replace").strip()
        return RepoError(f"the rest server {self.base} answered {resp.status} while {doing}"
                         + (f": {text}" if text else ""))

    def exists(self) -> bool:
        resp = self._request("HEAD", self._url(CONFIG, CONFIG), "looking for the repository's config")
        if resp.status == 200:
            return True
        if resp.status == 404:
            return False
        raise self._fail(resp, "looking for the repository's config")

    def create(self) -> None:
        if self.exists():
            raise ResticBackendError(f"a restic repository already exists at {self.ref}")
        resp = self._request("POST", self.base + "?create=true", "creating the repository")
        if resp.status != 200:
            raise self._fail(resp, "creating the repository")

    def save(self, kind: str, name: str, data: Data) -> None:
        data = as_bytes(data)
        doing = f"writing {kind}/{name[:8]}"
        resp = self._request("POST", self._url(kind, name), doing, body=data,
                             headers={"Content-Type": "application/octet-stream"})
        if resp.status != 200:
            raise self._fail(resp, doing)

    def load(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        doing = f"reading {kind}/{name[:8]}"
        headers = {}
        if offset or length is not None:
            headers["Range"] = f"bytes={offset}-" + (str(offset + length - 1) if length else "")
        if length == 0:
            return b""
        resp = self._request("GET", self._url(kind, name), doing, headers=headers)
        if resp.status == 404:
            raise ResticBackendError(f"{kind}/{name} is missing from the restic repository {self.ref}")
        if resp.status not in (200, 206):
            raise self._fail(resp, doing)
        data: bytes = resp.data
        if resp.status == 200 and offset:  # a server that ignores Range sends the whole file
            data = data[offset:] if length is None else data[offset:offset + length]
        elif resp.status == 200 and length is not None:
            data = data[:length]
        return check_length(data, kind, name, offset, length)

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        check_kind(kind)
        doing = f"listing {kind}"
        resp = self._request("GET", f"{self.base}{kind}/", doing, headers={"Accept": V2})
        if resp.status == 404:
            return  # rest-server answers 404 for a type directory that was never made
        if resp.status != 200:
            raise self._fail(resp, doing)
        try:
            listed = json.loads(resp.data)
        except ValueError as exc:
            raise ResticBackendError(f"the rest server's listing of {kind} is not JSON: {exc}") from None
        if not isinstance(listed, list):
            raise ResticBackendError(f"the rest server's listing of {kind} is not a list")
        for item in listed:
            if isinstance(item, str):  # protocol v1 (an old server): names only, the size from a HEAD
                name = item
                size = self._size(kind, name)
            elif isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("size"), int):
                name, size = item["name"], item["size"]
            else:
                raise ResticBackendError(f"the rest server's listing of {kind} has an entry we cannot read: "
                                         f"{str(item)[:100]}")
            try:
                check_name(kind, name)
            except ResticBackendError:
                continue  # anything foreign in the directory is not a repository file
            if size < 0:
                raise ResticBackendError(f"the rest server lists {kind}/{name[:8]} with a negative size")
            yield name, size

    def _size(self, kind: str, name: str) -> int:
        resp = self._request("HEAD", self._url(kind, name), f"reading the size of {kind}/{name[:8]}")
        if resp.status != 200:
            raise self._fail(resp, f"reading the size of {kind}/{name[:8]}")
        return int(resp.headers.get("Content-Length", "-1"))

    def remove(self, kind: str, name: str) -> None:
        doing = f"removing {kind}/{name[:8]}"
        resp = self._request("DELETE", self._url(kind, name), doing)
        if resp.status not in (200, 404):
            raise self._fail(resp, doing)
