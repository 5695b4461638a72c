"""A released lease stays released while the heartbeat is renewing it from its own thread.

The heartbeat renews every lease of a run from a thread of its own; a run ends by releasing them. A renewal
that was already on its way when the release deleted the lease found it gone and took it again, so a finished
run left its lease behind (and blocked the next run for a lease term). Real API server, real threads."""

from __future__ import annotations

import threading

from kubectl_dr.errors import ApiError
from kubectl_dr.kube import kubeconfig
from kubectl_dr.kube.client import Kube, connect
from kubectl_dr.runs.leases import API, Lease
from kubectl_dr.runs.run import Run
from tests.cluster.fixture import Cluster


def kube_for(cluster: Cluster) -> Kube:
    return connect(kubeconfig.resolve(kubeconfig.Overrides(kubeconfig=str(cluster.kubeconfig))))


def renew_until_stopped(lease: Lease, stop: threading.Event, errors: list[BaseException]) -> None:
    while not stop.is_set():
        try:
            lease.renew()
        except BaseException as exc:  # collected and asserted by the test
            errors.append(exc)
            return


def test_release_while_renewing_leaves_no_lease(cluster: Cluster) -> None:
    kube = kube_for(cluster)
    for attempt in range(15):
        name = f"kubectl-dr-release-race-{attempt}"
        lease = Lease(kube, "default", name, Run("test lease release"), what="a race")
        lease.acquire()
        assert lease.held
        stop = threading.Event()
        errors: list[BaseException] = []
        renewers = [threading.Thread(target=renew_until_stopped, args=(lease, stop, errors)) for _ in range(3)]
        for thread in renewers:
            thread.start()
        lease.release()
        stop.set()
        for thread in renewers:
            thread.join(timeout=30)
        assert errors == []
        assert not lease.held
        try:
            left = kube.get(f"{API}/namespaces/default/leases/{name}")
        except ApiError as exc:
            assert exc.status == 404
        else:
            raise AssertionError(f"attempt {attempt}: the released lease is back: {left['spec']}")
