"""Settings: dev needs nothing; prod refuses embedded defaults; mistakes are refused, not ignored."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from blocks.infra.crypto.key_specs import new_payload_key_spec
from blocks.infra.crypto.signing import new_signing_key_spec
from blocks.infra.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("BLOCKS_")]:
        monkeypatch.delenv(name)


def test_dev_defaults_need_no_configuration() -> None:
    settings = Settings()
    assert settings.database_url is None
    assert settings.api_port == 8000


def test_prod_requires_external_services_keys_and_no_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKS_ENV", "prod")
    monkeypatch.setenv("BLOCKS_DEMO_ORG", "false")
    monkeypatch.setenv("BLOCKS_PAYLOAD_KEYS", new_payload_key_spec())
    monkeypatch.setenv("BLOCKS_AUDIT_SIGNING_KEY", new_signing_key_spec())
    monkeypatch.setenv("BLOCKS_MASTER_KEYS", new_payload_key_spec("m1"))
    with pytest.raises(ValidationError, match="BLOCKS_DATABASE_URL"):
        Settings()
    monkeypatch.setenv("BLOCKS_DATABASE_URL", "postgresql://u:p@db/blocks")
    monkeypatch.setenv("BLOCKS_TEMPORAL_ADDRESS", "temporal:7233")
    monkeypatch.setenv("BLOCKS_PUBLIC_URL", "https://blocks.example.com")
    assert Settings().database_url is not None
    monkeypatch.setenv("BLOCKS_DEMO_ORG", "true")
    with pytest.raises(ValidationError, match="BLOCKS_DEMO_ORG"):
        Settings()
    monkeypatch.setenv("BLOCKS_DEMO_ORG", "false")
    monkeypatch.delenv("BLOCKS_PAYLOAD_KEYS")
    with pytest.raises(ValidationError, match="BLOCKS_PAYLOAD_KEYS"):
        Settings()
    monkeypatch.setenv("BLOCKS_PAYLOAD_KEYS", new_payload_key_spec())
    monkeypatch.delenv("BLOCKS_MASTER_KEYS")
    with pytest.raises(ValidationError, match="BLOCKS_MASTER_KEYS"):
        Settings()


def _valid_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKS_ENV", "prod")
    monkeypatch.setenv("BLOCKS_DEMO_ORG", "false")
    monkeypatch.setenv("BLOCKS_PAYLOAD_KEYS", new_payload_key_spec())
    monkeypatch.setenv("BLOCKS_AUDIT_SIGNING_KEY", new_signing_key_spec())
    monkeypatch.setenv("BLOCKS_MASTER_KEYS", new_payload_key_spec("m1"))
    monkeypatch.setenv("BLOCKS_DATABASE_URL", "postgresql://u:p@db/blocks")
    monkeypatch.setenv("BLOCKS_TEMPORAL_ADDRESS", "temporal:7233")
    monkeypatch.setenv("BLOCKS_PUBLIC_URL", "https://blocks.example.com")


def test_prod_requires_the_public_url_to_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    _valid_prod(monkeypatch)
    assert Settings().public_url == "https://blocks.example.com"
    monkeypatch.delenv("BLOCKS_PUBLIC_URL")
    # The default is a loopback address: links in emails and the origin check would be wrong.
    with pytest.raises(ValidationError, match="BLOCKS_PUBLIC_URL is required"):
        Settings()
    # Not even the default's own value, written out: it is not where people reach Blocks.
    monkeypatch.setenv("BLOCKS_PUBLIC_URL", "http://127.0.0.1:8000")
    with pytest.raises(ValidationError, match="BLOCKS_PUBLIC_URL must be an https:// URL"):
        Settings()


@pytest.mark.parametrize(
    "url",
    ["http://blocks.example.com", "https://", "blocks.example.com", "ftp://blocks.example.com"],
)
def test_prod_requires_an_https_public_url(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    _valid_prod(monkeypatch)
    monkeypatch.setenv("BLOCKS_PUBLIC_URL", url)
    with pytest.raises(ValidationError, match="BLOCKS_PUBLIC_URL must be an https:// URL"):
        Settings()


def test_prod_reaches_pubnub_over_tls_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _valid_prod(monkeypatch)
    for name, value in (("PUBLISH", "pub-c-1"), ("SUBSCRIBE", "sub-c-1"), ("SECRET", "sec-c-1")):
        monkeypatch.setenv(f"BLOCKS_PUBNUB_{name}_KEY", value)
    assert Settings().pubnub_ssl is True
    monkeypatch.setenv("BLOCKS_PUBNUB_SSL", "false")
    with pytest.raises(ValidationError, match="BLOCKS_PUBNUB_SSL must stay true"):
        Settings()


def test_dev_keeps_the_loopback_public_url() -> None:
    assert Settings().public_url == "http://127.0.0.1:8000"


def test_a_misspelt_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKS_DATABSE_URL", "postgresql://u:p@db/blocks")
    with pytest.raises(ValidationError, match="BLOCKS_DATABSE_URL"):
        Settings()


@pytest.mark.parametrize(
    "name", ["BLOCKS_DATABASE_URL", "BLOCKS_TEMPORAL_ADDRESS", "BLOCKS_PAYLOAD_KEYS"]
)
def test_set_but_empty_is_refused(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, " ")
    with pytest.raises(ValidationError, match=f"{name} is set but empty"):
        Settings()


def test_tls_certificate_and_key_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKS_TEMPORAL_TLS_CERT", "/etc/blocks/client.pem")
    with pytest.raises(ValidationError, match="go together"):
        Settings()


def test_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKS_DATABASE_URL", "postgresql://u:hunter2@db/blocks")
    spec = new_payload_key_spec()
    monkeypatch.setenv("BLOCKS_PAYLOAD_KEYS", spec)
    shown = repr(Settings()) + str(Settings())
    assert "hunter2" not in shown
    assert spec.split(":")[1] not in shown
