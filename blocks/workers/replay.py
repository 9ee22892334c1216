"""Replay recent histories against the code about to be deployed (`blocks workflows check-replay`).

Runs of an approval workflow wait for days, so a deploy meets histories the old code wrote. For
each workflow name the author's modules define, the most recent running and closed runs are
fetched from Temporal and replayed by the SDK's `Replayer` through the Blocks data converter (so
the payload codec decrypts them) and the worker's own sandbox. A run the new code would not
reproduce command for command is reported with its id and the first error.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from temporalio.client import Client, WorkflowHistory
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.worker import Replayer

from blocks.workers.main import INTERCEPTORS, SANDBOX
from blocks.workflows.catalogue import workflow_name
from blocks.workflows.sdk import BlocksWorkflow

# Blocks starts the workflow of run <uuid> as `run-<uuid>` (blocks.models.approvals.runs).
_RUN_PREFIX = "run-"
# Running runs are what the deploy must not break; recent closed runs cover the paths they took.
_STATUS_CLAUSES = ('ExecutionStatus = "Running"', 'ExecutionStatus != "Running"')
# The SDK's core reports a replay failure as a debug rendering of a Failure; its `message` says
# what differs ("[TMPRL1100] Nondeterminism error: Activity type of scheduled event ...").
_CORE_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class ReplayedRun:
    """One history replayed: which run, and the first error (None when it replayed cleanly)."""

    workflow: str
    run_id: str  # Blocks' run id; the workflow id for a workflow Blocks did not start
    temporal_run_id: str
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def blocks_run_id(workflow_id: str) -> str:
    return workflow_id.removeprefix(_RUN_PREFIX)


def history_query(name: str, status_clause: str) -> str:
    """A visibility query for one workflow type; the name is quoted, never spliced raw."""
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'WorkflowType = "{quoted}" AND {status_clause}'


async def recent_histories(
    client: Client, name: str, *, limit: int
) -> AsyncIterator[WorkflowHistory]:
    """Up to `limit` running and `limit` closed histories of workflow `name`, newest first."""
    for clause in _STATUS_CLAUSES:
        async for execution in client.list_workflows(history_query(name, clause), limit=limit):
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            yield await handle.fetch_history()


def first_error(failure: Exception) -> str:
    """The failure's own message, on one line."""
    text = str(failure)
    found = _CORE_MESSAGE.search(text)
    message = found.group(1).replace('\\"', '"') if found else text
    return " ".join(message.split())[:_MAX_ERROR_CHARS] or type(failure).__name__


def _quiet_runtime() -> Runtime:
    """A runtime whose core logs only errors: a failed replay is reported once, by the caller,
    not also as the warning a worker logs when it fails a workflow task."""
    level = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=level)))


async def check_replay(
    client: Client,
    workflows: Sequence[type[BlocksWorkflow]],
    *,
    limit: int,
    names: Iterable[str] | None = None,
) -> list[ReplayedRun]:
    """Replay the recent histories of each workflow (only `names`, if given) against `workflows`."""
    replayer = Replayer(
        workflows=list(workflows),
        data_converter=client.data_converter,
        workflow_runner=SANDBOX,
        interceptors=INTERCEPTORS,  # as the worker runs them
        runtime=_quiet_runtime(),
    )
    wanted = set(names) if names is not None else None
    results: list[ReplayedRun] = []
    for name in dict.fromkeys(workflow_name(cls) for cls in workflows):
        if wanted is not None and name not in wanted:
            continue
        histories = recent_histories(client, name, limit=limit)
        async with replayer.workflow_replay_iterator(histories) as replayed:
            async for result in replayed:
                failure = result.replay_failure
                results.append(
                    ReplayedRun(
                        workflow=name,
                        run_id=blocks_run_id(result.history.workflow_id),
                        temporal_run_id=result.history.run_id,
                        error=first_error(failure) if failure is not None else None,
                    )
                )
    return results
