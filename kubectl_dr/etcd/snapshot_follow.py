"""The snapshot streamed while etcdctl writes it, and etcdctl's end read from the pod's status.

etcdctl `snapshot save FILE` writes FILE.part from the first byte to the last, syncs and closes it, and only
then renames it to FILE (on a failure it removes FILE.part, or leaves it behind when it is killed: never a
FILE). So the serve container can send the bytes as they land instead of after the save:

- it opens FILE.part (or FILE, when the save ended first) once and reads that open file to its current end
  again and again; a rename keeps the open file, so the reads go on through it;
- FILE.part gone is the end: renamed (FILE exists: whole, synced, closed) means one last read to the end and
  a check that FILE is the very file that was read (its inode); removed (no FILE) means the save failed;
- a second reader follows the file the same way, on its own descriptor, into `sha256sum`, and the final FILE's
  size is printed last: the pod's size and digest, as the whole-file serve script prints them, so
  `snapshot_exposure.compare` holds the client's bytes to them unchanged.

What the pod cannot see is etcdctl's exit code: the client reads it from the pod's status (`SaveWatch`), beside
the stream, and a save container that ends with anything but 0 stops the stream at once and fails the
snapshot with etcdctl's own words; after a good stream, both jobs (member status and save) must have ended
with 0 before anything is kept. The client's `verify_snapshot` then checks etcd's own SHA-256 trailer over
the body, so a reader that skipped or repeated a region could not pass either.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from typing import Any

from kubectl_dr.errors import DrError
from kubectl_dr.etcd import podrun, podspec
from kubectl_dr.etcd.errors import MemberError
from kubectl_dr.etcd.topology import StaticMember
from kubectl_dr.kube import pods
from kubectl_dr.kube.pods import HelperPod

# Exit codes of the follow script, besides 1 (a read or the stream failed).
SAVE_FAILED = 4  # FILE.part was removed and no FILE appeared: etcdctl gave up
NOT_THE_FILE = 5  # FILE is not the file that was read (replaced meanwhile)
ENDED_BY_POD = 6  # the pod removed FILE.part itself: its run stopped renewing it, or the pod was deleted
# Seconds between two reads that reached the end of the growing file (busybox and coreutils sleep take fractions).
_PAUSE = "0.02"


def follow_script(path: str, ended: str) -> str:
    """The serve container's command: the file on stdout while it is written; digest and size on stderr.
    `ended`: the file the pod's dead-man loop makes before it removes the snapshot."""
    return f"""\
f={shlex.quote(path)}
e={shlex.quote(ended)}
# A sleep without fractions (a cut-down busybox) would fail at once and turn the waits into busy loops.
pause() {{ sleep {_PAUSE} 2>/dev/null || sleep 1; }}
follow() {{
  until {{ command exec 3<"$f"; }} 2>/dev/null || {{ command exec 3<"$f.part"; }} 2>/dev/null; do
    pause
  done
  while :; do
    cat <&3 || exit 1
    [ -e "$f.part" ] && {{ pause; continue; }}
    [ -e "$f" ] || {{
      [ -e "$e" ] && {{ echo "the pod removed $f.part before it was whole: no heartbeat from this run, or the \
pod was deleted" >&2; exit {ENDED_BY_POD}; }}
      echo "etcdctl removed $f.part before it was whole: the save failed" >&2; exit {SAVE_FAILED}; }}
    cat <&3 || exit 1
    i=$(stat -L -c %i /proc/self/fd/3) && [ -n "$i" ] && [ "$i" = "$(stat -c %i "$f")" ] || {{
      echo "$f is not the file that was streamed" >&2; exit {NOT_THE_FILE}; }}
    exit 0
  done
}}
p="$f.sha256-pipe"
rm -f "$p"; mkfifo "$p" || exit 1
sha256sum <"$p" >&2 & h=$!
(follow) >"$p" & r=$!
(follow) || {{ c=$?; kill $r $h 2>/dev/null; exit $c; }}
wait $r || {{ c=$?; kill $h 2>/dev/null; exit $c; }}
wait $h || exit 1
rm -f "$p"
stat -c %s "$f" >&2
"""


