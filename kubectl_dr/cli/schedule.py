"""`kubectl dr schedule`: recurring etcd snapshots as a plain CronJob, and client-side jobs for cron/systemd."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from kubectl_dr.cli.context import options, session
from kubectl_dr.errors import UsageError
from kubectl_dr.ui.output import emit, render_table

if TYPE_CHECKING:
    from kubectl_dr.cli.globals import GlobalOptions

app = typer.Typer(
    help=(
        "Schedules without a server: etcd snapshots by a plain CronJob into node-local directories (pulled off-site "
        "with `kubectl dr etcd snapshots pull`), and crontab or systemd entries for the jobs that need this client."
    ),
    no_args_is_help=True,
)
create_app = typer.Typer(help="Create a schedule (a CronJob labelled as kubectl dr's).", no_args_is_help=True)
app.add_typer(create_app, name="create", short_help="Create a schedule (a CronJob)")

def _namespace(opts: GlobalOptions) -> str:
    from kubectl_dr.etcd.topology import ETCD_NAMESPACE

    return opts.namespace or ETCD_NAMESPACE


@create_app.command("etcd-snapshot", short_help="Snapshot etcd into a directory on its nodes")
def create_etcd_snapshot(
    ctx: typer.Context,
    cron_expr: Annotated[str, typer.Option("--cron", metavar="EXPR", help=(
        "When to snapshot, as a CronJob schedule: '0 */12 * * *' (every 12 hours, k3s's default), '30 2 * * *', "
        "@hourly, @daily. Quote it."))],
    keep: Annotated[int, typer.Option("--keep", metavar="N", help=(
        "Snapshots of this schedule to keep on each node; older ones are removed after a new one is in place."))
    ] = 5,
    time_zone: Annotated[str | None, typer.Option("--time-zone", metavar="TZ", help=(
        "IANA time zone of --cron (spec.timeZone), e.g. Europe/Berlin. Default: the controller manager's, "
        "usually UTC."))] = None,
    node: Annotated[list[str] | None, typer.Option("--node", metavar="NODE", help=(
        "Only snapshot the etcd member on this node (repeat for several; the scheduler picks one per run). "
        "Default: any etcd node."))] = None,
    directory: Annotated[str, typer.Option("--dir", metavar="PATH", help=(
        "Directory on the nodes for the snapshots (created if missing): a directory of its own, not a system "
        "directory, nor one of the control plane's, the kubelet's, etcd's data or kubectl dr's restore staging."))
    ] = "/var/lib/kubectl-dr/snapshots",
    name: Annotated[str, typer.Option("--name", metavar="NAME", help=(
        "Name of the schedule (the CronJob's name).")
    )] = "kubectl-dr-etcd-snapshot",
    helper_image: Annotated[str, typer.Option("--helper-image", metavar="IMAGE", help=(
        "Image for the checks the etcd image cannot do (sh, sha256sum, od, mv: busybox or coreutils)."))
    ] = "busybox",
    replace: Annotated[bool, typer.Option("--replace", help=(
        "Replace an existing schedule of this name (after an etcd upgrade: the CronJob uses the etcd image it "
        "found when it was made)."))] = False,
    repo: Annotated[str | None, typer.Option("--repo", metavar="REPO", help=(
        "Not taken here, and refused with what to do instead: the CronJob writes only to the nodes' directories, "
        "since writing a repository from the cluster would store its credentials (a restic password, S3 keys) "
        "there. Pull the snapshots into it from your machine: schedule print --what etcd-pull --repo REPO."))
    ] = None,
) -> None:
    """Snapshot etcd on a schedule into a directory on the etcd nodes, with count retention: a plain CronJob.

    \b
    Each run is a Job with one pod on one etcd node (the scheduler picks one; --node restricts the choice):
      1. the cluster's own etcd image (from the etcd static pod, already on the node) runs
         `etcdctl snapshot save` against that node's member, under a temporary name, and reads the file
         back with `etcdctl snapshot status` where etcdctl still has it (3.4, 3.5);
      2. a busybox container checks the size rule and the SHA-256 trailer etcd writes, hashes the file,
         renames it into place as SCHEDULE-YYYYMMDDTHHMMSSZ.db, writes its sidecar SCHEDULE-….json
         (size, SHA-256, revision, member) last, and keeps the newest --keep of this schedule.
    Nothing runs between runs, no cloud credential lives in the cluster: `kubectl dr etcd snapshots list`
    shows the snapshots on every node and `kubectl dr etcd snapshots pull --to …` copies the new ones
    into a repository (a directory, S3, Azure or restic), verified end to end.

    The CronJob (namespace: kube-system, or -n) has concurrencyPolicy Forbid, hostNetwork, read-only mounts
    of the etcd CA and kubeadm's healthcheck client certificate and key, a read-write hostPath of --dir,
    no service-account token, an activeDeadlineSeconds, and tolerations and node affinity for the etcd nodes.

    \b
    Examples:
      kubectl dr schedule create etcd-snapshot --cron '0 */12 * * *' --keep 5
      kubectl dr schedule create etcd-snapshot --cron '30 2 * * *' --time-zone Europe/Berlin --node cp-1
      kubectl dr schedule create etcd-snapshot --cron @hourly --dry-run=client -o yaml   # the CronJob only
    """
    from kubectl_dr.schedules import cron, manage

    opts = options(ctx)
    if repo is not None:
        import shlex

        extra = " --password-file FILE" if repo.startswith("restic:") else ""
        raise UsageError(
            f"--repo {repo}: a schedule in the cluster writes only to the etcd nodes' --dir, never to a repository, "
            "whose password or keys would then be stored in the cluster (a Secret is base64, readable by whoever "
            "may read Secrets in its namespace). Create the schedule without --repo and pull its snapshots from "
            f"your machine: kubectl dr schedule print --crontab --what etcd-pull --repo {shlex.quote(repo)}{extra}")
    result = manage.create_etcd_snapshot(session(ctx), name=name, namespace=_namespace(opts), cron_expr=cron_expr,
                                         keep=keep, time_zone=time_zone, nodes=tuple(node or ()), directory=directory,
                                         helper_image=helper_image, replace=replace)
    spec = result.spec
    assert spec is not None
    console = session(ctx).console
    if result.note:
        console.warn(result.note)
    if opts.output != "table":
        emit(result.object, opts.output)
        return
    suffix = {"client": " (dry run)", "server": " (server dry run)"}.get(opts.dry_run, "")
    action = f"would be {result.action}" if suffix else result.action
    nodes = ", ".join(spec.nodes)
    upcoming = cron.next_run(spec.cron, time_zone, _now())
    console.say(f"schedule {spec.namespace}/{name} {action}{suffix}: etcd snapshots '{spec.cron}'"
            f"{' (' + time_zone + ')' if time_zone else ''} on one of {nodes}, into {spec.directory}, keeping "
            f"{keep} per node")
    if upcoming and not suffix:
        console.say(f"next run: {upcoming:%Y-%m-%d %H:%M} UTC; see it with `kubectl dr schedule list`, pull the "
                    "snapshots off the nodes with `kubectl dr etcd snapshots pull --to …`")
    emit(result.object, opts.output, table=f"cronjob.batch/{name} {action}{suffix}\n")


def _restic_location(ref: str) -> str:
    """restic:REPO as an entry must name it: a local path made absolute (cron starts in the home directory),
    any other kind checked as every command checks it."""
    import os

    from kubectl_dr.repo.restic.location import backend_for

    spec = ref.removeprefix("restic:")
    backend_for(ref, env={})  # an unsupported kind refused now, not at 3 a.m.
    if spec and ":" not in spec.split("/", 1)[0]:
        return "restic:" + os.path.abspath(os.path.expanduser(spec))
    return ref


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _age(text: str | None) -> str:
    """kubectl's age (`12m ago`), as the LAST SCHEDULE of `kubectl get cronjob` says it."""
    from kubectl_dr.units import age

    if not text:
        return "<none>"
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    delta = (_now() - moment).total_seconds()
    return f"{age(abs(delta))} {'ago' if delta >= 0 else 'ahead'}"


