"""Schedules without a server: etcd snapshots by a plain CronJob, node-local snapshots pulled off-site, and
client-side jobs for cron and systemd."""
