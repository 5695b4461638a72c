"""Access to the global options from inside a command."""

from __future__ import annotations

from typing import Any

import typer

from kubectl_dr.cli.globals import GlobalOptions
from kubectl_dr.ui.console import confirm, terminal_ask

__all__ = ["confirm", "namespace_may_exist", "options", "terminal_ask"]


def options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):  # a command invoked without the root callback (tests)
        root.obj = GlobalOptions()
    return root.obj


def namespace_may_exist(kube: Any, namespace: str) -> bool:
    """False only when the API says the namespace does not exist; an admin of that namespace alone may not
    read Namespace objects (403), and must still be able to work in it."""
    from kubectl_dr.errors import ApiError

    try:
        return bool(kube.exists(f"/api/v1/namespaces/{namespace}"))
    except ApiError as exc:
        if exc.status == 403:
            return True
        raise
