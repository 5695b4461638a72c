"""Volume contents through rescue pods: back up, restore and rescue the data of PersistentVolumeClaims.

The modules, from the bottom up: `claims` (what the claim is and where it lives), `archive` (what a tar
stream contains and whether it is safe), `security` (the securityContext a rescue pod may and must
have), `rescue_pod` (the pod manifest and its lifecycle), `scripts` (the shell run in the pod, which
reports size and SHA-256 of the exact byte stream), `tree_check` (the restored tree against the archive),
`quiesce` (stopping and restarting consumers through `kubectl_dr.workloads`), and the jobs `backup`,
`restore` and `rescue`.
"""
