"""The shell scripts of a scheduled etcd snapshot Job, in the two images it has.

The cluster's etcd image holds `/bin/sh` (a static bash) and etcdctl, nothing else: no `mv`, `rm`,
`mkdir` or `sha256sum`. So the work is split. The init container (etcd image) asks the member for its
status and saves the snapshot under a hidden temporary name in the node's snapshot directory; with
etcdctl 3.4/3.5 it also reads the file back with `etcdctl snapshot status` (3.6 dropped that from
etcdctl and the image has no etcdutl). The main container (busybox) then checks the file as etcd wrote
it — size rule and SHA-256 trailer — hashes it, renames it into place, writes its sidecar last (a
snapshot without a sidecar is incomplete and never listed as a snapshot), and applies the count
retention to this schedule's snapshots only. Nothing is deleted before the new snapshot is in place.

Layout of the snapshot directory on the node:
    SCHEDULE-YYYYMMDDTHHMMSSZ.db         the snapshot, exactly as etcdctl wrote it
    SCHEDULE-YYYYMMDDTHHMMSSZ.json       its sidecar: size, SHA-256, revision, member, … (written last)
    .partial-POD.db[.part]               being written (removed by a later run once stale)
"""

from __future__ import annotations

import shlex

SNAPSHOT_MOUNT = "/snapshots"
INFO_MOUNT = "/run/kubectl-dr"
SIDECAR_KIND = "NodeEtcdSnapshot"
SIDECAR_API = "kubectl-dr/v1"
# A partial file older than this belongs to a run that is over (the Job's deadline is shorter).
STALE_MINUTES = 360
STAMP_GLOB = "[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z"


def etcd_script(endpoints: dict[str, str], etcdctl: list[str]) -> str:
    """The init container: status, save, read back. ``endpoints``: node name → the member's client URL.

    ``etcdctl`` is the etcdctl command with its certificate flags and without --endpoints.
    """
    cases = "\n".join(f"  {shlex.quote(node)}) ep={shlex.quote(url)} ;;" for node, url in sorted(endpoints.items()))
    known = " ".join(sorted(endpoints))
    ctl = " ".join(shlex.quote(a) for a in etcdctl)
    return f"""\
set -u
fail() {{ echo "kubectl dr: $*" >&2; : > "$tmp" 2>/dev/null; exit 1; }}
tmp={SNAPSHOT_MOUNT}/.partial-$POD_NAME.db
info={INFO_MOUNT}
case "$NODE_NAME" in
{cases}
  *) echo "kubectl dr: node $NODE_NAME ran no etcd member when this schedule was made (members: {known}); \
run kubectl dr schedule create again with --replace" >&2; exit 1 ;;
esac
printf '%(%Y-%m-%dT%H:%M:%SZ)T\\n' -1 > "$info/taken"
echo "$ep" > "$info/endpoint"
{ctl} --endpoints="$ep" --dial-timeout=5s --command-timeout=30s endpoint status -w json > "$info/member.json" \
  || fail "the etcd member on $NODE_NAME ($ep) did not answer"
{ctl} --endpoints="$ep" --dial-timeout=5s snapshot save "$tmp" || fail "etcdctl snapshot save failed"
version=$({ctl} version 2>/dev/null)
version=${{version#*etcdctl version: }}; version=${{version%%$'\\n'*}}
echo "$version" > "$info/etcdctl-version"
case "$version" in
  3.4.*|3.5.*)
    {ctl} snapshot status -w json "$tmp" > "$info/status.json" 2> "$info/status.err" \
      || fail "etcdctl snapshot status cannot read the new snapshot: $(< "$info/status.err")" ;;
  *) : ;;  # etcdctl 3.6 has no snapshot status; the trailer check and kubectl dr's pull read it instead
esac
echo "kubectl dr: saved a snapshot of the member at $ep"
"""


