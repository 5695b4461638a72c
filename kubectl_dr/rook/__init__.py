"""Rook-Ceph: the monitors' state as Rook and Ceph see it, and restoring mon quorum from one healthy mon."""
