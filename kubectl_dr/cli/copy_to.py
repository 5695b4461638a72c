"""`--copy-to REPO` on the commands that make a backup: the option; the job opens and fills the targets
(`kubectl_dr.repo.copies`), and the commands whose CLI still opens its repository call them from here."""

from __future__ import annotations

from typing import Annotated

import typer

from kubectl_dr.repo.copies import copy_new, open_targets

__all__ = ["CopyToOption", "copy_new", "open_targets"]

CopyToOption = Annotated[list[str] | None, typer.Option(
    "--copy-to", metavar="PATH|s3://…|azure://…", rich_help_panel="Repository",
    help="Also copy the new backup into this repository once it is stored and verified (repeatable). The "
         "target is checked before the cluster is touched; a failed copy keeps the backup and says how to "
         "finish the copy.")]
