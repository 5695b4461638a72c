"""Pod volumes → directories and files on the machine, and container volumeMounts → bind mounts.

Kinds and where they live (see tests/cluster/README.md):
- persistentVolumeClaim → the bound PV's ``spec.hostPath.path`` (or ``spec.local.path``): absolute
  paths on the machine under DIR/storage, standing for network storage any node can reach;
- emptyDir → DIR/pods/UID/volumes/NAME (mode 0777, as the kubelet creates it);
- hostPath → the node's host directory DIR/nodes/NODE/<path>, checked against ``type`` with the
  kubelet's own error texts;
- configMap, secret, downwardAPI, projected (service account token) → files rendered under
  DIR/pods/UID/volumes/NAME and mounted read-only, as the kubelet does since 1.10.

fsGroup is applied as the kubelet's SetVolumeOwnership does, to volume kinds that support ownership
management: group fsGroup, g+rw (g+x on directories and executables), setgid on directories; with
fsGroupChangePolicy OnRootMismatch the walk is skipped when the volume root already matches.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.node.sandbox import Mount

Json = dict[str, Any]
Getter = Callable[[str, "str | None", str], Awaitable[Json]]
TokenSource = Callable[[Json, int], Awaitable[str]]  # (pod, expirationSeconds) → token

SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
_OWNERSHIP_KINDS = ("persistentVolumeClaim", "emptyDir", "configMap", "secret", "projected", "downwardAPI")


class VolumeError(Exception):
    """A volume cannot be set up yet: ``reason``/``message`` become a Warning event on the pod."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Volume:
    name: str
    kind: str
    path: Path
    read_only: bool = False


@dataclass
class VolumeContext:
    get: Getter
    pod_dir: Path
    node_root: Path
    ca_file: Path | None
    token_source: TokenSource | None


def volume_kind(volume: Json) -> str:
    for key in volume:
        if key != "name":
            return key
    return "emptyDir"


def needs_service_account_mount(pod: Json) -> bool:
    """Whether the kubelet must add the token mount itself: automount is on and the spec carries no
    volume for it (a real API server's ServiceAccount admission would have added kube-api-access-*)."""
    spec = pod.get("spec") or {}
    if spec.get("automountServiceAccountToken") is False:
        return False
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for m in container.get("volumeMounts") or []:
            if m.get("mountPath", "").rstrip("/") == SA_MOUNT_PATH:
                return False
    return True


async def prepare(pod: Json, ctx: VolumeContext) -> dict[str, Volume]:
    """Set up every volume of ``pod``; raises VolumeError with the kubelet's event text."""
    spec = pod.get("spec") or {}
    namespace = pod["metadata"].get("namespace", "default")
    security = spec.get("securityContext") or {}
    fs_group = security.get("fsGroup")
    policy = security.get("fsGroupChangePolicy", "Always")
    out: dict[str, Volume] = {}
    unprocessed: list[tuple[str, str]] = []  # (volume, why): claims the kubelet cannot turn into volumes yet
    for volume in spec.get("volumes") or []:
        name, kind = volume["name"], volume_kind(volume)
        src = volume.get(kind) or {}
        vdir = ctx.pod_dir / "volumes" / name
        if kind == "persistentVolumeClaim":
            try:
                claim = await _bound_claim(src.get("claimName", ""), namespace, ctx)
            except _ClaimNotReady as e:
                unprocessed.append((name, str(e)))
                continue
            out[name] = Volume(name, kind, await _pvc_path(claim, name, ctx), bool(src.get("readOnly")))
        elif kind == "emptyDir":
            vdir.mkdir(parents=True, exist_ok=True)
            os.chmod(vdir, 0o777)
            out[name] = Volume(name, kind, vdir)
        elif kind == "hostPath":
            out[name] = Volume(name, kind, _host_path(src, name, ctx))
        elif kind in ("configMap", "secret", "projected", "downwardAPI"):
            files = await _render_files(kind, src, pod, name, ctx)
            mode = src.get("defaultMode", 0o644)
            _write_files(vdir, files, mode)
            out[name] = Volume(name, kind, vdir, read_only=True)
        else:
            raise VolumeError("FailedMount", f'MountVolume.SetUp failed for volume "{name}" : '
                                             f"volume type {kind} is not supported by this node")
        if fs_group is not None and kind in _OWNERSHIP_KINDS:
            set_ownership(out[name].path, int(fs_group), policy, out[name].read_only)
    if unprocessed:
        # volumemanager.WaitForAttachAndMount: the populator's errors end the wait at once, and the kubelet
        # reports them as a FailedMount event (pkg/kubelet/kubelet.go SyncPod).
        names = "[" + " ".join(sorted(n for n, _ in unprocessed)) + "]"
        raise VolumeError("FailedMount", f"Unable to attach or mount volumes: unmounted volumes={names}, "
                                         f"unattached volumes=[], failed to process volumes={names}: "
                                         + "; ".join(why for _, why in unprocessed))
    if needs_service_account_mount(pod):
        vdir = ctx.pod_dir / "volumes" / "kube-api-access"
        _write_files(vdir, await _service_account_files(pod, ctx, 3607), 0o644)
        if fs_group is not None:
            set_ownership(vdir, int(fs_group), policy, True)
        out["kube-api-access"] = Volume("kube-api-access", "projected", vdir, read_only=True)
    return out


