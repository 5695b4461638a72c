"""`kubectl dr control-plane backup|restore`: the files a rebuilt kubeadm control-plane node needs.

Read through a pod with read-only hostPath mounts, stored one part per file with its SHA-256, mode and
owner; written back (only the shared CA and key set) with the same modes and owners.
"""
