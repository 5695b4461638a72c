"""`python -m kubectl_dr` runs the same entry point as the `kubectl-dr` executable."""

from kubectl_dr.cli.main import main

if __name__ == "__main__":
    main()
