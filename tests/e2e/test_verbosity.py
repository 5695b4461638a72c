"""`-v N` as kubectl's: at 6 one line per API request on stderr (verb, URL, status, milliseconds), at 8 also the
scripts our pods run; stdout keeps the result alone, and without -v nothing of it shows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.cli_runner import dr
from tests.datasets import make_claim, managed_pods, new_namespace, volume_dir
from tests.polling import eventually

REQUEST = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ request\.go\] (GET|POST|PUT|PATCH|DELETE) (\S+) "
                     r"(\d{3}) [A-Za-z ]+ in (\d+) milliseconds$")


NO_CONFIG = {"KUBECTL_DR_CONFIG": "/dev/null"}


def requests(stderr: str) -> list[tuple[str, str, int]]:
    found = [REQUEST.match(line) for line in stderr.splitlines()]
    return [(m.group(1), m.group(2), int(m.group(3))) for m in found if m]


def test_v6_logs_every_request_and_v8_the_pod_scripts(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "verbose")
    make_claim(cluster, ns)
    (volume_dir(cluster, ns) / "file").write_text("contents\n")
    repo = tmp_path / "repo"
    server = str(json.loads(cluster.kubectl("config", "view", "--minify", "-o", "json").stdout)
                 ["clusters"][0]["cluster"]["server"])

    quiet = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", cluster=cluster,
               extra_env=NO_CONFIG, subprocess=True)
    assert quiet.returncode == 0, quiet.stderr
    assert requests(quiet.stderr) == [] and "request.go]" not in quiet.stderr
    eventually(lambda: managed_pods(cluster, ns) == [], what="the first backup's pod gone")

    six = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", "-v", "6", cluster=cluster,
             extra_env=NO_CONFIG, subprocess=True)
    assert six.returncode == 0, six.stderr
    assert json.loads(six.stdout)["source"]["pvc"] == "data"  # stdout carries the result alone
    seen = requests(six.stderr)
    assert (("GET", f"{server}/api/v1/namespaces/{ns}/persistentvolumeclaims/data", 200) in seen), six.stderr
    assert any(v == "POST" and u == f"{server}/api/v1/namespaces/{ns}/pods" and s == 201 for v, u, s in seen)
    execs = [(v, u, s) for v, u, s in seen if "/exec?" in u]
    assert execs and all(v == "GET" and s == 101 for v, _, s in execs)  # the upgrade to a stream
    assert any(v == "DELETE" and f"/api/v1/namespaces/{ns}/pods/" in u for v, u, _ in seen)
    assert all(u.startswith(server + "/") for _, u, _ in seen)
    assert "script.go]" not in six.stderr  # scripts come at 8
    eventually(lambda: managed_pods(cluster, ns) == [], what="the second backup's pod gone")

    eight = dr("pvc", "backup", "data", "-n", ns, "--repo", str(repo), "-o", "json", "--v=8", cluster=cluster,
               extra_env=NO_CONFIG, subprocess=True)
    assert eight.returncode == 0, eight.stderr
    assert requests(eight.stderr)
    scripts = [line for line in eight.stderr.splitlines() if "script.go]" in line]
    # The rescue pod's own command at its creation, then every script exec'd in it, with its text.
    assert any(" container " in line and "pod dr-rescue-data" in line for line in scripts), eight.stderr
    assert any(f"exec in pod {ns}/dr-rescue-data" in line for line in scripts), eight.stderr
    assert "<<'SCRIPT'" in eight.stderr and "\nSCRIPT\n" in eight.stderr


def test_v6_shows_the_failing_request(cluster: Any) -> None:
    ns = new_namespace(cluster, "verbose-missing")
    result = dr("pvc", "backup", "nothing-here", "-n", ns, "-v", "6", cluster=cluster, extra_env=NO_CONFIG)
    assert result.returncode == 1
    assert any(v == "GET" and u.endswith(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/nothing-here") and s == 404
               for v, u, s in requests(result.stderr)), result.stderr
    assert 'persistentvolumeclaims "nothing-here" not found' in result.stderr  # and the error itself, as before
