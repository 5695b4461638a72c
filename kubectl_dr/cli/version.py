"""`kubectl dr version`: plugin, client library and server versions."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kubectl_dr import __version__
from kubectl_dr.cli.context import options
from kubectl_dr.ui.output import emit


def _client_library_version() -> str:
    # Imported when `version` runs: the root registers this command on every start, `--help` included. From the
    # module, not the package metadata: a PyInstaller archive carries only the metadata it was told to copy.
    from kubectl_dr.kube.transport import client_library_version

    return client_library_version()


def version(
    ctx: typer.Context,
    client: Annotated[
        bool, typer.Option("--client", help="If true, shows client version only (no server required).")
    ] = False,
) -> None:
    """Print the plugin, client library and (unless --client) API server versions.

    \b
    Examples:
      kubectl dr version
      kubectl dr version --client -o json
    """
    import platform

    opts = options(ctx)
    data: dict[str, Any] = {
        "pluginVersion": f"v{__version__}",
        # The requests go through our own transport on urllib3 (kube/transport.py); the kubernetes package
        # serves only oidc auth-provider users, so naming it here would point a bug report the wrong way.
        "clientLibraryVersion": _client_library_version(),
        "pythonVersion": platform.python_version(),
    }
    lines = [
        f"Plugin Version: v{__version__}",
        f"Client Library: urllib3 {data['clientLibraryVersion']} (Python {data['pythonVersion']})",
    ]
    if not client:
        server = opts.kube().server_version()
        data["serverVersion"] = server
        lines.append(f"Server Version: {server.get('gitVersion', 'unknown')}")
    emit(data, opts.output, table="\n".join(lines) + "\n")
