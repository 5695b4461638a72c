"""Volume contents through rescue pods: back up, restore and rescue the data of PersistentVolumeClaims.

The modules, from the bottom up: `claims` (what the claim is and where it lives), `archive` (what a tar
stream contains and whether it is safe), `security` (the securityContext a rescue pod may and must
have), `rescue_pod` (the pod manifest and its lifecycle), `scripts` (the shell run in the pod, which
reports size and SHA-256 of the exact byte stream), `tree_check` (the restored tree against the archive),
`quiesce` (stopping and restarting consumers through `kubectl_dr.workloads`), and the jobs `backup`,
`restore` and `rescue`.
"""

# The rescue pods' image, defined here (not in `rescue_pod`) so the CLI can show it without importing
# the client. busybox ≥ 1.36 hashes with the CPU's SHA instructions (upstream's default configuration),
# which makes the in-pod SHA-256 of a transfer about five times cheaper than with 1.35.
DEFAULT_IMAGE = "busybox:1.37"
