"""The one Temporal client factory used by API, worker and CLI, so all share one data converter."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadConverter,
)
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from blocks.core.approvals.search_attributes import STATUS
from blocks.infra.crypto.dev_keys import configured_or_dev_key
from blocks.infra.crypto.key_specs import new_payload_key_spec, parse_payload_keys
from blocks.infra.settings import Settings
from blocks.infra.temporal.payload_codec import EncryptionCodec

# Without the codec: for reading raw history in tests, and what the codec wraps.
PLAIN_DATA_CONVERTER: DataConverter = pydantic_data_converter


def payload_key_spec(settings: Settings) -> str:
    return configured_or_dev_key(
        settings.payload_keys,
        settings,
        variable="BLOCKS_PAYLOAD_KEYS",
        file_name="payload-keys",
        new_spec=new_payload_key_spec,
        error=RuntimeError,
    )


def encrypting_data_converter(key_spec: str) -> DataConverter:
    """Pydantic-aware JSON, then AES-256-GCM: history, inputs, results and updates are ciphertext.

    Failures too: their message and stack trace travel as an encoded payload (through the same
    codec), and history keeps only "Encoded failure", the error type and whether it may retry.
    """
    return dataclasses.replace(
        PLAIN_DATA_CONVERTER,
        payload_codec=EncryptionCodec(*parse_payload_keys(key_spec)),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def _tls(settings: Settings) -> TLSConfig | bool:
    if settings.temporal_tls_cert is not None and settings.temporal_tls_key is not None:
        return TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes(),
            client_private_key=settings.temporal_tls_key.read_bytes(),
        )
    return settings.temporal_tls or settings.temporal_api_key is not None


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """The client every process uses. `lazy` (the API) connects on first use and again on any
    later call while Temporal is unreachable, so the API starts and serves what needs no
    workflow engine while it is down, and recovers by itself when it is back."""
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.require_temporal_address(),
        namespace=settings.temporal_namespace,
        data_converter=encrypting_data_converter(payload_key_spec(settings)),
        tls=_tls(settings),
        api_key=api_key,
        lazy=lazy,
    )


@dataclass(frozen=True)
class ExecutionState:
    status: WorkflowExecutionStatus
    stage: str | None


async def describe_execution(client: Client, workflow_id: str) -> ExecutionState:
    """Status and the Blocks stage attribute of a workflow, read from the raw description.

    The SDK's `describe()` decodes every search attribute, and the time-skipping test server
    returns datetime attributes in a form it cannot parse; only the keyword we need is decoded.
    """
    response = await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    info = response.workflow_execution_info
    payload = info.search_attributes.indexed_fields.get(STATUS.name)
    stage = PayloadConverter.default.from_payload(payload, str) if payload is not None else None
    return ExecutionState(status=WorkflowExecutionStatus(info.status), stage=stage)


async def find_execution(client: Client, workflow_id: str) -> ExecutionState | None:
    """`describe_execution`, or None when Temporal has no workflow with this id."""
    try:
        return await describe_execution(client, workflow_id)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
