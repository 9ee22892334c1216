"""Configuration from BLOCKS_* environment variables; dev needs none, prod refuses insecure ones."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEV = "dev"
    TEST = "test"
    PROD = "prod"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLOCKS_", extra="forbid")

    env: Environment = Environment.DEV
    data_dir: Path = Path(".blocks")

    # Unset means `blocks dev` starts the embedded server and points these at it.
    database_url: SecretStr | None = None
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_api_key: SecretStr | None = None
    task_queue: str = "blocks"

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    postgres_port: int = Field(default=55432, ge=1, le=65535)
    temporal_port: int = Field(default=7233, ge=1, le=65535)
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)

    db_pool_size: int = Field(default=10, ge=1)
    demo_org: bool = True

    @model_validator(mode="after")
    def _refuse_insecure_prod(self) -> Settings:
        if self.env is Environment.PROD:
            if self.database_url is None or self.temporal_address is None:
                raise ValueError(
                    "BLOCKS_DATABASE_URL and BLOCKS_TEMPORAL_ADDRESS are required when BLOCKS_ENV=prod"
                )
            if self.demo_org:
                raise ValueError("BLOCKS_DEMO_ORG must be false when BLOCKS_ENV=prod")
        return self

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise RuntimeError("BLOCKS_DATABASE_URL is not set and no embedded database is running")
        return self.database_url.get_secret_value()

    def require_temporal_address(self) -> str:
        if self.temporal_address is None:
            raise RuntimeError("BLOCKS_TEMPORAL_ADDRESS is not set and no embedded Temporal runs")
        return self.temporal_address


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
