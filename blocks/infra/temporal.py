"""The one Temporal client factory used by API, worker and CLI, so all share one data converter."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.service import TLSConfig

from blocks.infra.settings import Settings

DATA_CONVERTER: DataConverter = pydantic_data_converter


def _tls(settings: Settings) -> TLSConfig | bool:
    if settings.temporal_tls_cert is not None and settings.temporal_tls_key is not None:
        return TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes(),
            client_private_key=settings.temporal_tls_key.read_bytes(),
        )
    return settings.temporal_tls or settings.temporal_api_key is not None


async def connect(settings: Settings) -> Client:
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.require_temporal_address(),
        namespace=settings.temporal_namespace,
        data_converter=DATA_CONVERTER,
        tls=_tls(settings),
        api_key=api_key,
    )