@app.command("list", short_help="List the schedules kubectl dr created")
def list_(
    ctx: typer.Context,
    all_namespaces: Annotated[bool, typer.Option("-A", "--all-namespaces", help="Schedules in every namespace.")
                              ] = False,
) -> None:
    """Our schedules (CronJobs labelled as kubectl dr's): schedule, last run, last success, next run.

    LAST RESULT is the newest Job's outcome (a Failed one gives its reason in -o json/yaml; its pod's log
    says why: kubectl logs -n kube-system job/JOB -c finish, or -c snapshot; its Jobs: kubectl get jobs -n
    kube-system -l kubectl-dr.io/schedule=NAME). Only kube-system (or -n) unless -A.

    \b
    Examples:
      kubectl dr schedule list
      kubectl dr schedule list -A -o json
    """
    from kubectl_dr.schedules import manage

    opts = options(ctx)
    found = manage.list_schedules(opts.kube(), None if all_namespaces else _namespace(opts))
    rows = [[*([s.namespace] if all_namespaces else []), s.name, s.what, s.cron + (f" ({s.time_zone})" if s.time_zone
                                                                                   else ""),
             s.keep, ",".join(s.nodes), s.directory, "suspended" if s.suspended else (f"{s.active} active" if s.active
                                                                                      else ""),
             _age(s.last_schedule), _age(s.last_success), s.last_job.result if s.last_job else "<none>",
             s.next_run or "<none>"] for s in found]
    headers = [*(["NAMESPACE"] if all_namespaces else []), "NAME", "KIND", "SCHEDULE", "KEEP", "NODES", "DIR",
               "STATE", "LAST RUN", "LAST SUCCESS", "LAST RESULT", "NEXT RUN"]
    if not found and opts.output == "table":
        where = "any namespace" if all_namespaces else f"namespace {_namespace(opts)}"
        session(ctx).console.say(f"No kubectl dr schedules found in {where}.")
        return
    emit({"kind": "ScheduleList", "items": [s.to_dict() for s in found]}, opts.output,
         table=render_table(headers, rows))


