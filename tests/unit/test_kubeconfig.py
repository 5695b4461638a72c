"""kubectl's kubeconfig rules: merging, overrides, relative paths, namespace defaults, in-cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from kubectl_dr.errors import ConfigError
from kubectl_dr.kube.kubeconfig import Overrides, resolve


def write(path: Path, data: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def config(cluster: str, server: str, user: str, context: str, namespace: str | None = None,
           current: str | None = None, ca: str | None = None) -> dict[str, object]:
    ctx: dict[str, object] = {"cluster": cluster, "user": user}
    if namespace:
        ctx["namespace"] = namespace
    cl: dict[str, object] = {"server": server}
    if ca:
        cl["certificate-authority"] = ca
    data: dict[str, object] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cl}],
        "users": [{"name": user, "user": {"token": f"token-of-{user}"}}],
        "contexts": [{"name": context, "context": ctx}],
    }
    if current:
        data["current-context"] = current
    return data


def test_first_file_wins_for_names_and_current_context(tmp_path: Path) -> None:
    a = write(tmp_path / "a", config("c", "https://a:6443", "u", "ctx", "from-a", current="ctx"))
    b = write(tmp_path / "b", config("c", "https://b:6443", "u", "other", current="other"))
    resolved = resolve(Overrides(), {"KUBECONFIG": os.pathsep.join([str(a), str(b)]), "HOME": str(tmp_path)})
    assert resolved.server == "https://a:6443"
    assert resolved.context_name == "ctx"
    assert resolved.namespace == "from-a"
    assert resolved.sources == [a, b]


def test_context_from_a_later_file_can_be_selected(tmp_path: Path) -> None:
    a = write(tmp_path / "a", config("c", "https://a:6443", "u", "ctx", current="ctx"))
    b = write(tmp_path / "b", config("c2", "https://b:6443", "u2", "other"))
    env = {"KUBECONFIG": f"{a}{os.pathsep}{b}", "HOME": str(tmp_path)}
    resolved = resolve(Overrides(context="other"), env)
    assert resolved.server == "https://b:6443"
    assert resolved.namespace == "default"


def test_namespace_flag_beats_context_namespace(tmp_path: Path) -> None:
    a = write(tmp_path / "a", config("c", "https://a:6443", "u", "ctx", "shop", current="ctx"))
    resolved = resolve(Overrides(kubeconfig=str(a), namespace="billing"), {})
    assert resolved.namespace == "billing"


def test_cluster_and_user_overrides_apply_on_top_of_the_context(tmp_path: Path) -> None:
    data = config("c", "https://a:6443", "u", "ctx", current="ctx")
    data["clusters"].append({"name": "dr-site", "cluster": {"server": "https://dr:6443"}})  # type: ignore[attr-defined]
    data["users"].append({"name": "breakglass", "user": {"token": "t"}})  # type: ignore[attr-defined]
    path = write(tmp_path / "a", data)
    resolved = resolve(Overrides(kubeconfig=str(path), cluster="dr-site", user="breakglass"), {})
    assert resolved.server == "https://dr:6443"
    assert resolved.user_name == "breakglass"


def test_relative_certificate_paths_are_relative_to_their_file(tmp_path: Path) -> None:
    path = write(tmp_path / "conf" / "kc", config("c", "https://a:6443", "u", "ctx", current="ctx", ca="pki/ca.crt"))
    resolved = resolve(Overrides(kubeconfig=str(path)), {})
    cluster = resolved.config["clusters"][0]["cluster"]
    assert cluster["certificate-authority"] == str(tmp_path / "conf" / "pki" / "ca.crt")


def test_missing_named_file_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^stat .*/nope: no such file or directory$"):
        resolve(Overrides(kubeconfig=str(tmp_path / "nope")), {})
    path = write(tmp_path / "a", config("c", "https://a:6443", "u", "ctx", current="ctx"))
    with pytest.raises(ConfigError, match=r"^context was not found for specified context: prod$"):
        resolve(Overrides(kubeconfig=str(path), context="prod"), {})


def test_in_cluster_when_no_kubeconfig(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    (sa / "namespace").write_text("backup-jobs\n")
    from kubectl_dr.kube import kubeconfig

    env = {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert kubeconfig.in_cluster_available(env, sa)
    resolved = kubeconfig.in_cluster_config(env, Overrides(), sa)
    assert resolved.server == "https://10.96.0.1:443"
    assert resolved.namespace == "backup-jobs"
    assert resolved.in_cluster


def test_nothing_configured_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(Overrides(), {"HOME": str(tmp_path)})
    assert "no configuration has been provided" in info.value.message
    assert info.value.hint and "--kubeconfig" in info.value.hint
