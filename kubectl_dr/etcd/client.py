"""Direct access to etcd from this machine through the `etcd3` package (0.12).

etcd3 0.12 ships protobuf modules generated for protobuf 3; they import with today's protobuf only under
the pure-Python implementation, which must be chosen before protobuf is first imported. So etcd3 is only
ever imported through `etcd3_module()`, lazily: `kubectl dr --help` does not pay for gRPC.

We use etcd3 for the channel (TLS from the PEM files) and its generated stubs and messages, and call the
stubs ourselves: etcd3's wrappers replace gRPC's error details with "etcd connection failed", and its
client-wide timeout would become the deadline of a whole snapshot stream. Fields newer than etcd3's
protos (dbSizeInUse, isLearner, errors, raftAppliedIndex) arrive as unknown fields; we read them by number.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from kubectl_dr.etcd.errors import MemberError
from kubectl_dr.etcd.model import ALARM_NAMES, Alarm, EndpointInfo, MemberInfo, member_id
from kubectl_dr.etcd.topology import Direct

REQUEST_TIMEOUT = 5.0
# A snapshot stream has no deadline; instead gRPC keepalive pings find a dead peer. etcd accepts pings
# every 5 s or slower (--grpc-keepalive-min-time), so 20 s stays well within its policy.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
# Field numbers of etcdserverpb messages that etcd3 0.12's protos do not know.
_STATUS_EXTRA = {7: "raftAppliedIndex", 8: "errors", 9: "dbSizeInUse", 10: "isLearner"}
_MEMBER_IS_LEARNER = 5


def etcd3_module() -> ModuleType:
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    # gRPC's C core logs TLS failures to stderr on its own; we report them once, in our words.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    return importlib.import_module("etcd3")


def _unknown(message: Any) -> dict[int, list[Any]]:
    unknown_fields = importlib.import_module("google.protobuf.unknown_fields")
    fields: dict[int, list[Any]] = {}
    for f in unknown_fields.UnknownFieldSet(message):
        fields.setdefault(int(f.field_number), []).append(f.data)
    return fields


def rpc_error_text(exc: BaseException) -> str:
    """gRPC's status code and details: the part a person can act on ("certificate required", …)."""
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):
        name = getattr(code(), "name", str(code()))
        return f"{name}: {details()}"
    return str(exc) or type(exc).__name__


def is_rpc_error(exc: BaseException) -> bool:
    """A gRPC failure (connection, TLS, deadline, server error), as opposed to a bug of ours."""
    grpc = importlib.import_module("grpc")
    return isinstance(exc, grpc.RpcError)


def refused_certificate(text: str) -> bool:
    lowered = text.lower()
    return any(s in lowered for s in ("certificate_required", "bad_certificate", "bad certificate",
                                      "certificate required", "unknown_ca", "certificate verify failed",
                                      "certificate_verify_failed", "handshake failed",
                                      # TLS 1.3: the server's alert arrives after the handshake, as a record
                                      # gRPC cannot decrypt.
                                      "tsi_data_corrupted", "unwrap failed"))


def certificate_hint(text: str) -> str | None:
    """What to check when gRPC's failure text says the TLS handshake failed; None for other failures."""
    if not refused_certificate(text):
        return None
    return ("etcd refused the client certificate, or we do not trust its server certificate: check --cacert, "
            "--cert and --key.")


class Endpoint:
    """One etcd endpoint through its own channel (one member answers; no client-side balancing)."""

    def __init__(self, url: str, direct: Direct) -> None:
        parsed = urlparse(url)
        self.url = url
        self._etcd3 = etcd3_module()
        secure = parsed.scheme == "https"
        port = parsed.port or 2379
        ca = direct.cacert if secure else None
        if secure and ca is None:
            raise MemberError(url, f"{url} uses TLS: give --cacert (and --cert/--key if it checks clients)")
        self.client = self._etcd3.client(
            host=parsed.hostname, port=port, ca_cert=ca,
            cert_key=direct.key if secure else None, cert_cert=direct.cert if secure else None,
            timeout=REQUEST_TIMEOUT, grpc_options=CHANNEL_OPTIONS,
        )
        self.rpc = self._etcd3.etcdrpc

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> EndpointInfo:
        resp = self.client.maintenancestub.Status(self.rpc.StatusRequest(), REQUEST_TIMEOUT)
        extra = _unknown(resp)
        return EndpointInfo(
            endpoint=self.url, healthy=True, member_id=member_id(resp.header.member_id), version=resp.version,
            db_size=int(resp.dbSize), db_size_in_use=_first_int(extra, 9), revision=int(resp.header.revision),
            raft_term=int(resp.raftTerm), raft_index=int(resp.raftIndex), raft_applied_index=_first_int(extra, 7),
            leader=member_id(resp.leader) if resp.leader else None, is_learner=bool(_first_int(extra, 10)),
            errors=[bytes(e).decode(errors="replace") for e in extra.get(8, [])],
        )

    def members(self) -> tuple[str, list[MemberInfo]]:
        resp = self.client.clusterstub.MemberList(self.rpc.MemberListRequest(), REQUEST_TIMEOUT)
        members = [
            MemberInfo(id=member_id(m.ID), name=m.name, peer_urls=list(m.peerURLs), client_urls=list(m.clientURLs),
                       is_learner=bool(_first_int(_unknown(m), _MEMBER_IS_LEARNER)))
            for m in resp.members
        ]
        return member_id(resp.header.cluster_id), members

    def alarms(self) -> list[Alarm]:
        request = self.rpc.AlarmRequest(action=self.rpc.AlarmRequest.GET, memberID=0, alarm=self.rpc.NONE)
        resp = self.client.maintenancestub.Alarm(request, REQUEST_TIMEOUT)
        return [Alarm(member_id(a.memberID), ALARM_NAMES.get(int(a.alarm), str(a.alarm))) for a in resp.alarms]

    def health(self) -> tuple[bool, str | None, str]:
        """etcdctl's health check: a linearizable read, then no active alarm. Returns (ok, error, took)."""
        start = time.monotonic()
        error: str | None = None
        try:
            self.client.kvstub.Range(self.rpc.RangeRequest(key=b"health"), REQUEST_TIMEOUT)
        except Exception as exc:
            text = rpc_error_text(exc)
            # Permission denied still went through consensus: the member is healthy (as etcdctl says).
            if "permission denied" not in text.lower():
                error = text
        if error is None:
            try:
                active = self.alarms()
                if active:
                    error = "Active Alarm(s): " + ", ".join(a.alarm for a in active)
            except Exception as exc:
                error = rpc_error_text(exc)
        took = f"{(time.monotonic() - start) * 1000:.3f}ms"
        return error is None, error, took

    def snapshot(self, write: Callable[[bytes], None], progress: Callable[[int, int], None] | None = None) -> int:
        """Stream the member's snapshot into `write`; returns the byte count. No deadline (see module doc)."""
        total = 0
        stream = self.client.maintenancestub.Snapshot(self.rpc.SnapshotRequest(), None)
        for chunk in stream:
            blob = bytes(chunk.blob)
            if blob:
                write(blob)
                total += len(blob)
            if progress is not None:
                progress(total, int(chunk.remaining_bytes))
        return total


def _first_int(fields: dict[int, list[Any]], number: int) -> int | None:
    values = fields.get(number)
    return int(values[-1]) if values else None