@app.command("delete", short_help="Delete a schedule with its Jobs and pods")
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The schedule (as `kubectl dr schedule list` names it).")],
) -> None:
    """Delete one of our schedules: the CronJob, its Jobs and their pods. Snapshots already on the nodes stay.

    Asks first on a terminal; without one it needs --yes. Refuses a CronJob that kubectl dr did not make.
    Remove old snapshots from the nodes after pulling them, or keep them: the next schedule with the same
    name and directory applies its retention to them.

    \b
    Examples:
      kubectl dr schedule delete kubectl-dr-etcd-snapshot
      kubectl dr schedule delete kubectl-dr-etcd-snapshot --yes    # in a script: no prompt
      kubectl dr schedule delete kubectl-dr-etcd-snapshot --dry-run=server
    """
    from kubectl_dr.schedules import manage

    opts = options(ctx)
    current = session(ctx)
    result = manage.delete(current, _namespace(opts), name)
    suffix = {"client": " (dry run)", "server": " (server dry run)"}.get(result.dry_run, "")
    emit(result.to_dict(), opts.output,
         table=f"cronjob.batch/{name} {'would be deleted' if suffix else 'deleted'}{suffix}\n")
    if result.snapshot_directory and not suffix and opts.output == "table":
        current.console.say(f"its snapshots stay in {result.snapshot_directory} on the nodes: "
                            "`kubectl dr etcd snapshots list` shows them")


