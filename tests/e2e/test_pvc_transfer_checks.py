"""The restore transfer's end-to-end check against a real rescue-style pod on the loopback cluster.

With a backup, our side's SHA-256 is the one its verification pass computed just before: the pod's
hash of what it received must equal it, so an archive that changed after verification is caught.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubectl_dr import cleanup
from kubectl_dr.errors import VerificationError
from kubectl_dr.kube import pods
from kubectl_dr.ui.progress import Transfer
from kubectl_dr.volumes import transfer
from kubectl_dr.volumes.rescue_pod import CONTAINER, RescuePod
from kubectl_dr.volumes.scripts import DATA, SCRATCH
from kubectl_dr.volumes.security import plan
from tests.cluster.fixture import Cluster
from tests.e2e.test_exec_layer import create_namespace, kube_for


def _archive(path: Path, text: bytes) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    return path


@pytest.fixture()
def rescue(cluster: Cluster) -> Iterator[RescuePod]:
    namespace = f"xfer-{uuid.uuid4().hex[:6]}"
    create_namespace(cluster, namespace)
    kube = kube_for(cluster)
    manifest = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pods.pod_name("dr-test", "xfer"), "namespace": namespace,
                     "labels": pods.managed_labels("test")},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": CONTAINER, "image": "busybox", "command": ["sleep", "3600"],
                                 "volumeMounts": [{"name": "d", "mountPath": DATA},
                                                  {"name": "s", "mountPath": SCRATCH}]}],
                 "volumes": [{"name": "d", "emptyDir": {}}, {"name": "s", "emptyDir": {}}]},
    }
    with cleanup.scope(lambda _m: None, lambda _f: None):
        helper = pods.create(kube, manifest, what="test")
        pods.wait_running(helper)
        yield RescuePod(helper, None, "busybox", plan("privileged", {}, write=True), read_only=False)
        helper.delete()
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_restore_checks_the_pods_hash_against_the_verified_one(cluster: Cluster, rescue: RescuePod,
                                                                 tmp_path: Path) -> None:
    kube = kube_for(cluster)
    verified = _archive(tmp_path / "verified.tar", b"the bytes that were verified\n")
    changed = _archive(tmp_path / "changed.tar", b"the bytes found at send time!\n")
    assert verified.stat().st_size == changed.stat().st_size
    digest = hashlib.sha256(verified.read_bytes()).hexdigest()
    size = verified.stat().st_size

    with Transfer("test", size) as bar:
        checked = transfer.send(kube, rescue, verified, size, keep_owners=True, progress=bar, verified_sha256=digest)
    assert (checked.size, checked.sha256) == (size, digest)

    # Same size, other bytes: what a file rewritten between the verification and the send looks like.
    with Transfer("test", size) as bar, pytest.raises(VerificationError, match="changed after it was verified") as err:
        transfer.send(kube, rescue, changed, size, keep_owners=True, progress=bar, verified_sha256=digest)
    assert err.value.hint is not None and "backups verify" in err.value.hint

    # A plain tar file has no verified hash: ours is computed while sending, and must match the pod's.
    with Transfer("test", size) as bar:
        checked = transfer.send(kube, rescue, changed, size, keep_owners=True, progress=bar)
    assert checked.sha256 == hashlib.sha256(changed.read_bytes()).hexdigest()