def container_mounts(pod: Json, container: Json, volumes: dict[str, Volume]) -> list[Mount]:
    mounts: list[Mount] = []
    for m in container.get("volumeMounts") or []:
        volume = volumes.get(m["name"])
        if volume is None:
            continue
        source = volume.path
        if m.get("subPath"):
            source = volume.path / m["subPath"].lstrip("/")
            if not source.exists():  # the kubelet creates a missing subPath as a directory
                source.mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(source, m["mountPath"], bool(m.get("readOnly")) or volume.read_only))
    if "kube-api-access" in volumes and needs_service_account_mount(pod):
        mounts.append(Mount(volumes["kube-api-access"].path, SA_MOUNT_PATH, True))
    return mounts


# ------------------------------------------------------------------------------------------------ kinds
class _ClaimNotReady(Exception):
    """The desired-state populator cannot process the claim (its error text)."""


async def _bound_claim(claim: str, namespace: str, ctx: VolumeContext) -> Json:
    """desiredStateOfWorldPopulator.getPVCExtractPV, with createVolumeSpec's wrapping of its errors."""
    prefix = f"error processing PVC {namespace}/{claim}: "
    try:
        pvc = await ctx.get("persistentvolumeclaims", namespace, claim)
    except Exception as e:
        raise _ClaimNotReady(f"{prefix}failed to fetch PVC from API server: {e}") from e
    if (pvc.get("metadata") or {}).get("deletionTimestamp"):
        raise _ClaimNotReady(prefix + "PVC is being deleted")
    if (pvc.get("status") or {}).get("phase") != "Bound":
        raise _ClaimNotReady(prefix + "PVC is not bound")
    if not (pvc.get("spec") or {}).get("volumeName"):
        raise _ClaimNotReady(prefix + "PVC has empty pvc.Spec.VolumeName")
    return pvc