@app.command("print", short_help="Print cron or systemd entries for client-side jobs")
def print_(
    ctx: typer.Context,
    crontab: Annotated[bool, typer.Option("--crontab", help="Print crontab lines (add them with `crontab -e`).")
                       ] = False,
    systemd: Annotated[bool, typer.Option("--systemd", help=(
        "Print a systemd service and timer per job (user units; --system for /etc/systemd/system)."))] = False,
    what: Annotated[list[str] | None, typer.Option("--what", metavar="JOB", help=(
        "etcd-pull (default), pvc-backup (with --pvc), copy (with --to), prune (with --keep-*). Repeatable."))
    ] = None,
    cron_expr: Annotated[str, typer.Option("--cron", metavar="EXPR", help=(
        "When the jobs run (cron syntax; converted to OnCalendar for systemd)."))] = "15 */12 * * *",
    time_zone: Annotated[str | None, typer.Option("--time-zone", metavar="TZ", help=(
        "IANA zone of --cron (systemd only; cron runs in the daemon's zone)."))] = None,
    repo: Annotated[str | None, typer.Option("--repo", metavar="PATH|s3://…|azure://…|restic:REPO", help=(
        "The repository the jobs write to (pulls, backups) or read from (copy, prune), restic:REPO included. "
        "Default: the one every command finds now ($KUBECTL_DR_REPO, the config file, the default directory), "
        "written into the entries."))] = None,
    pvc: Annotated[list[str] | None, typer.Option("--pvc", metavar="NAMESPACE/CLAIM", help=(
        "A claim to back up (pvc-backup; repeatable, one entry each)."))] = None,
    to: Annotated[str | None, typer.Option("--to", metavar="REPO", help="Where `copy` copies to.")] = None,
    encrypt_to: Annotated[list[str] | None, typer.Option("--encrypt-to", metavar="RECIPIENT", help=(
        "Encrypt what the jobs write to this age/SSH public key (repeatable)."))] = None,
    keep_last: Annotated[int | None, typer.Option("--keep-last", metavar="N", help="prune: keep the N newest.")
                         ] = None,
    keep_daily: Annotated[int | None, typer.Option("--keep-daily", metavar="N", help="prune: one a day for N days.")
                          ] = None,
    keep_weekly: Annotated[int | None, typer.Option("--keep-weekly", metavar="N",
                                                    help="prune: one a week for N weeks.")] = None,
    keep_monthly: Annotated[int | None, typer.Option("--keep-monthly", metavar="N",
                                                     help="prune: one a month for N months.")] = None,
    keep_hourly: Annotated[int | None, typer.Option("--keep-hourly", metavar="N",
                                                    help="prune: one an hour for N hours.")] = None,
    keep_yearly: Annotated[int | None, typer.Option("--keep-yearly", metavar="N",
                                                    help="prune: one a year for N years.")] = None,
    keep_within: Annotated[str | None, typer.Option("--keep-within", metavar="DURATION", help=(
        "prune, restic:REPO only: keep every snapshot within DURATION (7d, 1y6m, 36h) of its group's newest."))
    ] = None,
    keep_tag: Annotated[list[str] | None, typer.Option("--keep-tag", metavar="TAG[,TAG…]", help=(
        "prune, restic:REPO only: keep every snapshot that has all these tags (repeatable)."))] = None,
    password_file: Annotated[str | None, typer.Option("--password-file", metavar="FILE", help=(
        "restic:REPO: the file the entries read the password from (written as an absolute path; it must be "
        "the owner's only, mode 0600). Default: $RESTIC_PASSWORD_FILE."))] = None,
    password_command: Annotated[str | None, typer.Option("--password-command", metavar="CMD", help=(
        "restic:REPO: a command printing the password, set as RESTIC_PASSWORD_COMMAND in the entries (e.g. "
        "'pass show restic/prod', 'secret-tool lookup restic prod'). Default: $RESTIC_PASSWORD_COMMAND."))
    ] = None,
    system: Annotated[bool, typer.Option("--system", help="systemd: system units instead of user units.")] = False,
    azure_endpoint: Annotated[str | None, typer.Option("--azure-endpoint", metavar="URL", help=(
        "Blob service URL of --repo's Azure storage account (Azurite, a sovereign cloud), written into the "
        "entries."))] = None,
    to_azure_endpoint: Annotated[str | None, typer.Option("--to-azure-endpoint", metavar="URL", help=(
        "copy: blob service URL of --to's Azure storage account, when it differs from --repo's."))] = None,
) -> None:
    """Print cron or systemd entries that run client-side jobs from a machine you control.

    What needs this client — PVC backups (the archive streams here), pulls of node-local etcd snapshots,
    copies to S3, retention — cannot be a CronJob without putting cloud credentials into the cluster. These
    entries run it on your machine instead: the kubeconfig, context and repository as given now (absolute
    paths), `flock -n` so a slow run and the next never overlap, output appended to a log (crontab) or the
    journal (systemd). No credential is written: S3 keys come from ~/.aws or AWS_PROFILE, or for systemd
    from the optional private environment file the service names. Nothing is installed: review and add them.

    With --repo restic:REPO the jobs are pvc-backup (incremental restic snapshots, host NS/CLAIM), etcd-pull
    (one-file snapshots) and prune (restic's forget policy per claim, then prune; --keep-within and --keep-tag
    too). An entry names where the password comes from, never the password: --password-file FILE (mode 0600)
    or --password-command CMD (else $RESTIC_PASSWORD_FILE or $RESTIC_PASSWORD_COMMAND as set now). A password
    only in $RESTIC_PASSWORD, or in a rest: URL, is refused: the entry would hold it in plain text. The
    repository must exist (restic init): a scheduled run never creates one.

    \b
    Examples:
      (crontab -l; kubectl dr schedule print --crontab --what etcd-pull --repo s3://dr-backups/prod) | crontab -
      kubectl dr schedule print --systemd --what pvc-backup --pvc shop/data-db-0 --cron '0 3 * * *'
      kubectl dr schedule print --crontab --what copy --repo /srv/dr --to s3://dr-offsite --what prune --keep-daily 14
      kubectl dr schedule print --crontab --repo restic:s3:https://s3.example/dr/prod --password-file ~/.restic-pw \\
          --what pvc-backup --pvc shop/data-db-0 --what prune --keep-daily 7 --keep-weekly 4
    """
    import os
    import shutil
    import sys

    from kubectl_dr.cli.repo_options import open_repo
    from kubectl_dr.schedules import client_jobs

    opts = options(ctx)
    if crontab == systemd:
        raise UsageError("give one of --crontab or --systemd")
    # The executable running now (also when kubectl runs it as a plugin, or a release's single binary).
    running = sys.argv[0] if os.path.basename(sys.argv[0]).startswith("kubectl-dr") else None
    exe = running or shutil.which("kubectl-dr") or "kubectl-dr"
    kubeconfig = opts.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    kubeconfig = os.pathsep.join(os.path.abspath(os.path.expanduser(p)) for p in kubeconfig.split(os.pathsep) if p)
    from kubectl_dr.repo.location import check_scheme

    if to:
        check_scheme(to, "--to")  # a job that would write a directory named "gs:" is refused now
    from kubectl_dr.repo.config import load_config
    from kubectl_dr.schedules import restic_jobs

    password = None
    # In the order every command resolves the repository: --repo, KUBECTL_DR_REPO, the config file's.
    chosen = repo or os.environ.get("KUBECTL_DR_REPO") or load_config(os.environ).repository
    if chosen is not None and restic_jobs.is_restic_job(chosen):
        repo = _restic_location(chosen)
        password = restic_jobs.password_source(os.environ, file=password_file, command=password_command)
    else:
        if password_file or password_command:
            raise UsageError("--password-file and --password-command apply to a restic repository "
                             "(--repo restic:REPO)")
        # Resolved here, as every command resolves it (an unknown scheme refused), and written out: cron and
        # systemd run without the user's KUBECTL_DR_REPO, and a prune of another repository would be silent.
        repo = open_repo(repo, azure_endpoint=azure_endpoint).location
    if to_azure_endpoint and not (to or "").startswith("azure://"):
        raise UsageError("--to-azure-endpoint is for a copy to azure://CONTAINER/PREFIX (give --to azure://…)")
    if to and "://" not in to:
        to = os.path.abspath(os.path.expanduser(to))
    state = os.path.join(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "kubectl-dr")
    context = client_jobs.Context(executable=os.path.abspath(exe), kubeconfig=kubeconfig, kube_context=opts.context,
                                  repo=repo, env=dict(os.environ), state_dir=state,
                                  azure_endpoint=azure_endpoint if repo.startswith(("azure://", "restic:azure:"))
                                  else None, password=password)
    keep = {k: v for k, v in (("last", keep_last), ("hourly", keep_hourly), ("daily", keep_daily),
                              ("weekly", keep_weekly), ("monthly", keep_monthly), ("yearly", keep_yearly))
            if v is not None}
    if keep_within is not None:
        from kubectl_dr.repo.retention import Duration

        try:
            Duration.parse(keep_within)
        except ValueError as exc:
            raise UsageError(f"--keep-within: {exc}") from None
    jobs = client_jobs.build(what or ["etcd-pull"], ctx=context, cron_expr=cron_expr.strip(), pvcs=pvc or [], to=to,
                             encrypt_to=encrypt_to or [], keep=keep, to_azure_endpoint=to_azure_endpoint,
                             keep_within=keep_within, keep_tags=keep_tag or [])
    if crontab:
        text = client_jobs.crontab(jobs, context, time_zone)
        emit({"kind": "Crontab", "jobs": [j.to_dict() for j in jobs], "crontab": text}, opts.output, table=text)
        return
    files = client_jobs.systemd(jobs, time_zone, user=not system)
    enable = " ".join(f"{j.name}.timer" for j in jobs)
    flag = "" if system else " --user"
    table = (f"# Save each file below, then: systemctl{flag} daemon-reload && systemctl{flag} enable --now {enable}\n"
             + "".join(f"\n# ---- {path}\n{body}" for path, body in files.items()))
    emit({"kind": "SystemdUnits", "jobs": [j.to_dict() for j in jobs], "files": files}, opts.output, table=table)

