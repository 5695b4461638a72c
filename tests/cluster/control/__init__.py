"""Control plane of the loopback cluster: PKI, etcd members, scheduler, controllers and mirror pods."""