async def _pvc_path(pvc: Json, volume: str, ctx: VolumeContext) -> Path:
    pv_name = pvc["spec"]["volumeName"]
    pv = await ctx.get("persistentvolumes", None, pv_name)
    pv_spec = pv.get("spec") or {}
    source = pv_spec.get("hostPath") or pv_spec.get("local") or {}
    if not source.get("path"):
        raise VolumeError("FailedMount", f'MountVolume.SetUp failed for volume "{pv_name}" : '
                                         "volume source not supported by this node")
    path = Path(source["path"])
    cluster_dir = ctx.node_root.parent.parent
    if not path.is_relative_to(cluster_dir):
        # A hostPath or local PV names a path on its node (local-path volumes); only the network-style
        # volumes of the `standard` class live outside the nodes, under DIR/storage.
        path = ctx.node_root / source["path"].lstrip("/")
    if source.get("type") == "DirectoryOrCreate" or pv_spec.get("hostPath", {}).get("type") is None:
        path.mkdir(parents=True, exist_ok=True)
    if not path.is_dir():
        raise VolumeError("FailedMount", f'MountVolume.SetUp failed for volume "{pv_name}" : '
                                         f"hostPath type check failed: {source['path']} is not a directory")
    return path


def _host_path(src: Json, volume: str, ctx: VolumeContext) -> Path:
    in_node = str(src.get("path", "/"))
    path = ctx.node_root / in_node.lstrip("/")
    kind = src.get("type") or ""

    def fail(what: str) -> VolumeError:
        # pkg/volume/hostpath: checkTypeInternal's messages, wrapped by the operation executor.
        return VolumeError("FailedMount", f'MountVolume.SetUp failed for volume "{volume}" : '
                                          f"hostPath type check failed: {in_node} is not {what}")

    if kind == "DirectoryOrCreate" and not path.exists():
        path.mkdir(parents=True, mode=0o755)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o644)
    if kind in ("Directory", "DirectoryOrCreate") and not path.is_dir():
        raise fail("a directory")
    if kind in ("File", "FileOrCreate") and not path.is_file():
        raise fail("a file")
    mode = path.stat().st_mode if path.exists() else 0
    if kind == "Socket" and not stat.S_ISSOCK(mode):
        raise fail("a socket file")
    if kind == "CharDevice" and not stat.S_ISCHR(mode):
        raise fail("a character device")
    if kind == "BlockDevice" and not stat.S_ISBLK(mode):
        raise fail("a block device")
    if not kind and not path.exists():
        # Unset type: no checks; the runtime creates a missing path as a directory.
        path.mkdir(parents=True, exist_ok=True)
    return path


async def _render_files(kind: str, src: Json, pod: Json, volume: str, ctx: VolumeContext
                        ) -> dict[str, tuple[bytes, int | None]]:
    namespace = pod["metadata"].get("namespace", "default")
    if kind in ("configMap", "secret"):
        return await _object_files(kind, src, namespace, volume, ctx)
    if kind == "downwardAPI":
        return _downward_files(src, pod)
    files: dict[str, tuple[bytes, int | None]] = {}
    for source in src.get("sources") or []:
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            token = await _token(pod, ctx, int(sat.get("expirationSeconds", 3607)))
            files[sat.get("path", "token")] = (token.encode(), None)
        elif "configMap" in source or "secret" in source:
            k = "configMap" if "configMap" in source else "secret"
            files.update(await _object_files(k, source[k], namespace, volume, ctx))
        elif "downwardAPI" in source:
            files.update(_downward_files(source["downwardAPI"], pod))
        elif "clusterTrustBundle" in source:
            continue
    return files


async def _object_files(kind: str, src: Json, namespace: str, volume: str, ctx: VolumeContext
                        ) -> dict[str, tuple[bytes, int | None]]:
    name = src.get("name") if kind == "configMap" else src.get("secretName", src.get("name"))
    resource = "configmaps" if kind == "configMap" else "secrets"
    try:
        obj = await ctx.get(resource, namespace, name or "")
    except Exception as e:
        if src.get("optional"):
            return {}
        singular = "configmap" if kind == "configMap" else "secret"
        raise VolumeError("FailedMount", f'MountVolume.SetUp failed for volume "{volume}" : '
                                         f'{singular} "{name}" not found') from e
    data: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        data[key] = base64.b64decode(value) if kind == "secret" else str(value).encode()
    for key, value in (obj.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value)
    items = src.get("items")
    if not items:
        return {k: (v, None) for k, v in data.items()}
    out: dict[str, tuple[bytes, int | None]] = {}
    for item in items:
        if item["key"] in data:
            out[item["path"]] = (data[item["key"]], item.get("mode"))
    return out


