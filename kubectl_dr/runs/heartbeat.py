"""The run's pulse: leases renewed and pods touched every few seconds, from one background thread.

Each pod kubectl dr makes runs a dead-man loop (`dead_man_script`) that ends the pod
when its heartbeat file has not been touched for `pod_grace_seconds()`: a run killed with SIGKILL, a
laptop that lost its network or went to sleep, leaves nothing running for long. The touches are exec
calls; a missed one is retried at the next beat, and only a failure that lasts is reported.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from kubectl_dr.errors import DrError
from kubectl_dr.runs.leases import Lease, LeaseLost

# Every command's session makes a Run, and `kubectl_dr.runs` brings this module: the kube client (urllib3, ssl)
# loads when a pod is touched, not on the start of `backups list` or `--help`.
if TYPE_CHECKING:
    from kubectl_dr.kube.client import Kube

# A pod whose heartbeat file is older than this ends itself: long enough for a few missed beats (an
# API server restarting), short enough that a killed run's pods are gone within minutes.
# KUBECTL_DR_POD_GRACE_SECONDS changes it (a slow link may want more; the tests want less).
DEFAULT_POD_GRACE_SECONDS = 180


def pod_grace_seconds() -> int:
    try:
        value = int(os.environ.get("KUBECTL_DR_POD_GRACE_SECONDS", DEFAULT_POD_GRACE_SECONDS))
    except ValueError:
        value = DEFAULT_POD_GRACE_SECONDS
    return max(value, 10)


def dead_man_script(alive: str, grace: int, *, on_expiry: str = "", then: str = "ending it") -> str:
    """A pod's main process: ends the pod once the heartbeat file `alive` is `grace` seconds old.

    `on_expiry` runs first, on expiry and on SIGTERM alike (a snapshot pod removes its copy of every
    Secret); `then` finishes the message the pod logs. One loop for every pod kind, so that each ends the
    same way when its run is gone.
    """
    cleanup = f"{on_expiry}; " if on_expiry else ""
    return f"""\
gone() {{ {cleanup}exit 0; }}
trap gone TERM
mkdir -p {posixpath.dirname(alive)}
touch {alive}
while :; do
  age=$(( $(date +%s) - $(stat -c %Y {alive} 2>/dev/null || echo 0) ))
  if [ "$age" -ge {grace} ]; then
    echo "kubectl dr: no heartbeat for ${{age}}s: the run that made this pod is gone; {then}" >&2
    gone
  fi
  sleep 2 & wait $!
done
"""


def touch_pod(kube: Kube, namespace: str, name: str, container: str, alive: str) -> None:
    """One beat: touch the pod's heartbeat file, so that its dead-man loop keeps it running."""
    from kubectl_dr.kube.exec import Timeouts, open_exec

    stream = open_exec(kube, namespace, name, ["touch", alive], container=container,
                       timeouts=Timeouts(connect=10.0, idle=30.0))
    stream.run().check(f"heartbeat of pod {namespace}/{name}")


def beat_seconds() -> float:
    """Four beats per grace period, at most every 15 s: a pod survives three missed ones."""
    return min(15.0, pod_grace_seconds() / 4)


class Heartbeat:
    def __init__(self, warn: Callable[[str], None], interval: float | None = None) -> None:
        self.warn = warn
        self.interval = interval if interval is not None else beat_seconds()
        self._leases: list[Lease] = []
        self._beats: dict[str, Callable[[], None]] = {}
        self._failing: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: LeaseLost | None = None

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._leases.append(lease)
        self._start()

    def add(self, name: str, beat: Callable[[], None]) -> None:
        """Call `beat` at every beat (a pod's heartbeat touch) until `remove(name)`."""
        with self._lock:
            self._beats[name] = beat
        self._start()

    def remove(self, name: str) -> None:
        with self._lock:
            self._beats.pop(name, None)

    def check(self) -> None:
        """Raise LeaseLost if another run took one of our leases (call between steps)."""
        if self.lost is not None:
            raise self.lost

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kubectl-dr-heartbeat", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        with self._lock:
            leases, beats = list(self._leases), dict(self._beats)
        for lease in leases:
            self._guard(f"lease {lease.name}", lease.renew)
        for name, beat in beats.items():
            self._guard(name, beat)

    def _guard(self, name: str, action: Callable[[], None]) -> None:
        try:
            action()
        except LeaseLost as exc:
            self.lost = exc
            self.warn(f"warning: {exc.message}")
        except (DrError, OSError) as exc:
            if name not in self._failing:
                self._failing.add(name)
                self.warn(f"warning: could not renew {name} ({exc}); retrying")
            return
        if name in self._failing:
            self._failing.discard(name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 5)
