"""Entry script for the self-contained release executable (see scripts/release.py)."""

from kubectl_dr.cli.main import main

main()
