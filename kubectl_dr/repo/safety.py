"""Checks before a backup is written: consent before Secrets leave this machine in plain text."""

from __future__ import annotations

from collections.abc import Sequence

from kubectl_dr.console import Console
from kubectl_dr.repo.crypto import Recipient
from kubectl_dr.repo.repository import Repository

# Backup types that carry secrets, and what they carry (for the question asked before they go out in plain text).
SECRETS_HELD = {
    "etcd-snapshot": "every Secret of the cluster",
    "control-plane": "every Secret of the cluster",
    "app": "the Secrets of its namespaces",
    "rook-mon-quorum": "the Ceph cluster's keys (its mon store and keyring Secrets)",
}
SECRET_BEARING_TYPES = frozenset(SECRETS_HELD)


def confirm_plaintext_secrets(repo: Repository, what: str, console: Console, *,
                              recipients: Sequence[Recipient] | None = None,
                              holds: str = "every Secret of the cluster") -> None:
    """Call before writing ``what`` (an etcd snapshot, a control-plane backup: every Secret) to ``repo``.

    Encrypted (``recipients``, default the repository's) or local: nothing to ask. Unencrypted to a
    remote repository: the console's confirmation (--yes, or a yes typed on a terminal; without one it
    refuses). Raises DrError when refused, before anything is written or any pod started.
    """
    keys = repo.recipients if recipients is None else recipients
    if keys or not repo.remote:
        return
    console.confirm(f"write {what} unencrypted to the remote repository {repo.location}",
                    reason=f"it holds {holds}",
                    hint=("Encrypt it with --encrypt-to RECIPIENT (an age or SSH public key; or encryption.recipients "
                          "in the kubectl-dr config file), or pass --yes to store it in plain text."),
                    prompt=(f"{what[0].upper()}{what[1:]} holds {holds}. Write it unencrypted to "
                            f"{repo.location}?"))