def finish_script(schedule: str, keep: int, *, snapshots: str = SNAPSHOT_MOUNT, info: str = INFO_MOUNT) -> str:
    """The busybox container: check, hash, rename into place, sidecar last, count retention."""
    return f"""\
set -eu
d={shlex.quote(snapshots)}; info={shlex.quote(info)}; schedule={shlex.quote(schedule)}; keep={int(keep)}
tmp="$d/.partial-$POD_NAME.db"
fail() {{ echo "kubectl dr: $*" >&2; rm -f "$tmp" "$d/.partial-$POD_NAME.json"; exit 1; }}
# Stopped (the schedule deleted, the deadline reached) before the rename: leave no partial file behind.
trap 'rm -f "$tmp" "$d/.partial-$POD_NAME.json"; exit 143' TERM
num() {{ case "$1" in ''|*[!0-9]*) echo null ;; *) echo "$1" ;; esac; }}
field() {{ grep -o "\\"$1\\":[0-9]*" "$2" 2>/dev/null | head -n 1 | cut -d: -f2; }}
[ -f "$tmp" ] || fail "the snapshot $tmp is missing"
size=$(stat -c %s "$tmp")
[ "$size" -gt 32 ] || fail "the snapshot is $size bytes: not a snapshot"
[ $(( size % 512 )) -eq 32 ] \\
  || fail "the snapshot is $size bytes, not a bbolt database plus its 32-byte SHA-256 trailer"
body=$(head -c $(( size - 32 )) "$tmp" | sha256sum | cut -d' ' -f1)
trailer=$(tail -c 32 "$tmp" | od -An -tx1 -v | tr -d ' \\n')
[ "$body" = "$trailer" ] || fail "the snapshot's SHA-256 trailer does not match its contents (damaged while written)"
sha=$(sha256sum "$tmp" | cut -d' ' -f1)
taken=$(cat "$info/taken")
stamp=$(echo "$taken" | tr -d ':-')
name="$schedule-$stamp"
[ ! -e "$d/$name.db" ] && [ ! -e "$d/$name.json" ] || fail "$d/$name.db already exists; not overwriting it"
if [ -s "$info/status.json" ]; then
  revision=$(field revision "$info/status.json"); keys=$(field totalKey "$info/status.json")
  hash=$(field hash "$info/status.json"); checks='"size","sha256-trailer","etcdctl-snapshot-status"'
else
  revision=$(field revision "$info/member.json"); keys=""; hash=""; checks='"size","sha256-trailer"'
fi
member=$(field member_id "$info/member.json"); cluster=$(field cluster_id "$info/member.json")
printf '{{"apiVersion":"{SIDECAR_API}","kind":"{SIDECAR_KIND}","name":"%s","file":"%s.db","schedule":"%s",\
"node":"%s","pod":"%s","image":"%s","takenAt":"%s","size":%s,"sha256":"%s","revision":%s,"totalKeys":%s,\
"hash":%s,"memberID":%s,"clusterID":%s,"endpoint":"%s","etcdctlVersion":"%s","checks":[%s]}}\\n' \\
  "$name" "$name" "$schedule" "$NODE_NAME" "$POD_NAME" "$ETCD_IMAGE" "$taken" "$size" "$sha" "$(num "$revision")" \\
  "$(num "$keys")" "$(num "$hash")" "$(num "$member")" "$(num "$cluster")" "$(cat "$info/endpoint")" \\
  "$(cat "$info/etcdctl-version")" "$checks" > "$d/.partial-$POD_NAME.json"
sync
mv "$tmp" "$d/$name.db"
mv "$d/.partial-$POD_NAME.json" "$d/$name.json"
sync
echo "kubectl dr: $d/$name.db: $size bytes, sha256 $sha"
# Count retention, this schedule's complete snapshots only, newest (by name: the UTC time) first.
ls -1 "$d/$schedule"-{STAMP_GLOB}.json 2>/dev/null | sort -r | tail -n +$(( keep + 1 )) |
while read -r old; do
  rm -f "$old" "${{old%.json}}.db"
  echo "kubectl dr: removed ${{old%.json}}.db (keeping the newest $keep)"
done
# What runs that are over left: partial files, and a snapshot whose sidecar never got written.
find "$d" -maxdepth 1 -name '.partial-*' -mmin +{STALE_MINUTES} -exec rm -f {{}} + 2>/dev/null || true
for db in "$d/$schedule"-*.db; do
  [ -e "$db" ] || continue
  [ -e "${{db%.db}}.json" ] || [ -z "$(find "$db" -mmin +{STALE_MINUTES})" ] || rm -f "$db"
done
"""
