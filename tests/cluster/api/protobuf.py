"""Decoding of Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``).

kubectl's typed commands (``create configmap``, ``create namespace``, ``create deployment``, ``create job``,
``create cronjob``, ``create service``, ``auth can-i``,
``auth whoami``, ``drain``…) send protobuf since client-go made it the default content type of built-in
clientsets; responses can stay JSON because those clients also accept ``application/json``.

The envelope is the 4-byte magic ``k8s\\0`` and a ``runtime.Unknown`` (typeMeta=1 {apiVersion=1, kind=2},
raw=2). The field numbers below are those of k8s.io/api's generated protobuf for the messages those commands
send; a field this table does not know is rejected with 400 instead of being dropped silently, so a gap
shows up as an error rather than as a wrong object.

Decoding rules mirror how the Go types marshal: non-pointer fields are always written, so empty strings
are dropped (every such string field is ``omitempty`` in JSON) and ``metav1.Time`` zero values become
absent; numbers and booleans are kept as sent, since pointer fields carry explicit zeroes.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from tests.cluster.api.errors import ApiError, bad_request

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
Json = dict[str, Any]

# kind codes: s string, i int (varint, signed), b bool (i and b: pointer fields, kept even when zero),
# I int and O bool for value fields that JSON omits when zero, y bytes (base64 in JSON), t metav1.Time,
# q resource.Quantity, x intstr.IntOrString, m:<Message>, M map<string,string>, B map<string,bytes>,
# MQ map<string,Quantity>, - a server-populated field (status) that requests may carry and the server
# ignores; a leading "*" marks a repeated field.
Field = tuple[str, str]
SCHEMAS: dict[str, dict[int, Field]] = {
    "ObjectMeta": {1: ("name", "s"), 2: ("generateName", "s"), 3: ("namespace", "s"), 4: ("selfLink", "s"),
                   5: ("uid", "s"), 6: ("resourceVersion", "s"), 7: ("generation", "I"),
                   8: ("creationTimestamp", "t"), 9: ("deletionTimestamp", "t"),
                   10: ("deletionGracePeriodSeconds", "i"), 11: ("labels", "M"), 12: ("annotations", "M"),
                   13: ("ownerReferences", "*m:OwnerReference"), 14: ("finalizers", "*s")},
    "OwnerReference": {1: ("kind", "s"), 3: ("name", "s"), 4: ("uid", "s"), 5: ("apiVersion", "s"),
                       6: ("controller", "b"), 7: ("blockOwnerDeletion", "b")},
    "LabelSelector": {1: ("matchLabels", "M"), 2: ("matchExpressions", "*m:LabelSelectorRequirement")},
    "LabelSelectorRequirement": {1: ("key", "s"), 2: ("operator", "s"), 3: ("values", "*s")},
    "DeleteOptions": {1: ("gracePeriodSeconds", "i"), 2: ("preconditions", "m:Preconditions"),
                      3: ("orphanDependents", "b"), 4: ("propagationPolicy", "s"), 5: ("dryRun", "*s")},
    "Preconditions": {1: ("uid", "s"), 2: ("resourceVersion", "s")},
    # core/v1
    "ConfigMap": {1: ("metadata", "m:ObjectMeta"), 2: ("data", "M"), 3: ("binaryData", "B"),
                  4: ("immutable", "b")},
    "Secret": {1: ("metadata", "m:ObjectMeta"), 2: ("data", "B"), 3: ("type", "s"), 4: ("stringData", "M"),
               5: ("immutable", "b")},
    "Namespace": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:NamespaceSpec"),
                  3: ("status", "m:NamespaceStatus")},
    "NamespaceSpec": {1: ("finalizers", "*s")},
    "NamespaceStatus": {1: ("phase", "s")},
    "ServiceAccount": {1: ("metadata", "m:ObjectMeta"), 2: ("secrets", "*m:ObjectReference"),
                       3: ("imagePullSecrets", "*m:LocalObjectReference"), 4: ("automountServiceAccountToken", "b")},
    "ObjectReference": {1: ("kind", "s"), 2: ("namespace", "s"), 3: ("name", "s"), 4: ("uid", "s"),
                        5: ("apiVersion", "s"), 6: ("resourceVersion", "s"), 7: ("fieldPath", "s")},
    "LocalObjectReference": {1: ("name", "s")},
    "PodTemplateSpec": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:PodSpec")},
    "PodSpec": {1: ("volumes", "*m:Volume"), 2: ("containers", "*m:Container"), 3: ("restartPolicy", "s"),
                4: ("terminationGracePeriodSeconds", "i"), 5: ("activeDeadlineSeconds", "i"),
                6: ("dnsPolicy", "s"), 7: ("nodeSelector", "M"), 8: ("serviceAccountName", "s"),
                9: ("serviceAccount", "s"), 10: ("nodeName", "s"), 11: ("hostNetwork", "O"), 12: ("hostPID", "O"),
                13: ("hostIPC", "O"), 14: ("securityContext", "m:PodSecurityContext"),
                15: ("imagePullSecrets", "*m:LocalObjectReference"), 16: ("hostname", "s"),
                17: ("subdomain", "s"), 19: ("schedulerName", "s"), 20: ("initContainers", "*m:Container"),
                21: ("automountServiceAccountToken", "b"), 22: ("tolerations", "*m:Toleration"),
                24: ("priorityClassName", "s"), 25: ("priority", "i"), 30: ("enableServiceLinks", "b"),
                31: ("preemptionPolicy", "s")},
    "Container": {1: ("name", "s"), 2: ("image", "s"), 3: ("command", "*s"), 4: ("args", "*s"),
                  5: ("workingDir", "s"), 6: ("ports", "*m:ContainerPort"), 7: ("env", "*m:EnvVar"),
                  8: ("resources", "m:ResourceRequirements"), 9: ("volumeMounts", "*m:VolumeMount"),
                  13: ("terminationMessagePath", "s"), 14: ("imagePullPolicy", "s"),
                  15: ("securityContext", "m:SecurityContext"), 16: ("stdin", "O"), 17: ("stdinOnce", "O"),
                  18: ("tty", "O"), 20: ("terminationMessagePolicy", "s")},
    "ContainerPort": {1: ("name", "s"), 2: ("hostPort", "I"), 3: ("containerPort", "i"), 4: ("protocol", "s"),
                      5: ("hostIP", "s")},
    "EnvVar": {1: ("name", "s"), 2: ("value", "s")},
    "ResourceRequirements": {1: ("limits", "MQ"), 2: ("requests", "MQ")},
    "VolumeMount": {1: ("name", "s"), 2: ("readOnly", "O"), 3: ("mountPath", "s"), 4: ("subPath", "s")},
    "Volume": {1: ("name", "s")},
    "PodSecurityContext": {},
    "SecurityContext": {},
    "Toleration": {1: ("key", "s"), 2: ("operator", "s"), 3: ("value", "s"), 4: ("effect", "s"),
                   5: ("tolerationSeconds", "i")},
    # apps/v1
    "Deployment": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:DeploymentSpec"), 3: ("status", "-")},
    "DeploymentSpec": {1: ("replicas", "i"), 2: ("selector", "m:LabelSelector"),
                       3: ("template", "m:PodTemplateSpec"), 4: ("strategy", "m:DeploymentStrategy"),
                       5: ("minReadySeconds", "I"), 6: ("revisionHistoryLimit", "i"), 7: ("paused", "O"),
                       9: ("progressDeadlineSeconds", "i")},
    "DeploymentStrategy": {1: ("type", "s")},
    # core/v1 Service
    "Service": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:ServiceSpec"), 3: ("status", "-")},
    "ServiceSpec": {1: ("ports", "*m:ServicePort"), 2: ("selector", "M"), 3: ("clusterIP", "s"), 4: ("type", "s"),
                    5: ("externalIPs", "*s"), 7: ("sessionAffinity", "s"), 8: ("loadBalancerIP", "s"),
                    9: ("loadBalancerSourceRanges", "*s"), 10: ("externalName", "s"),
                    11: ("externalTrafficPolicy", "s"), 12: ("healthCheckNodePort", "I"),
                    13: ("publishNotReadyAddresses", "O"), 17: ("ipFamilyPolicy", "s"), 18: ("clusterIPs", "*s"),
                    19: ("ipFamilies", "*s"), 20: ("allocateLoadBalancerNodePorts", "b"),
                    21: ("loadBalancerClass", "s"), 22: ("internalTrafficPolicy", "s"),
                    23: ("trafficDistribution", "s")},
    "ServicePort": {1: ("name", "s"), 2: ("protocol", "s"), 3: ("port", "i"), 4: ("targetPort", "x"),
                    5: ("nodePort", "I"), 6: ("appProtocol", "s")},
    # batch/v1
    "Job": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:JobSpec"), 3: ("status", "-")},
    "JobSpec": {1: ("parallelism", "i"), 2: ("completions", "i"), 3: ("activeDeadlineSeconds", "i"),
                4: ("selector", "m:LabelSelector"), 5: ("manualSelector", "b"), 6: ("template", "m:PodTemplateSpec"),
                7: ("backoffLimit", "i"), 8: ("ttlSecondsAfterFinished", "i"), 9: ("completionMode", "s"),
                10: ("suspend", "b"), 12: ("backoffLimitPerIndex", "i"), 13: ("maxFailedIndexes", "i"),
                14: ("podReplacementPolicy", "s"), 15: ("managedBy", "s")},
    "CronJob": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:CronJobSpec"), 3: ("status", "-")},
    "CronJobSpec": {1: ("schedule", "s"), 2: ("startingDeadlineSeconds", "i"), 3: ("concurrencyPolicy", "s"),
                    4: ("suspend", "b"), 5: ("jobTemplate", "m:JobTemplateSpec"),
                    6: ("successfulJobsHistoryLimit", "i"), 7: ("failedJobsHistoryLimit", "i"),
                    8: ("timeZone", "s")},
    "JobTemplateSpec": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:JobSpec")},
    # authorization/v1, authentication/v1, policy/v1
    "SelfSubjectAccessReview": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:SelfSubjectAccessReviewSpec"),
                                3: ("status", "-")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "m:ResourceAttributes"),
                                    2: ("nonResourceAttributes", "m:NonResourceAttributes")},
    "ResourceAttributes": {1: ("namespace", "s"), 2: ("verb", "s"), 3: ("group", "s"), 4: ("version", "s"),
                           5: ("resource", "s"), 6: ("subresource", "s"), 7: ("name", "s")},
    "NonResourceAttributes": {1: ("path", "s"), 2: ("verb", "s")},
    "SelfSubjectRulesReview": {1: ("metadata", "m:ObjectMeta"), 2: ("spec", "m:SelfSubjectRulesReviewSpec"),
                               3: ("status", "-")},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "s")},
    "SelfSubjectReview": {1: ("metadata", "m:ObjectMeta"), 2: ("status", "-")},
    "Eviction": {1: ("metadata", "m:ObjectMeta"), 2: ("deleteOptions", "m:DeleteOptions")},
}

# Which message a top-level kind is (group-qualified kinds share names only where the table allows it).
TOP_LEVEL = {"ConfigMap", "Secret", "Namespace", "ServiceAccount", "Deployment", "Service", "Job", "CronJob",
             "SelfSubjectAccessReview",
             "SelfSubjectRulesReview", "SelfSubjectReview", "Eviction", "DeleteOptions"}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise ValueError("truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def fields(self) -> list[tuple[int, int, Any]]:
        out: list[tuple[int, int, Any]] = []
        while self.pos < len(self.data):
            key = self.varint()
            number, wire = key >> 3, key & 7
            if wire == 0:
                out.append((number, wire, self.varint()))
            elif wire == 2:
                length = self.varint()
                out.append((number, wire, self.data[self.pos:self.pos + length]))
                self.pos += length
            elif wire == 1:
                out.append((number, wire, self.data[self.pos:self.pos + 8]))
                self.pos += 8
            elif wire == 5:
                out.append((number, wire, self.data[self.pos:self.pos + 4]))
                self.pos += 4
            else:
                raise ValueError(f"unsupported wire type {wire}")
        return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(raw: bytes) -> str | None:
    seconds = nanos = 0
    for number, _, value in _Reader(raw).fields():
        if number == 1:
            seconds = _signed(value)
        elif number == 2:
            nanos = value
    if seconds <= -62135596800 or (seconds == 0 and nanos == 0):
        return None  # Go's zero time.Time
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _string_field(raw: bytes, number: int) -> str:
    return next((v.decode() for n, _, v in _Reader(raw).fields() if n == number), "")


def _int_or_string(raw: bytes) -> int | str:
    kind, int_val, str_val = 0, 0, ""
    for number, _, value in _Reader(raw).fields():
        if number == 1:
            kind = value
        elif number == 2:
            int_val = _signed(value)
        elif number == 3:
            str_val = value.decode()
    return str_val if kind == 1 else int_val


def _map_entry(raw: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, v in _Reader(raw).fields():
        if number == 1:
            key = v.decode()
        elif number == 2:
            value = v
    return key, value


def decode_message(message: str, raw: bytes) -> Json:
    schema = SCHEMAS[message]
    out: Json = {}
    for number, wire, value in _Reader(raw).fields():
        if number not in schema:
            raise bad_request(f"unable to decode protobuf {message}: field {number} is not known to this "
                              "server; send JSON instead")
        name, kind = schema[number]
        if kind == "-":
            continue
        repeated = kind.startswith("*")
        kind = kind.lstrip("*")
        decoded: Any
        if kind in ("M", "B", "MQ"):
            key, entry = _map_entry(value)
            target = out.setdefault(name, {})
            if kind == "M":
                target[key] = entry.decode()
            elif kind == "B":
                target[key] = base64.b64encode(entry).decode()
            else:
                target[key] = _string_field(entry, 1)
            continue
        if kind == "s":
            decoded = value.decode()
            if decoded == "" and not repeated:
                continue
        elif kind in ("i", "I"):
            decoded = _signed(value)
            if kind == "I" and decoded == 0:
                continue
        elif kind in ("b", "O"):
            decoded = bool(value)
            if kind == "O" and not decoded:
                continue
        elif kind == "y":
            decoded = base64.b64encode(value).decode()
        elif kind == "t":
            decoded = _time(value)
            if decoded is None:
                continue
        elif kind == "q":
            decoded = _string_field(value, 1)
        elif kind == "x":
            decoded = _int_or_string(value)
        elif kind.startswith("m:"):
            decoded = decode_message(kind[2:], value)
        else:
            raise ValueError(kind)
        if wire == 2 and kind in ("i", "b", "I", "O"):
            raise bad_request(f"unable to decode protobuf {message}.{name}: packed encoding not expected")
        if repeated:
            out.setdefault(name, []).append(decoded)
        else:
            out[name] = decoded
    return out


def decode(body: bytes) -> Json:
    """A Kubernetes protobuf body → the JSON object it stands for (400 when it cannot be read)."""
    if not body.startswith(MAGIC):
        raise bad_request("the object provided is unrecognized (protobuf body without the k8s envelope)")
    try:
        api_version = kind = ""
        raw = b""
        for number, _, value in _Reader(body[len(MAGIC):]).fields():
            if number == 1:
                api_version = _string_field(value, 1)
                kind = _string_field(value, 2)
            elif number == 2:
                raw = value
        if kind not in TOP_LEVEL:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: "
                           f"application/json, application/yaml (protobuf {kind or 'object'} is not supported)")
        obj = decode_message(kind, raw)
    except (ValueError, UnicodeDecodeError, IndexError) as exc:
        raise bad_request(f"the object provided is unrecognized ({exc})") from exc
    return {"apiVersion": api_version, "kind": kind, **obj}
