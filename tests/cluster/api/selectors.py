"""Label and field selectors with the syntax and the error texts of apimachinery."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.cluster.api.errors import bad_request

Json = dict[str, Any]
Matcher = Callable[[Json], bool]

Requirement = Callable[[dict[str, str]], bool]


def _exists(key: str, present: bool) -> Requirement:
    return lambda labels: (key in labels) == present


def _equals(key: str, value: str, equal: bool) -> Requirement:
    return lambda labels: (labels.get(key) == value) == equal


def _member(key: str, values: frozenset[str], inside: bool) -> Requirement:
    return lambda labels: (labels.get(key) in values) == inside


_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|[^\s!=,()]+)")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            break
        tokens.append(m.group(1))
        pos = m.end()
        if not text[pos:].strip():
            break
    return tokens


def parse_label_selector(text: str | None) -> Matcher:
    """``a=b,c!=d,e in (f,g),h notin (i),j,!k`` → a predicate over an object's labels."""
    if not text or not text.strip():
        return lambda obj: True
    toks = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def fail(msg: str) -> None:
        raise bad_request(f"unable to parse requirement: {msg}")

    while i < len(toks):
        if toks[i] == "!":
            if i + 1 >= len(toks):
                fail("found '', expected: identifier")
            key = toks[i + 1]
            reqs.append(_exists(key, False))
            i += 2
        else:
            key = toks[i]
            op = toks[i + 1] if i + 1 < len(toks) else ","
            if op in ("=", "==", "!="):
                value = toks[i + 2] if i + 2 < len(toks) and toks[i + 2] != "," else ""
                i += 3 if value else 2
                reqs.append(_equals(key, value, op != "!="))
            elif op in ("in", "notin"):
                if i + 2 >= len(toks) or toks[i + 2] != "(":
                    fail(f"found '{toks[i + 2] if i + 2 < len(toks) else ''}', expected: '('")
                j = i + 3
                values: set[str] = set()
                while j < len(toks) and toks[j] != ")":
                    if toks[j] != ",":
                        values.add(toks[j])
                    j += 1
                if j >= len(toks):
                    fail("found '', expected: ',', ')' or identifier")
                i = j + 1
                reqs.append(_member(key, frozenset(values), op == "in"))
            elif op == ",":
                reqs.append(_exists(key, True))
                i += 1
            else:
                fail(f"found '{op}', expected: '=', '!=', '==', 'in', notin'")
        if i < len(toks):
            if toks[i] != ",":
                fail(f"found '{toks[i]}', expected: ',' or 'end of string'")
            i += 1

    def match(obj: Json) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r(labels) for r in reqs)

    return match


def _path(obj: Json, dotted: str) -> str:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


# Field selectors each resource supports beyond metadata.name/metadata.namespace
# (the GetAttrs/field label conversion functions of pkg/registry and pkg/apis/*/v1/conversion.go).
_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"),
    "events": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    "nodes": ("spec.unschedulable",),
    "namespaces": ("status.phase",),
    "secrets": ("type",),
    "persistentvolumeclaims": (),
    "replicationcontrollers": ("status.replicas",),
    "replicasets.apps": ("status.replicas",),
    "jobs.batch": ("status.successful",),
    "certificatesigningrequests.certificates.k8s.io": ("spec.signerName",),
}

_FIELD_ALIASES = {"source": "source.component"}


def parse_field_selector(text: str | None, resource: str) -> Matcher:
    """``metadata.name=x,spec.nodeName!=`` → a predicate; unsupported fields are a 400."""
    if not text or not text.strip():
        return lambda obj: True
    allowed = ("metadata.name", "metadata.namespace", *_FIELDS.get(resource, ()))
    reqs: list[tuple[str, str, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([^=!]+?)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = m.group(1), m.group(2), m.group(3)
        if field not in allowed:
            raise bad_request(f'field label not supported: {field}')
        reqs.append((_FIELD_ALIASES.get(field, field), op, value))

    def match(obj: Json) -> bool:
        for field, op, value in reqs:
            actual = _path(obj, field)
            if (actual == value) != (op != "!="):
                return False
        return True

    return match
