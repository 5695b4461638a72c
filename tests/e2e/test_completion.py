"""`kubectl dr <TAB>` through real kubectl (its plugin completion runs `kubectl_complete-dr`, Cobra's protocol):
the values of flags and arguments come from the cluster (namespaces, claims, nodes, schedules), the kubeconfig
(contexts) and the repository (backup IDs); a dead API server ends the lookup after a short timeout."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from kubectl_dr.repo import LocalRepository
from tests.cli_runner import clean_env, dr, kubectl, run
from tests.datasets import make_claim, new_namespace


def complete(cluster: Any, *words: str, kubeconfig: Path | None = None) -> tuple[list[str], str]:
    """Real kubectl's `__complete dr WORDS…`: the candidates (values only) and the directive line."""
    env = clean_env({"KUBECONFIG": str(kubeconfig or cluster.kubeconfig), "KUBECTL_DR_CONFIG": "/dev/null"})
    result = run([kubectl("1.33"), "__complete", "dr", *words], env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and lines[-1].startswith(":"), result.stdout
    return [line.split("\t")[0] for line in lines[:-1]], lines[-1]


NO_CONFIG = {"KUBECTL_DR_CONFIG": "/dev/null"}


def test_flags_and_arguments_complete_from_the_cluster(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "complete")
    make_claim(cluster, ns, "data")
    make_claim(cluster, ns, "logs")

    # `-n <TAB>` after a sub-command completes namespaces, not commands (the flag waits for its value).
    names, directive = complete(cluster, "pvc", "backup", "-n", "")
    assert ns in names and "kube-system" in names and "backup" not in names and directive == ":4"
    names, _ = complete(cluster, "pvc", "backup", "--namespace", ns[:6])
    assert ns in names and all(n.startswith(ns[:6]) for n in names)
    names, _ = complete(cluster, "--namespace=" + ns[:6])
    assert ns in names

    # The claim argument: the claims of -n's namespace, wherever -n stands.
    assert complete(cluster, "pvc", "backup", "-n", ns, "")[0] == ["data", "logs"]
    assert complete(cluster, "-n", ns, "pvc", "restore", "l")[0] == ["logs"]
    assert complete(cluster, "scale", "down", "-n", ns, "")[0] == ["data", "logs"]

    # Nodes for --node, contexts (from the kubeconfig) for --context, formats for -o.
    nodes = cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert complete(cluster, "control-plane", "backup", "--node", "")[0] == sorted(nodes)
    contexts = cluster.kubectl("config", "get-contexts", "-o", "name").stdout.split()
    assert complete(cluster, "pvc", "list", "--context", "")[0] == sorted(contexts)
    assert complete(cluster, "backups", "list", "-o", "")[0] == ["table", "json", "yaml"]

    # Backup IDs from the repository (--repo as given on the line): `latest` and the IDs of --from's type.
    repo = tmp_path / "repo"
    backup = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster,
                extra_env=NO_CONFIG, input=b"", subprocess=True)
    assert backup.returncode == 0, backup.stderr
    ids = [b.id for b in LocalRepository(repo).backups()]
    assert len(ids) == 1
    names, directive = complete(cluster, "pvc", "restore", "data", "-n", ns, "--repo", str(repo), "--from", "")
    assert names == ["latest", *ids] and directive == ":4"
    assert complete(cluster, "backups", "show", "--repo", str(repo), "")[0] == ids
    assert complete(cluster, "etcd", "restore", "--repo", str(repo), "--from", "")[0] == ["latest"]  # no snapshots

    # Schedule names for `schedule delete`.
    created = dr("schedule", "create", "etcd-snapshot", "--name", "dr-complete", "--cron", "0 0 1 1 *",
                 cluster=cluster, extra_env=NO_CONFIG, input=b"", subprocess=True)
    assert created.returncode == 0, created.stderr
    try:
        assert "dr-complete" in complete(cluster, "schedule", "delete", "")[0]
    finally:
        assert dr("schedule", "delete", "dr-complete", "--yes", cluster=cluster, extra_env=NO_CONFIG, input=b"",
                  subprocess=True).returncode == 0


def test_commands_and_flags_still_complete_from_the_tree(cluster: Any) -> None:
    names, directive = complete(cluster, "pvc", "")
    assert {"backup", "restore", "diff", "rescue", "list"} <= set(names) and directive == ":4"
    assert "--quiesce" in complete(cluster, "pvc", "backup", "--qu")[0]
    assert "options" in complete(cluster, "")[0]


def test_a_dead_api_server_ends_the_lookup_soon(tmp_path: Path) -> None:
    # A server that accepts the connection and never answers: the lookup gives up after its short timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    config = tmp_path / "config"
    config.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: silent, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: silent, context: {{cluster: silent, user: u, namespace: default}}}}]
current-context: silent
""")
    try:
        started = time.monotonic()
        names, directive = complete(None, "pvc", "backup", "-n", "", kubeconfig=config)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert names == [] and directive == ":4"
    assert took < 15, f"completion waited {took:.1f}s on a server that does not answer"


def test_the_printed_bash_script_completes_from_the_cluster_too(cluster: Any, tmp_path: Path) -> None:
    # The script of `kubectl dr completion bash`, sourced into a real bash, for the kubectl-dr executable itself.
    ns = new_namespace(cluster, "bash")
    make_claim(cluster, ns, "data")
    make_claim(cluster, ns, "logs")
    script = tmp_path / "complete.sh"
    script.write_text(
        "source <(kubectl-dr completion bash)\n"
        f"for words in 'kubectl-dr -n {ns} pvc restore l' 'kubectl-dr -n {ns} pvc backup ' "
        "'kubectl-dr control-plane backup --node '; do\n"
        "  read -r -a COMP_WORDS <<< \"$words\"; [ \"${words: -1}\" = ' ' ] && COMP_WORDS+=('')\n"
        "  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=(); _kubectl_dr_completion kubectl-dr\n"
        "  echo \"${COMPREPLY[*]}\"\n"
        "done\n")
    result = run(["bash", str(script)], env=clean_env({"KUBECONFIG": str(cluster.kubeconfig), **NO_CONFIG}),
                 timeout=60)
    nodes = cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert result.stdout.splitlines() == ["logs", "data logs", " ".join(sorted(nodes))], result
