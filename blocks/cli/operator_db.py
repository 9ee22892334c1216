"""The database an operator command works on: the configured one, or `blocks dev`'s embedded one."""

from __future__ import annotations

from blocks.infra.embedded.postgres import EmbeddedPostgres
from blocks.infra.settings import Settings


def operator_database_url(settings: Settings) -> str:
    """BLOCKS_DATABASE_URL, or the embedded database of the data dir `blocks dev` runs on."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    embedded = EmbeddedPostgres(settings.data_dir, port=settings.postgres_port)
    credentials = embedded.existing_credentials()
    if credentials is None:
        raise RuntimeError("BLOCKS_DATABASE_URL is not set and `blocks dev` has no data here yet")
    return credentials.url()
