"""One run of a command that changes the cluster: who it is, the leases it holds, and its heartbeat.

A `Run` names itself (host, pid, run id, command) on everything it creates. Its `Lease` objects
(`coordination.k8s.io/v1`) keep two runs off one claim or one etcd member: renewed while the run
works, expired soon after it dies. The `Heartbeat` thread renews them and touches every pod of the
run, whose dead-man loop ends the pod a few minutes after the touches stop.
"""

from kubectl_dr.runs.heartbeat import Heartbeat
from kubectl_dr.runs.leases import Lease, LeaseHeld, LeaseLost, lease_name
from kubectl_dr.runs.run import Run

__all__ = ["Heartbeat", "Lease", "LeaseHeld", "LeaseLost", "Run", "lease_name"]