def _downward_files(src: Json, pod: Json) -> dict[str, tuple[bytes, int | None]]:
    out: dict[str, tuple[bytes, int | None]] = {}
    for item in src.get("items") or []:
        ref = (item.get("fieldRef") or {}).get("fieldPath")
        if ref is None:
            continue
        out[item["path"]] = (field_value(pod, ref).encode(), item.get("mode"))
    return out


def field_value(pod: Json, path: str) -> str:
    """A downward API fieldPath of ``pod`` (metadata.name, metadata.labels['x'], status.podIP, …)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    for key in ("labels", "annotations"):
        if path == f"metadata.{key}":
            return "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get(key) or {}).items()))
        prefix = f"metadata.{key}['"
        if path.startswith(prefix) and path.endswith("']"):
            return str((meta.get(key) or {}).get(path[len(prefix):-2], ""))
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
              "spec.serviceAccountName": spec.get("serviceAccountName"),
              "status.podIP": status.get("podIP"), "status.hostIP": status.get("hostIP"),
              "status.podIPs": ",".join(p.get("ip", "") for p in status.get("podIPs") or [])}
    return str(simple.get(path) or "")


async def _service_account_files(pod: Json, ctx: VolumeContext, expiration: int
                                 ) -> dict[str, tuple[bytes, int | None]]:
    files: dict[str, tuple[bytes, int | None]] = {
        "token": ((await _token(pod, ctx, expiration)).encode(), None),
             "namespace": (pod["metadata"].get("namespace", "default").encode(), None)}
    if ctx.ca_file is not None and ctx.ca_file.exists():
        files["ca.crt"] = (ctx.ca_file.read_bytes(), None)
    return files


async def _token(pod: Json, ctx: VolumeContext, expiration: int) -> str:
    if ctx.token_source is not None:
        return await ctx.token_source(pod, expiration)
    # Without a token issuer, fall back to the legacy token Secret of the service account, if any.
    namespace = pod["metadata"].get("namespace", "default")
    sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    try:
        secret = await ctx.get("secrets", namespace, f"{sa}-token")
        return base64.b64decode((secret.get("data") or {}).get("token", "")).decode()
    except Exception:
        return ""


def _write_files(vdir: Path, files: dict[str, tuple[bytes, int | None]], default_mode: int) -> None:
    vdir.mkdir(parents=True, exist_ok=True)
    for rel, (content, mode) in files.items():
        target = vdir / rel.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(content)
        os.chmod(tmp, mode if mode is not None else default_mode)
        tmp.replace(target)


# ------------------------------------------------------------------------------------------- ownership
_RW, _RO, _X = 0o660, 0o440, 0o110


def set_ownership(root: Path, fs_group: int, policy: str, read_only: bool) -> None:
    """The kubelet's SetVolumeOwnership: chgrp to fsGroup, group permissions, setgid directories."""
    if policy == "OnRootMismatch" and not _needs_change(root, fs_group, read_only):
        return
    mask = _RO if read_only else _RW
    for dirpath, _dirnames, filenames in os.walk(root):
        # Each directory is handled once, as the dirpath of its own walk step.
        for path in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            os.chown(path, -1, fs_group)
            mode = st.st_mode | mask
            if stat.S_ISDIR(st.st_mode):
                mode |= _X | stat.S_ISGID
            elif st.st_mode & 0o111:
                mode |= _X
            os.chmod(path, stat.S_IMODE(mode))


def _needs_change(root: Path, fs_group: int, read_only: bool) -> bool:
    st = root.stat()
    if st.st_gid != fs_group:
        return True
    mask = _RO if read_only else _RW
    if st.st_mode & mask != mask:
        return True
    return not (st.st_mode & stat.S_ISGID)
