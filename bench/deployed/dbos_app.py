"""The DBOS side as one app process: a FastAPI app whose durable workflows run inside it.

As a DBOS user deploys it: the library in the web app, its system database in PostgreSQL (here
a database of its own on the bench's embedded server, from DBOS_SYSTEM_DATABASE_URL).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Literal

import uvicorn
from dbos import DBOS, DBOSConfig, WorkflowHandleAsync
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

APPROVAL_TOPIC = "approval"
WAIT_SECONDS = 86_400  # the same 24 h durable wait as Blocks' SLA and the bare workflow's timer

# Which runs sit in their wait now: the bench's readiness probe, as the bare workflow's query.
_parked: set[str] = set()
# Handles of the runs this process started: awaiting one is a push (the workflow's own task),
# where a handle retrieved by id polls the status table (DBOS's default: every second).
_handles: dict[str, WorkflowHandleAsync[str]] = {}

app = FastAPI(title="bench DBOS approvals")


class StartIn(BaseModel):
    input: dict[str, str]


class DecisionIn(BaseModel):
    decision: Literal["approve", "reject"]


@DBOS.step()
async def one_step(decision: str) -> str:
    """The run's one step after the decision."""
    return f"{decision}d"


@DBOS.workflow()
async def expense_approval(expense: dict[str, str]) -> str:
    """Waits durably for a decision message (up to 24 h), runs one step, returns its result."""
    workflow_id = DBOS.workflow_id
    if workflow_id is None:
        raise RuntimeError("not inside a workflow")
    _parked.add(workflow_id)
    try:
        decision = await DBOS.recv_async(APPROVAL_TOPIC, timeout_seconds=WAIT_SECONDS)
    finally:
        _parked.discard(workflow_id)
    if decision is None:
        return "expired"
    return await one_step(str(decision))


@app.post("/runs", status_code=201)
async def start_run(body: StartIn) -> dict[str, str]:
    handle = await DBOS.start_workflow_async(expense_approval, body.input)
    run_id = handle.get_workflow_id()
    _handles[run_id] = handle
    return {"id": run_id}


@app.get("/runs/{run_id}")
async def read_run(run_id: str) -> dict[str, object]:
    return {"id": run_id, "parked": run_id in _parked}


@app.post("/runs/{run_id}/decisions")
async def decide(run_id: str, body: DecisionIn) -> dict[str, str]:
    await DBOS.send_async(run_id, body.decision, topic=APPROVAL_TOPIC)
    return {"id": run_id, "decision": body.decision}


@app.get("/runs/{run_id}/result")
async def run_result(run_id: str) -> dict[str, str]:
    handle = _handles.pop(run_id, None)
    if handle is None:
        try:
            handle = await DBOS.retrieve_workflow_async(run_id)
        except Exception as err:
            raise HTTPException(404, f"no run {run_id}") from err
    return {"id": run_id, "result": await handle.get_result()}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.deployed.dbos_app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    config: DBOSConfig = {
        "name": "bench-dbos-approvals",
        "system_database_url": os.environ["DBOS_SYSTEM_DATABASE_URL"],
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
