"""Events leaving Blocks through the real stack: webhooks fed by the audit log, a SIEM stream that
survives its receiver's outage and verifies the chain from what it got, and a witness whose
checkpoints catch a superuser's rewrite.

The API, a worker with the event activities and the worker's dispatcher run against the real
Temporal dev server and PostgreSQL; every receiver is real, on 127.0.0.1, and verifies each
request with the `standardwebhooks` package.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.core.audit.chain import GENESIS_HASH, chain_hash
from blocks.core.audit.chain_verifier import verify_signature
from blocks.core.audit.export_format import SignedCheckpoint
from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.infra.integrations.outbound_http import OutboundPolicy
from blocks.workers.event_dispatcher import EventDispatcher
from blocks.workers.main import build_worker
from tests.e2e.audit_tools import append, checkpoint, export, rewrite_and_rehash, verify
from tests.support import (
    EXAMPLE_WORKFLOWS,
    EXPENSE,
    SIGNING_KEY,
    Org,
    Stack,
    free_port,
    make_org,
    running_stack,
    signed_in_headers,
    wait_for_status,
)
from tests.webhook_receiver import Received, WebhookReceiver, running_receiver

HOOKS = "/v1/integrations/webhooks"
RUN_EVENTS = ["run.started", "step.opened", "step.decided", "run.completed"]


@dataclass
class Streams:
    stack: Stack
    webhook: WebhookReceiver
    siem: WebhookReceiver
    witness: WebhookReceiver
    orgs: set[uuid.UUID] = field(default_factory=set)

    async def org(self, engine: AsyncEngine) -> Org:
        """A new organization whose streams the dispatcher wakes."""
        org = await make_org(engine)
        self.orgs.add(org.id)
        return org


@pytest.fixture(scope="module")
async def streams(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Streams]:
    # The SIEM's receiver is served by its tests, which stop it for an outage.
    siem = WebhookReceiver(secrets=[], port=free_port())
    async with running_receiver() as webhook, running_receiver() as witness:
        allowed = ",".join(f"127.0.0.1:{r.port}" for r in (webhook, siem, witness))
        task_queue = f"blocks-events-{uuid.uuid4().hex[:8]}"
        async with running_stack(
            engine=engine,
            temporal=temporal_env.client,
            database_url=postgres.url(),
            task_queue=task_queue,
            with_worker=False,
            extra_settings={"outbound_allow_private": allowed},
        ) as stack:
            worker = build_worker(
                temporal_env.client,
                engine,
                task_queue=task_queue,
                signer=parse_signing_key(SIGNING_KEY),
                workflows=EXAMPLE_WORKFLOWS,
                outbound_policy=OutboundPolicy.from_settings(stack.settings),
            )
            result = Streams(stack, webhook, siem, witness)
            # Only this module's organizations: other tests' destinations are not ours to send.
            dispatcher = EventDispatcher(
                session_factory(engine),
                temporal_env.client,
                task_queue=task_queue,
                interval_seconds=0.2,
                only_orgs=result.orgs,
            )
            worker_task = asyncio.create_task(worker.run())
            dispatch_task = asyncio.create_task(dispatcher.run_forever())
            try:
                yield result
            finally:
                dispatch_task.cancel()
                await worker.shutdown()
                await worker_task


async def _add(
    http: httpx.AsyncClient, org: Org, receiver: WebhookReceiver, **body: Any
) -> dict[str, Any]:
    """A destination at `receiver`, which from now on verifies with its secret."""
    made = await http.post(HOOKS, json={"url": receiver.url, **body}, headers=org["admin"].headers)
    assert made.status_code == 201, made.text
    receiver.secrets = [*receiver.secrets, made.json()["secret"]]
    return dict(made.json())


async def _until(
    check: Callable[[], bool], what: str, within: float = 45, every: float = 0.1
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"waited in vain for {what}"
        await asyncio.sleep(every)


def _bodies(receiver: WebhookReceiver, org: Org) -> list[tuple[Received, dict[str, Any]]]:
    """What the receiver verified for this organization, in arrival order, with parsed bodies."""
    found: list[tuple[Received, dict[str, Any]]] = []
    for received in list(receiver.received):
        body = json.loads(received.body)
        data = body["data"]
        if str(org.id) in (data.get("org_id"), (data.get("data") or {}).get("org_id")) or any(
            e.get("org_id") == str(org.id) for e in data.get("events", [])
        ):
            assert received.verified, received.headers
            found.append((received, body))
    return found


def _webhook_messages(receiver: WebhookReceiver, run_id: str) -> list[tuple[Received, Any]]:
    out = []
    for received in list(receiver.received):
        body = json.loads(received.body)
        if body["data"].get("run_id") == run_id:
            out.append((received, body))
    return out


async def test_a_webhook_is_sent_each_run_event_it_asked_for_signed_and_can_be_redelivered(
    streams: Streams, engine: AsyncEngine
) -> None:
    org = await streams.org(engine)
    async with streams.stack.http() as http:
        destination = await _add(http, org, streams.webhook, event_types=RUN_EVENTS)
        started = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        await wait_for_status(
            http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )
        decided = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "approve", "comment": "a sealed comment"},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200, decided.text

        def all_four() -> bool:
            return len(_webhook_messages(streams.webhook, run_id)) >= len(RUN_EVENTS)

        await _until(all_four, "the run's four events")
        # One message per event asked for (step.closed was not), each verified. Messages are
        # delivered independently, so they may arrive out of order: `seq` orders them.
        messages = sorted(
            _webhook_messages(streams.webhook, run_id), key=lambda m: m[1]["data"]["seq"]
        )
        assert [body["type"] for _, body in messages] == RUN_EVENTS
        assert all(received.verified for received, _ in messages)
        ids = [received.headers["webhook-id"] for received, _ in messages]
        assert len(set(ids)) == len(ids)
        # Each names its event in the chain: seq and hash as the log holds them.
        audit = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
        hashes = {e["seq"]: e["hash"] for e in audit.json()["events"]}
        assert all(body["data"]["hash"] == hashes[body["data"]["seq"]] for _, body in messages)
        # Content stays sealed inside Blocks: the comment is not in what left.
        assert not any(b"a sealed comment" in received.body for received, _ in messages)

        # The delivery log says what happened, never the body.
        log = await http.get(
            f"{HOOKS}/{destination['id']}/deliveries", headers=org["admin"].headers
        )
        assert log.status_code == 200, log.text
        deliveries = log.json()["deliveries"]
        assert sorted(d["event_type"] for d in deliveries) == sorted(RUN_EVENTS)
        assert {(d["status"], d["attempts"], d["last_status_code"]) for d in deliveries} == {
            ("delivered", 1, 200)
        }
        assert "a sealed comment" not in log.text

        # A manual redelivery sends the same message again under the same webhook-id.
        completed = next(d for d in deliveries if d["event_type"] == "run.completed")
        again = await http.post(
            f"{HOOKS}/{destination['id']}/deliveries/{completed['id']}/redeliver",
            headers=org["admin"].headers,
        )
        assert again.status_code == 202, again.text
        assert again.json()["redeliveries"] == 1
        await _until(
            lambda: (
                ids.count(completed["message_id"])
                < streams.webhook.ids().count(completed["message_id"])
            ),
            "the redelivery",
        )
        repeated = [
            r
            for r in streams.webhook.received
            if r.headers["webhook-id"] == completed["message_id"]
        ]
        assert len(repeated) == 2
        assert repeated[0].body == repeated[1].body
        assert all(r.verified for r in repeated)

        # A redelivery of another organization's message, or while one is under way: refused.
        other = await streams.org(engine)
        foreign = await http.post(
            f"{HOOKS}/{destination['id']}/deliveries/{completed['id']}/redeliver",
            headers=other["admin"].headers,
        )
        assert foreign.status_code == 404
        audit = await http.get(
            "/v1/audit-events",
            params={"action": "webhook.destination.redelivered"},
            headers=org["auditor"].headers,
        )
        assert audit.status_code == 200, audit.text
        assert len(audit.json()["events"]) == 1


def _events_received(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for batch in batches for event in batch["data"]["events"]]


async def _head_seq(engine: AsyncEngine, org: Org) -> int:
    async with session_factory(engine)() as session:
        await bind_org(session, org.id)
        row = (
            await session.exec(  # type: ignore[call-overload]
                text("SELECT seq FROM audit_chain_heads WHERE org_id = :o").bindparams(o=org.id)
            )
        ).first()
    return int(row[0]) if row else 0


def _siem_batches(siem: WebhookReceiver, org: Org) -> list[dict[str, Any]]:
    return [body for _, body in _bodies(siem, org) if body["type"] == "audit.events"]


def _received_up_to(siem: WebhookReceiver, org: Org, seq: int) -> Callable[[], bool]:
    def check() -> bool:
        events = _events_received(_siem_batches(siem, org))
        return bool(events) and events[-1]["seq"] >= seq

    return check


async def test_a_siem_stream_survives_an_outage_in_order_without_gaps_and_verifies_the_chain(
    streams: Streams, engine: AsyncEngine
) -> None:
    org = await streams.org(engine)
    siem = streams.siem
    async with streams.stack.http() as http:
        await append(engine, org, "ledger.a", "ledger.b", "ledger.c")
        async with running_receiver(again=siem):
            destination = await _add(http, org, siem, kind="siem")
            assert destination["event_types"] == ["audit.*"]
            await _until(_received_up_to(siem, org, await _head_seq(engine, org)), "the chain")

        # The SIEM is down: events keep happening and a checkpoint is signed meanwhile.
        await append(engine, org, *(f"ledger.outage-{n}" for n in range(12)))
        signed = await checkpoint(streams.stack, org)
        url = f"{HOOKS}/{destination['id']}"

        async def failing() -> bool:
            answer = await http.get(url, headers=org["admin"].headers)
            return answer.json()["failing_since"] is not None

        deadline = asyncio.get_running_loop().time() + 30
        while not await failing():
            assert asyncio.get_running_loop().time() < deadline, "the stream never failed"
            await asyncio.sleep(0.1)
        state = (await http.get(url, headers=org["admin"].headers)).json()
        assert state["enabled"] is True  # an outage holds the stream, it does not end it
        assert state["last_error"]
        # The console's integrations page shows it too, escaped, with no secret.
        page = await http.get(
            "/console/admin/integrations",
            headers=await signed_in_headers(streams.stack, org, "admin"),
        )
        assert page.status_code == 200
        assert "failing since" in page.text
        assert siem.url in page.text
        assert "whsec_" not in page.text
        await append(engine, org, "ledger.after")

        # It comes back: the stream resumes at the first event it had not taken.
        async with running_receiver(again=siem):
            last = await _head_seq(engine, org)
            await _until(_received_up_to(siem, org, last), "the events of the outage", 60)

            def with_checkpoint() -> bool:
                return any(
                    c["seq"] == signed["seq"]
                    for batch in _siem_batches(siem, org)
                    for c in batch["data"]["checkpoints"]
                )

            await _until(with_checkpoint, "the checkpoint signed during the outage")
        healthy = (await http.get(url, headers=org["admin"].headers)).json()

    assert healthy["failing_since"] is None
    assert healthy["sent_seq"] == last
    batches = _siem_batches(siem, org)
    events = _events_received(batches)
    # Every event, in chain order, none missing and none twice.
    assert [e["seq"] for e in events] == list(range(1, last + 1))
    assert all(batch["data"]["gap"] is None for batch in batches)
    # Each batch names the seqs it holds, and they follow one another.
    spans = [
        (b["data"]["first_seq"], b["data"]["last_seq"]) for b in batches if b["data"]["events"]
    ]
    assert all(later[0] == earlier[1] + 1 for earlier, later in itertools.pairwise(spans))
    # The SIEM verifies the chain from what it received: each hash recomputed from genesis...
    prev = GENESIS_HASH
    hashes: dict[int, str] = {}
    for event in events:
        payload = {k: v for k, v in event.items() if k not in ("type", "prev_hash", "hash")}
        assert event["prev_hash"] == prev
        prev = chain_hash(prev, payload)
        assert prev == event["hash"], event["seq"]
        hashes[event["seq"]] = prev
    # ... and each checkpoint it was sent is signed over a hash it holds.
    checkpoints = [c for batch in batches for c in batch["data"]["checkpoints"]]
    keys = batches[-1]["data"]["public_keys"]
    assert checkpoints
    for line in checkpoints:
        signed_checkpoint = SignedCheckpoint(**{k: v for k, v in line.items() if k != "type"})
        assert hashes[signed_checkpoint.seq] == signed_checkpoint.hash
        assert verify_signature(
            keys[signed_checkpoint.key_id], signed_checkpoint.message(), signed_checkpoint.signature
        )


async def test_a_siem_stream_replays_from_a_sequence_number(
    streams: Streams, engine: AsyncEngine
) -> None:
    org = await streams.org(engine)
    siem = streams.siem
    await append(engine, org, *(f"replay.{n}" for n in range(5)))
    async with streams.stack.http() as http, running_receiver(again=siem):
        destination = await _add(http, org, siem, kind="siem", from_seq=3)
        last = await _head_seq(engine, org)
        await _until(_received_up_to(siem, org, last), "the stream from seq 3")
        first = _events_received(_siem_batches(siem, org))
        assert [e["seq"] for e in first] == list(range(3, last + 1))

        replayed = await http.post(
            f"{HOOKS}/{destination['id']}/replay",
            json={"from_seq": 2},
            headers=org["admin"].headers,
        )
        assert replayed.status_code == 200, replayed.text
        await _until(
            lambda: len(_events_received(_siem_batches(siem, org))) > len(first), "the replay"
        )
        again = _events_received(_siem_batches(siem, org))[len(first) :]
        assert [e["seq"] for e in again][:2] == [2, 3]

        beyond = await http.post(
            f"{HOOKS}/{destination['id']}/replay",
            json={"from_seq": last + 50},
            headers=org["admin"].headers,
        )
        assert beyond.status_code == 422
        assert beyond.json()["errors"][0]["field"] == "from_seq"


async def test_a_rewrite_after_a_checkpoint_reached_the_witness_is_named(
    streams: Streams, engine: AsyncEngine, postgres: PostgresCredentials, tmp_path: Path
) -> None:
    org = await streams.org(engine)
    witness = streams.witness
    async with streams.stack.http() as http:
        await _add(http, org, witness, kind="witness")

    def witnessed() -> list[dict[str, Any]]:
        return [b["data"] for _, b in _bodies(witness, org) if b["type"] == "audit.checkpoint"]

    await append(engine, org, "invoice.a", "invoice.b", "invoice.c")
    first = await checkpoint(streams.stack, org)
    await append(engine, org, "invoice.target")
    second = await checkpoint(streams.stack, org)
    await append(engine, org, "invoice.d", "invoice.e")
    last = await checkpoint(streams.stack, org)
    await _until(lambda: len(witnessed()) >= 3, "three checkpoints at the witness")
    kept = witnessed()
    assert [c["seq"] for c in kept] == [first["seq"], second["seq"], last["seq"]]
    assert all(c["public_key"] for c in kept)
    # The witness keeps what it was sent, outside Blocks, as JSON Lines.
    witness_file = tmp_path / "witness.jsonl"
    witness_file.write_text("".join(json.dumps(c) + "\n" for c in kept))

    target = second["seq"]
    target_id = await rewrite_and_rehash(postgres, org, target)
    rewritten = await export(streams.stack, org, tmp_path / "rewritten.jsonl")
    code, output = await verify(rewritten)
    assert code == 0, output  # on its own the rewritten export holds together
    code, output = await verify(rewritten, "--against", str(witness_file))
    assert code == 1, output
    assert f"INCONSISTENT: changed at seq {target}, event id {target_id}" in output, output
