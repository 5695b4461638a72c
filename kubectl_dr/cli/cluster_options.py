"""The options that say which cluster's backups a restore may take (a backup records its cluster)."""

from __future__ import annotations

from typing import Annotated

import typer

FromClusterOption = Annotated[
    str | None, typer.Option("--from-cluster", metavar="NAME|UID",
                             help="With --from latest: the newest backup of this other cluster (its kube-system "
                                  "uid, or the context name or server URL its backups record). Without it, "
                                  "latest is the newest backup of the current cluster.")
]
FromOtherClusterOption = Annotated[
    bool, typer.Option("--from-other-cluster",
                       help="Restore a backup of another cluster (another kube-system uid) into this one. Refused "
                            "without it: another cluster's state is almost never meant.")
]
