"""The loopback cluster's API server: storage in etcd, REST, discovery, OpenAPI, auth and admission."""
