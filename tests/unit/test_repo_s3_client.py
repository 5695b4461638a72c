"""The S3 client kubectl-dr builds (botocore's session with its data loaded lean, botocore_data): it resolves
and signs exactly as a stock botocore client does, holds less memory, and keeps working for what it loads
later (paginators, waiters) and for every further client, against a real S3 server."""

from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import botocore.config
import botocore.session
import pytest

from kubectl_dr.repo import RepoError, open_repository
from kubectl_dr.repo.botocore_data import ENDPOINTS, SESSION_SERVICES, LeanJsonFiles, lean_loader, only_services
from kubectl_dr.repo.s3client import S3Settings, make_client
from tests.s3server import S3Server

KEYS = {"access_key": "AKIDEXAMPLE", "secret_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


@pytest.fixture(autouse=True)
def _no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the machine's AWS files nor its AWS_* variables take part."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _stock(service: str, region: str, endpoint: str | None) -> Any:
    """The client botocore makes with its own loader, configured as make_client configures ours."""
    style = "path" if endpoint else "auto"
    config = botocore.config.Config(request_checksum_calculation="when_required",
                                    response_checksum_validation="when_required", s3={"addressing_style": style})
    return botocore.session.Session().create_client(
        service, region_name=region, endpoint_url=endpoint, config=config,
        aws_access_key_id=KEYS["access_key"], aws_secret_access_key=KEYS["secret_key"])


def _lean(service: str, region: str, endpoint: str | None) -> Any:
    if service == "s3":
        return make_client(S3Settings(endpoint=endpoint, region=region, **KEYS))
    session = botocore.session.Session()
    session.register_component("data_loader", lean_loader(None))
    return session.create_client(service, region_name=region, endpoint_url=endpoint,
                                 aws_access_key_id=KEYS["access_key"], aws_secret_access_key=KEYS["secret_key"])


def _presigned(client: Any, service: str) -> tuple[str, str, str, str]:
    """Where a request goes and how it is signed (host, path, algorithm, credential scope without the date)."""
    if service == "s3":
        url = client.generate_presigned_url("get_object", Params={"Bucket": "kdr-bucket", "Key": "a/b"})
    else:
        url = client.generate_presigned_url("get_caller_identity")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    scope = query.get("X-Amz-Credential", [""])[0].split("/")
    return parts.netloc, parts.path, query.get("X-Amz-Algorithm", [""])[0], "/".join(scope[2:])


REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1", "eu-isoe-west-1", "aws-global"]


# An STS endpoint is never configured through kubectl-dr: the credential chain's STS client resolves its own.
@pytest.mark.parametrize(("service", "endpoint"), [("s3", None), ("s3", "http://127.0.0.1:9000"), ("sts", None)])
@pytest.mark.parametrize("region", REGIONS)
def test_a_lean_client_resolves_and_signs_as_a_stock_one(service: str, region: str, endpoint: str | None) -> None:
    """The trimmed endpoint table keeps the services' own entries and every partition's regions, suffixes and
    defaults: endpoint, region, partition and the presigned request are the same as with botocore's full table."""
    stock, lean = _stock(service, region, endpoint), _lean(service, region, endpoint)
    assert (lean.meta.endpoint_url, lean.meta.region_name, lean.meta.partition) == \
        (stock.meta.endpoint_url, stock.meta.region_name, stock.meta.partition)
    assert _presigned(lean, service) == _presigned(stock, service)


def test_only_the_session_services_stay_in_the_endpoint_table() -> None:
    stock = botocore.session.Session().get_component("data_loader").load_data(ENDPOINTS)
    lean = lean_loader(None).load_data(ENDPOINTS)
    assert [p["partition"] for p in lean["partitions"]] == [p["partition"] for p in stock["partitions"]]
    for full, cut in zip(stock["partitions"], lean["partitions"], strict=True):
        assert set(cut["services"]) == set(full["services"]) & SESSION_SERVICES
        assert "s3" in cut["services"] and "sts" in cut["services"]
        for name, entry in cut["services"].items():
            assert entry == full["services"][name]
        assert {k: v for k, v in cut.items() if k != "services"} == {k: v for k, v in full.items() if k != "services"}
    assert only_services({"version": 3}, {"s3"}) == {"version": 3}  # a layout not understood is kept whole


def test_the_kept_entries_are_those_of_the_credential_chains_services() -> None:
    """The endpoint table is keyed by endpoint prefix, not by service name (SSO's is `portal.sso`): each service
    an S3 session's credential chain calls keeps its entry, named as botocore's own models name it."""
    session = botocore.session.Session()
    available = set(session.get_available_services())
    for name in ("s3", "sts", "sso", "sso-oidc", "signin"):
        if name in available:
            assert session.get_service_model(name).endpoint_prefix in SESSION_SERVICES, name


def test_data_files_load_as_botocore_loads_them(tmp_path: Path) -> None:
    """Plain and gzipped JSON, the same content as botocore's own file loader reads; None when absent."""
    import botocore.loaders

    (tmp_path / "model.json").write_text('{"b": 1, "a": [1, {"z": null}]}')
    import gzip

    with gzip.open(tmp_path / "packed.json.gz", "wt") as f:
        f.write('{"x": "y"}')
    files, stock = LeanJsonFiles(), botocore.loaders.JSONFileLoader()
    for name in ("model", "packed", "missing"):
        path = str(tmp_path / name)
        assert files.exists(path) == stock.exists(path)
        assert files.load_file(path) == stock.load_file(path)
    assert list(files.load_file(str(tmp_path / "model"))) == ["b", "a"]  # the file's order


def _held(make: Any) -> int:
    """Bytes of Python allocations a freshly made client keeps."""
    gc.collect()
    tracemalloc.start()
    try:
        client = make()
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del client
    return held


def test_a_lean_client_holds_less_memory() -> None:
    """What issue 24 needs from it: several MiB less for every S3 client (a stock one keeps ~6.7 MiB of the
    endpoint table parsed into OrderedDicts, and the S3 model in OrderedDicts)."""
    _stock("s3", "us-east-1", None), _lean("s3", "us-east-1", None)  # modules imported, their caches filled
    stock = _held(lambda: _stock("s3", "us-east-1", "http://127.0.0.1:9000"))
    lean = _held(lambda: _lean("s3", "us-east-1", "http://127.0.0.1:9000"))
    assert lean < stock - (4 << 20), f"lean client {lean >> 20} MiB, stock {stock >> 20} MiB"


def test_later_loads_and_further_clients_work_against_a_server(seaweedfs: S3Server) -> None:
    """A paginator and a waiter load their models after the client exists, through the same lean loader; a
    second repository (a second client and session) reads what the first wrote."""
    bucket = seaweedfs.new_bucket()
    env = {**os.environ, **seaweedfs.env()}
    first = open_repository(f"s3://{bucket}/lean", env)
    writer = first.create("pvc", {"namespace": "shop", "pvc": "db"}, "lean")
    with writer.open_part("data.tar") as part:
        part.write(memoryview(b"x" * 1000))
    manifest = writer.commit({})
    client = first.client  # type: ignore[attr-defined]
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page["Contents"]]
    assert f"lean/{manifest.id}/data.tar" in keys
    client.get_waiter("object_exists").wait(Bucket=bucket, Key=f"lean/{manifest.id}/data.tar",
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    second = open_repository(f"s3://{bucket}/lean", env)
    assert second.client is not client  # type: ignore[attr-defined]
    assert second.verify(second.get(manifest.id)).id == manifest.id


def test_a_missing_profile_is_said_in_words(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("[profile other]\nregion = eu-west-1\n")
    with pytest.raises(RepoError, match="the AWS profile 'nope' does not exist"):
        make_client(S3Settings(profile="nope"))


def test_a_profile_gives_region_and_credentials(tmp_path: Path) -> None:
    """The session reads the profile as boto3's did: its region, and its keys for the requests' signatures."""
    (tmp_path / "config").write_text("[profile backups]\nregion = eu-central-1\n")
    (tmp_path / "credentials").write_text("[backups]\naws_access_key_id = AKIDPROFILE\n"
                                          "aws_secret_access_key = c2VjcmV0\n")
    client = make_client(S3Settings(profile="backups"))
    assert client.meta.region_name == "eu-central-1"
    url = client.generate_presigned_url("get_object", Params={"Bucket": "kdr-bucket", "Key": "k"})
    assert parse_qs(urlsplit(url).query)["X-Amz-Credential"][0].startswith("AKIDPROFILE/")
