"""Entries for cron or systemd that run the jobs needing this client (PVC backups, pulls, copies, prune).

They hold paths and names, never secrets: S3 credentials stay in ~/.aws (or AWS_PROFILE), Azure keys in the
files the config file's azure section names (or the environment file), and a systemd
service also reads an optional environment file the user keeps private. Every entry takes a lock with
flock(1) on a file named after the entry, so a slow run and the next one (or one started by hand with the
same lock) never overlap; kubectl dr's own Leases keep runs from different machines apart as well.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.errors import UsageError
from kubectl_dr.schedules import cron, restic_jobs
from kubectl_dr.schedules.restic_jobs import PasswordSource

WHATS = ("etcd-pull", "pvc-backup", "copy", "prune")
# Names passed through when set where `print` runs: where things are, never credentials.
PASS_ENV = ("KUBECTL_DR_CONFIG", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
            "AZURE_STORAGE_ACCOUNT")
_DOW = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]


@dataclass
class ClientJob:
    name: str  # unit / lock / log name
    description: str
    cron: str
    argv: list[str]  # the kubectl-dr command line
    env: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "schedule": self.cron, "command": self.argv,
                "environment": self.env}


@dataclass(frozen=True)
class Context:
    executable: str  # absolute path of kubectl-dr
    kubeconfig: str | None
    kube_context: str | None
    repo: str | None
    env: dict[str, str]
    state_dir: str  # lock files and crontab logs
    azure_endpoint: str | None = None  # --azure-endpoint of an azure:// repository (no secret: a URL)
    password: PasswordSource | None = None  # a restic: repository's password file or command (never the password)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def build(whats: list[str], *, ctx: Context, cron_expr: str, pvcs: list[str], to: str | None,
          encrypt_to: list[str], keep: dict[str, int], to_azure_endpoint: str | None = None,
          keep_within: str | None = None, keep_tags: list[str] | None = None) -> list[ClientJob]:
    """One job per entry asked for, with the exact command line it runs."""
    cron.parse(cron_expr)
    unknown = [w for w in whats if w not in WHATS]
    if unknown:
        raise UsageError(f"unknown --what {', '.join(unknown)}: choose from {', '.join(WHATS)}")
    restic = restic_jobs.is_restic_job(ctx.repo)
    if restic:
        assert ctx.repo is not None
        restic_jobs.check_repository(ctx.repo, whats, encrypt_to=encrypt_to, to=to)
        if ctx.password is None:
            raise UsageError(f"a scheduled run of a restic repository needs its password: give {restic_jobs.HOW}")
    elif ctx.password is not None:
        raise UsageError("--password-file and --password-command apply to a restic repository (--repo restic:REPO)")
    elif keep_within is not None or keep_tags:
        raise UsageError("--keep-within and --keep-tag apply to restic repositories (--repo restic:REPO), whose "
                         "snapshots carry tags; use --keep-last, --keep-daily… here")
    base = [ctx.executable]
    if ctx.kubeconfig:
        base += ["--kubeconfig", ctx.kubeconfig]
    if ctx.kube_context:
        base += ["--context", ctx.kube_context]
    repo = ["--repo", ctx.repo] if ctx.repo else []
    if ctx.azure_endpoint:
        repo += ["--azure-endpoint", ctx.azure_endpoint]
    enc = [a for r in encrypt_to for a in ("--encrypt-to", r)]
    passed = PASS_ENV + (restic_jobs.PASS_ENV if restic else ())
    env = {k: v for k, v in ctx.env.items() if k in passed and v}
    if ctx.password is not None:
        repo += ctx.password.argv()
        env.update(ctx.password.env())
    where = ctx.repo or "the default repository"
    jobs: list[ClientJob] = []
    for what in dict.fromkeys(whats):
        if what == "etcd-pull":
            # --yes: unattended, an unencrypted pull to a remote repository was chosen when this was printed. Not
            # for restic (encrypted always), where its only effect would be a silent `restic init` of a mistyped
            # repository: a missing one fails the run instead, as a pvc-backup's does.
            yes = [] if restic else ["--yes"]
            jobs.append(ClientJob("kubectl-dr-etcd-pull", f"pull etcd snapshots off the nodes into {where}",
                                  cron_expr, [*base, "etcd", "snapshots", "pull", *repo, *enc, *yes], env))
        elif what == "pvc-backup":
            if not pvcs:
                raise UsageError("--what pvc-backup needs --pvc NAMESPACE/CLAIM (repeatable)")
            for ref in pvcs:
                ns, slash, claim = ref.partition("/")
                if not slash or not ns or not claim:
                    raise UsageError(f"--pvc {ref!r}: give NAMESPACE/CLAIM, e.g. shop/data-db-0")
                jobs.append(ClientJob(f"kubectl-dr-pvc-backup-{_slug(ns)}-{_slug(claim)}",
                                      f"back up PVC {ns}/{claim} into {where}", cron_expr,
                                      [*base, "pvc", "backup", claim, "-n", ns, *repo, *enc], env))
        elif what == "copy":
            if not to:
                raise UsageError("--what copy needs --to REPO (where the copies go, e.g. s3://BUCKET/PREFIX)")
            jobs.append(ClientJob(f"kubectl-dr-copy-{_slug(to)}"[:60].rstrip("-"),
                                  f"copy new backups from {where} to {to}", cron_expr,
                                  [*base, "backups", "copy", "--all", "--to", to, *repo,
                                   *(["--to-azure-endpoint", to_azure_endpoint] if to_azure_endpoint else [])],
                                  env))
        elif what == "prune":
            if not keep and keep_within is None and not keep_tags:
                raise UsageError("--what prune needs at least one of --keep-last, --keep-hourly, --keep-daily, "
                                 "--keep-weekly, --keep-monthly, --keep-yearly (restic: also --keep-within, "
                                 "--keep-tag)")
            rules = [a for k, v in keep.items() for a in (f"--keep-{k}", str(v))]
            rules += ["--keep-within", keep_within] if keep_within is not None else []
            rules += [a for t in keep_tags or [] for a in ("--keep-tag", t)]
            jobs.append(ClientJob("kubectl-dr-prune", f"apply retention to {where}", cron_expr,
                                  [*base, "backups", "prune", *rules, *repo, "--yes"], env))
    return jobs


def _cron_escape(text: str) -> str:
    # In a crontab command an unescaped % ends the command (the rest becomes its stdin).
    return text.replace("%", "\\%")


def _refuse_control_characters(jobs: list[ClientJob], *extra: str) -> None:
    """A newline (or any control character) in a value would end a crontab entry or a unit's line early and
    start another: refused, whatever quoting follows."""
    for job in jobs:
        for text in (*job.argv, *job.env.keys(), *job.env.values(), job.description, *extra):
            if any(ord(c) < 32 or ord(c) == 127 for c in text):
                raise UsageError(f"{text!r} holds a control character (a newline, a tab, …), which cannot be "
                                 "written into a crontab entry or a systemd unit: rename it, or write the entry "
                                 "yourself")


def crontab(jobs: list[ClientJob], ctx: Context, time_zone: str | None) -> str:
    _refuse_control_characters(jobs, ctx.state_dir,
                               *([ctx.password.describe()] if ctx.password is not None else []))
    if time_zone:
        raise UsageError("crontab entries run in the time zone of the machine's cron daemon; --time-zone works "
                         "with --systemd (OnCalendar takes a zone)")
    lines = ["# kubectl dr: client-side jobs (add with `crontab -e`, or: (crontab -l; kubectl dr schedule print …) "
             "| crontab -)",
             f"# Logs: {ctx.state_dir}/NAME.log. A run that finds the previous one still going skips (flock -n).",
             "# S3 credentials come from ~/.aws or AWS_PROFILE, Azure keys from the config file's azure.keyFile "
             "(or sasTokenFile,",
             "# connectionStringFile); none are written here."]
    if ctx.password is not None:
        lines += [f"# The restic password comes from {ctx.password.describe()}; the repository must exist "
                  "(restic init, or a first run by hand)."]
    for job in jobs:
        lock = f"{ctx.state_dir}/{job.name}.lock"
        log = f"{ctx.state_dir}/{job.name}.log"
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(job.env.items()))
        cmd = (f"mkdir -p {shlex.quote(ctx.state_dir)} && {{ date -u; {env + ' ' if env else ''}flock -n "
               f"{shlex.quote(lock)} {shlex.join(job.argv)}; echo \"exit $?\"; }} >> {shlex.quote(log)} 2>&1")
        lines += ["", f"# {job.name}: {job.description}", f"{job.cron} {_cron_escape(cmd)}"]
    return "\n".join(lines) + "\n"


def _calendar_field(values: frozenset[int], lo: int, hi: int, width: int) -> str:
    if values == frozenset(range(lo, hi + 1)):
        return "*"
    return ",".join(f"{v:0{width}d}" for v in sorted(values))


def on_calendar(expr: str, time_zone: str | None) -> str:
    """The cron schedule as a systemd OnCalendar= expression (same instants)."""
    s = cron.parse(expr)
    if not s.days_star and not s.weekdays_star:
        raise UsageError(f"--cron {expr!r} restricts both the day of month and the day of week, which cron ORs and "
                         "systemd ANDs: give one of them as *, or write the timer yourself")
    dow = "" if s.weekdays_star else ",".join(_DOW[d] for d in sorted(s.weekdays)) + " "
    date = f"*-{_calendar_field(s.months, 1, 12, 2)}-{_calendar_field(s.days, 1, 31, 2)}"
    clock = f"{_calendar_field(s.hours, 0, 23, 2)}:{_calendar_field(s.minutes, 0, 59, 2)}:00"
    return f"{dow}{date} {clock}" + (f" {time_zone}" if time_zone else "")


def _systemd_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "%%")


def systemd(jobs: list[ClientJob], time_zone: str | None, user: bool = True) -> dict[str, str]:
    """File name → contents: a oneshot service and its timer per job."""
    _refuse_control_characters(jobs)
    if time_zone:
        cron.zone(time_zone)
    where = "~/.config/systemd/user" if user else "/etc/systemd/system"
    files: dict[str, str] = {}
    for job in jobs:
        # systemd reads C escapes (\\ for \) and %-specifiers in Environment= too: a password command's \ and %
        # stay literal.
        env = "".join("Environment=" + _systemd_literal(shlex.quote(f"{k}={v}")) + "\n"
                      for k, v in sorted(job.env.items()))
        # %t is systemd's runtime directory; every other %, $ (a variable to systemd, even in quotes) and \ in
        # the command is literal, so escaped.
        lock = f"%t/{job.name}.lock" if user else f"/run/{job.name}.lock"
        description = job.description.replace("%", "%%")  # names the repository, which may hold a %
        exec_start = f"/usr/bin/flock -n {lock} " + _systemd_literal(shlex.join(job.argv)).replace("$", "$$")
        files[f"{where}/{job.name}.service"] = (
            f"[Unit]\nDescription=kubectl dr: {description}\n"
            "Wants=network-online.target\nAfter=network-online.target\n\n"
            "[Service]\nType=oneshot\n"
            f"{env}"
            f"# Secrets, if any (AWS_SECRET_ACCESS_KEY=…), go into this file, mode 0600:\n"
            f"EnvironmentFile=-{'%h/.config' if user else '/etc'}/kubectl-dr/{job.name}.env\n"
            f"ExecStart={exec_start}\n"
            "Nice=10\nIOSchedulingClass=idle\n"
        )
        files[f"{where}/{job.name}.timer"] = (
            f"[Unit]\nDescription=kubectl dr: {description} ({job.cron})\n\n"
            f"[Timer]\nOnCalendar={on_calendar(job.cron, time_zone)}\n"
            "# A run missed while the machine was off happens at the next boot.\nPersistent=true\n"
            "RandomizedDelaySec=60\n\n"
            "[Install]\nWantedBy=timers.target\n"
        )
    return files
