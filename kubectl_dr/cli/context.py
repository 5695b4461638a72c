"""Access to the global options, and the one `Session` of this invocation, from inside a command."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from kubectl_dr.cli.globals import GlobalOptions

if TYPE_CHECKING:
    from kubectl_dr.kube.client import Kube
    from kubectl_dr.session import Session

__all__ = ["namespace_may_exist", "options", "session"]


def options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):  # a command invoked without the root callback (tests)
        root.obj = GlobalOptions()
    return root.obj


def session(ctx: typer.Context) -> Session:
    """The session every job of this command takes: made once, on first use."""
    return options(ctx).session()


def namespace_may_exist(kube: Kube, namespace: str) -> bool:
    """False only when the API says the namespace does not exist; an admin of that namespace alone may not
    read Namespace objects (403), and must still be able to work in it."""
    from kubectl_dr.errors import ApiError

    try:
        return bool(kube.exists(f"/api/v1/namespaces/{namespace}"))
    except ApiError as exc:
        if exc.status == 403:
            return True
        raise
