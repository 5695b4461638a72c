"""`kubectl dr --help` must answer at once: the CLI tree imports no heavy client library up front.

Time itself is measured in benchmarks/startup.py; this checks the cause, structurally.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

HEAVY = ("kubernetes", "etcd3", "grpc", "google.protobuf", "urllib3", "websocket", "rich.progress", "boto3", "botocore",
         "pyrage", "azure")
PACKAGE = Path(__file__).resolve().parents[2] / "kubectl_dr"


def test_building_the_cli_imports_no_heavy_module() -> None:
    code = (
        "import sys, typer\n"
        "from kubectl_dr.cli.app import full_app\n"
        "typer.main.get_command(full_app())\n"
        f"print(' '.join(m for m in sys.modules if m.split('.')[0] in {[h.split('.')[0] for h in HEAVY]!r}"
        f" and any(m == h or m.startswith(h + '.') for h in {list(HEAVY)!r})))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == [], f"imported while building the CLI: {sorted(loaded)}"


def test_only_the_kube_layer_imports_kubernetes() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(PACKAGE / "kube"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.split(".")[0] == "kubernetes"]
    assert offenders == []
