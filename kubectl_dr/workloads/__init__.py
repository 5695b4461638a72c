"""Which workloads use a claim, and scaling them down and back with the original replicas recorded on them.

Public API:
- `find_consumers(kube, namespace, claim) -> list[Consumer]`, `consumer_nodes`, `claim_security_context`,
  `security_context_conflicts`;
- `scale_down(kube, consumers, *, run_id, reason, timeout, console) -> ScaleRecord` and
  `ScaleRecord.restore()` / `.keep()`;
- `scale_restore(kube, namespace | None, *, names, run_id, console) -> list[Restored]`.
"""

from kubectl_dr.workloads.consumers import (
    Consumer,
    PodInfo,
    claim_security_context,
    consumer_nodes,
    find_consumers,
    security_context_conflicts,
)
from kubectl_dr.workloads.scaling import (
    Restored,
    Scaled,
    ScaleRecord,
    pods_using_claim,
    scale_down,
    scale_restore,
    wait_for_claim_released,
)

__all__ = [
    "Consumer",
    "PodInfo",
    "Restored",
    "ScaleRecord",
    "Scaled",
    "claim_security_context",
    "consumer_nodes",
    "find_consumers",
    "pods_using_claim",
    "scale_down",
    "scale_restore",
    "security_context_conflicts",
    "wait_for_claim_released",
]
