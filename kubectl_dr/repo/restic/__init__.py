"""restic repositories, written and read in restic's own format (restic's doc/design.rst), so that every
restic tool works on our backups and our restores read what restic wrote. The `restic` CLI is the
oracle of the tests. Modules, bottom up: crypto, backend, nodes (trees), polynomial, keys (and config),
packs, index, snapshots, repository, chunking, locks.
"""