class SaveWatch:
    """The snapshot pod's jobs (member status, save) read from its status while the stream runs.

    A job that ends with a non-zero code calls `on_failure` (which closes the stream: a follower would wait
    for a file that never comes) and is kept as the reason. Reads start quick and slow down to every 2 s, so
    an hour-long save costs the API server a few thousand small GETs at most."""

    def __init__(self, pod: HelperPod, member: StaticMember, helper_image: str,
                 on_failure: Callable[[], None] | None = None) -> None:
        self.pod, self.member, self.helper_image = pod, member, helper_image
        self.on_failure = on_failure
        self.failure: MemberError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"watch {pod.name}", daemon=True)

    def __enter__(self) -> SaveWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()

    def _watch(self) -> None:
        pause = 0.1
        while not self._stop.is_set():
            try:
                obj = self.pod.get()
            except DrError:
                obj = None  # a blip of the API: the next read, or the check after the stream, decides
            if obj is not None and self._ended(obj) is not None:
                if self.failure is not None and self.on_failure is not None:
                    self.on_failure()
                return
            self._stop.wait(pause)
            pause = min(pause * 1.5, 2.0)

    def _ended(self, obj: dict[str, Any]) -> bool | None:
        """True once every job ended with 0, False (and `failure` set) once one ended otherwise, else None."""
        codes = job_exit_codes(obj)
        failed = [name for name, code in codes.items() if code not in (None, 0)]
        if failed:
            self.failure = self._explain(obj)
            return False
        return True if all(code == 0 for code in codes.values()) else None

    def _explain(self, obj: dict[str, Any]) -> MemberError:
        """etcdctl's failure in etcd's terms (certificate refused, member unreachable, …), with its last log lines."""
        reason = pods.diagnose(obj, {}, time.monotonic()) or f"pod {self.pod.name}: the snapshot save failed"
        error = pods.PodStartError(reason)
        for name, code in job_exit_codes(obj).items():
            if code not in (None, 0):
                try:
                    text = self.pod.logs(name).strip()
                except DrError:
                    text = ""
                if text:
                    error.hint = f"Last log lines of container {name}:\n{text}"
                break
        return podrun.explain(self.member, error, self.helper_image)

    def wait_ended(self, timeout: float) -> None:
        """After the stream: both jobs ended with 0, or a MemberError (the save's failure, or that it did not end
        within `timeout`). The rename comes just before etcdctl exits, so this is one read or a few."""
        self.stop()
        deadline = time.monotonic() + timeout
        pause = 0.02
        while True:
            if self.failure is not None:
                raise self.failure
            obj = self.pod.get()
            ended = self._ended(obj)
            if ended is True:
                return
            if ended is False:
                assert self.failure is not None
                raise self.failure
            if time.monotonic() > deadline:
                running = [name for name, code in job_exit_codes(obj).items() if code is None]
                raise MemberError(self.member.node, f"container(s) {', '.join(running) or '?'} of pod "
                                  f"{self.pod.namespace}/{self.pod.name} did not end within {timeout:.0f}s of the "
                                  "snapshot's last byte; the snapshot is not kept")
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def job_exit_codes(obj: dict[str, Any]) -> dict[str, int | None]:
    """Each job container's exit code, None while it has not ended (or has no status yet)."""
    codes: dict[str, int | None] = dict.fromkeys(podspec.SNAPSHOT_JOBS)
    for status in (obj.get("status") or {}).get("containerStatuses") or []:
        name = status.get("name")
        if name in codes:
            terminated = (status.get("state") or {}).get("terminated")
            codes[name] = int(terminated.get("exitCode", -1)) if terminated else None
    return codes
