"""etcd restore: preflight, staging, the self-driving node pods, and what comes after."""
