"""Application backups: a namespace's objects and its claims' data in one backup, restored into this
cluster or another (DESIGN §9). Objects go through the API as plain dicts; claims' data through the
`pvc` backup and restore jobs; workloads come back at 0 replicas and are scaled up once their data is in."""

TYPE = "app"
OBJECTS_PART = "objects.json"
RECORD_PART = "record.json"
