"""Settings: dev needs nothing, prod refuses to run on embedded defaults or with the demo org."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from blocks.infra.settings import Settings


def test_dev_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BLOCKS_DATABASE_URL", "BLOCKS_TEMPORAL_ADDRESS", "BLOCKS_ENV"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.database_url is None
    assert settings.api_port == 8000


def test_prod_requires_external_services_and_no_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKS_ENV", "prod")
    with pytest.raises(ValidationError, match="BLOCKS_DATABASE_URL"):
        Settings()
    monkeypatch.setenv("BLOCKS_DATABASE_URL", "postgresql://u:p@db/blocks")
    monkeypatch.setenv("BLOCKS_TEMPORAL_ADDRESS", "temporal:7233")
    with pytest.raises(ValidationError, match="BLOCKS_DEMO_ORG"):
        Settings()
    monkeypatch.setenv("BLOCKS_DEMO_ORG", "false")
    assert Settings().database_url is not None


def test_database_url_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKS_DATABASE_URL", "postgresql://u:hunter2@db/blocks")
    assert "hunter2" not in repr(Settings())
