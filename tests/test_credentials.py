"""One credential-key rule: deploy refuses credentials in generated code, the store hides them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT

from pygeoapi_prefect.cli.deploy import DeployError, module_source
from pygeoapi_prefect.cli.main import cli
from pygeoapi_prefect.credentials import credential_keys, credential_values, is_credential_key
from pygeoapi_prefect.jobs.results import ResultStore

FAMILIES = {
    "aws": [
        "key",
        "secret",
        "token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "session_token",
        "aws_session_token",
    ],
    "gcs": ["token", "credentials", "service_account_file", "service_account_info"],
    "azure": ["account_key", "connection_string", "sas_token", "client_secret", "credential"],
    "generic": [
        "password",
        "db_password",
        "api_token",
        "my_secret",
        "private_key",
        "signing_key",
        "proxy_credentials",
        "PASSWORD",
    ],
}
HARMLESS = [
    "anon",
    "endpoint_url",
    "region_name",
    "use_ssl",
    "account_name",
    "client_id",
    "tenant_id",
    "project",
    "requester_pays",
    "default_block_size",
]
_CASES = [(family, key) for family, keys in FAMILIES.items() for key in keys]


@pytest.mark.parametrize(("family", "key"), _CASES, ids=[f"{f}-{k}" for f, k in _CASES])
def test_every_family_counts_as_credentials(family: str, key: str) -> None:
    assert is_credential_key(key)


@pytest.mark.parametrize("key", HARMLESS)
def test_plain_settings_do_not(key: str) -> None:
    assert not is_credential_key(key)


def test_keys_are_found_at_any_depth() -> None:
    options = {
        "anon": False,
        "client_kwargs": {"endpoint_url": "http://s3", "aws_secret_access_key": "s3cr3t-x"},
        "config_kwargs": [{"connection_string": "DefaultEndpoints=...;AccountKey=abcd"}],
        "token": {"type": "service_account", "private_key": "-----BEGIN..."},
    }
    assert credential_keys(options) == [
        "client_kwargs.aws_secret_access_key",
        "config_kwargs[0].connection_string",
        "token",
    ]
    assert sorted(credential_values(options)) == sorted(
        ["s3cr3t-x", "DefaultEndpoints=...;AccountKey=abcd", "service_account", "-----BEGIN..."]
    )


@pytest.mark.parametrize(("family", "key"), _CASES, ids=[f"{f}-{k}" for f, k in _CASES])
def test_deploy_refuses_credentials_naming_the_key(family: str, key: str) -> None:
    results = {"url": "s3://bucket/results", "storage_options": {"anon": False, key: "v4lue-x"}}
    with pytest.raises(DeployError) as caught:
        module_source("hello-world", {"processor": {"name": "HelloWorld"}}, results)
    text = str(caught.value)
    assert f"server.manager.results.storage_options.{key}" in text
    assert "Prefect block" in text and "environment" in text
    assert "v4lue-x" not in text


def test_deploy_refuses_nested_azure_credentials() -> None:
    results = {
        "url": "abfs://container/results",
        "storage_options": {"account_name": "acct", "client_kwargs": {"sas_token": "sv=x"}},
    }
    with pytest.raises(DeployError, match=r"storage_options\.client_kwargs\.sas_token"):
        module_source("hello-world", {"processor": {"name": "HelloWorld"}}, results)


def test_deploy_writes_plain_options() -> None:
    options: dict[str, Any] = {key: "x" for key in HARMLESS}
    source = module_source(
        "hello-world",
        {"processor": {"name": "HelloWorld"}},
        {"url": "s3://b/p", "storage_options": options},
    )
    compile(source, "generated.py", "exec")
    assert "endpoint_url" in source


def test_the_cli_refuses_azure_keys_before_touching_prefect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Azure's keys were written into the generated flow code in plain text.
    config = yaml.safe_load((ROOT / "example-config.yml").read_text())
    config["server"]["manager"] = {
        "name": "pygeoapi_prefect.manager.PrefectManager",
        "results": {
            "url": "abfs://container/results",
            "storage_options": {"account_name": "acct", "account_key": "azure-key-never-shown"},
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = CliRunner().invoke(
        cli,
        ["deploy-process-as-flow", "hello-world", "--config", str(path), "--work-pool", "p"],
        env={"PREFECT_API_URL": "http://127.0.0.1:9/api"},
    )
    written = [p.read_text() for p in work.rglob("*.py")]
    assert result.exit_code == 1, result.output
    assert "server.manager.results.storage_options.account_key" in result.output
    assert "azure-key-never-shown" not in result.output
    assert written == []  # no flow code was generated


def test_the_store_hides_nested_credentials() -> None:
    store = ResultStore(
        "nosuchprotocol://bucket/x",
        {"client_kwargs": {"connection_string": "AccountKey=hidden-azure-value"}},
    )
    assert "AccountKey=hidden-azure-value" in store._secrets()
