"""Roughly how long each of the suite's slower modules takes (seconds, on the 2-core CI machine, from one
CI run's junit report, rounded): what tests/ordering.py hands xdist's workers first. Only an order: a
stale figure makes a run end less evenly, never a test run or not. A module not listed counts one second
per test; list a module here when it takes longer than about 15 seconds.

`python -m tests.module_seconds JUNIT.xml` prints the table anew from a run's junit report
(`python -m pytest --junitxml=JUNIT.xml`); a report from a run in workers gives each module's own time on its
worker, which is what the order needs."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

SECONDS = {
    "e2e.test_etcd_restore": 295,  # with test_etcd_restore_ha: 550 as one module, split by a -n 2 run's share
    "e2e.test_etcd_restore_ha": 255,
    "e2e.test_pvc_consumers": 185,
    "e2e.test_namespace_interrupt": 170,
    "e2e.test_schedules": 145,
    "e2e.test_control_plane_restic_interrupt": 145,
    "e2e.test_etcd_member_replace": 140,
    "e2e.test_scale": 135,
    "e2e.test_etcd_restore_external": 130,
    "e2e.test_rook_quorum": 105,
    "e2e.test_pvc_restic_in_place": 90,
    "e2e.test_namespace_backup_retention": 80,
    "e2e.test_cli_backups_azure": 80,
    "e2e.test_pvc_failures": 70,
    "e2e.test_pvc_compression": 65,
    "e2e.test_namespace_roundtrip": 65,
    "conformance.test_kubectl_static_pods": 65,
    "e2e.test_pvc_restic": 60,
    "e2e.test_pvc_app_roundtrip": 55,
    "e2e.test_pvc_restic_restore": 55,
    "e2e.test_etcd_snapshot": 55,
    "e2e.test_control_plane_files": 55,
    "e2e.test_etcd_status": 50,
    "cluster_tests.test_node_pods": 45,
    "e2e.test_cli_backups_s3": 45,
    "e2e.test_pvc_safe_runs": 45,
    "e2e.test_pvc_roundtrip": 40,
    "e2e.test_pvc_errors": 40,
    "restic.test_prune": 40,
    "conformance.test_kubectl_cronjobs": 40,
    "e2e.test_cluster_identity": 40,
    "restic.test_cli": 40,
    "conformance.test_kubectl_controllers": 35,
    "e2e.test_etcd_errors": 30,
    "e2e.test_control_plane_restic": 30,
    "e2e.test_schedules_restic": 30,
    "conformance.test_kubectl_service_controllers": 30,
    "restic.test_prune_repack": 30,
    "conformance.test_kubectl_workloads": 30,
    "conformance.test_kubectl_etcd_restore_runbook": 25,
    "conformance.test_kubectl_cluster_lifecycle": 25,
    "e2e.test_pvc_security_protocols": 25,
    "cluster_tests.test_rook_ceph": 25,
    "unit.test_repo_azure": 25,
    "e2e.test_pvc_rescue_tty": 20,
    "e2e.test_pvc_restic_azure": 20,
    "e2e.test_pvc_list": 20,
    "conformance.test_kubectl_semantics": 20,
    "restic.test_format": 20,
    "unit.test_snapshot_file": 20,
    "e2e.test_exec_layer": 15,
    "e2e.test_completion": 15,
    "e2e.test_pvc_restic_blocks": 15,
    "e2e.test_etcd_encryption": 15,
    "e2e.test_pvc_malformed": 15,
    "release.test_release": 15,
    "e2e.test_backups_browse": 15,
    "restic.test_etcd_snapshot": 15,
}


def from_junit(path: str, floor: float = 15.0) -> dict[str, int]:
    """Each module's seconds in a junit report (its tests' times summed, setup and teardown included, rounded
    to 5 s), the modules of at least `floor` seconds, longest first."""
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").removeprefix("tests.")
        module = ".".join(module.split(".")[:2])  # drop a test class's name
        seconds[module] += float(case.get("time") or 0)
    longest_first = sorted(seconds.items(), key=lambda kv: (-kv[1], kv[0]))
    return {m: int(5 * round(s / 5)) for m, s in longest_first if s >= floor}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.module_seconds JUNIT.xml")
    print("SECONDS = {")
    for name, secs in from_junit(sys.argv[1]).items():
        print(f'    "{name}": {secs},')
    print("}")
