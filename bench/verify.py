"""Benchmark of the offline audit verifier: events per second through `verify_export`.

The export is generated once (not timed), then verified `repeat` times; the best run is the
figure, as the others only add what the machine was doing besides.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import Any

from blocks.core.audit.chain import GENESIS_HASH, chain_hash
from blocks.core.audit.export_format import event_line, header_line
from blocks.core.audit.verify import verify_export

ACTIONS = ("run.started", "step.requested", "step.decided", "run.completed", "access.denied")


def synthetic_export(events: int, *, org_id: str | None = None) -> list[str]:
    """A complete export of `events` chained events shaped like the ones Blocks writes.

    Hashed with `audit_chain.chain_hash` (the reference RFC 8785 path), not the verifier's.
    """
    org = org_id or str(uuid.uuid4())
    start = datetime(2026, 11, 24, tzinfo=UTC)
    run_ids = [str(uuid.uuid4()) for _ in range(max(1, events // 4))]
    actor = str(uuid.uuid4())
    lines: list[str] = []
    prev = GENESIS_HASH
    for seq in range(1, events + 1):
        action = ACTIONS[seq % len(ACTIONS)]
        payload: dict[str, Any] = {
            "id": str(uuid.UUID(int=seq, version=4)),
            "org_id": org,
            "seq": seq,
            "occurred_at": (start + timedelta(milliseconds=seq)).isoformat(timespec="microseconds"),
            "action": action,
            "actor_type": "user",
            "actor_id": actor,
            "actor_email": "approver@example.test",
            "target_type": "step",
            "target_id": "manager_approval",
            "run_id": run_ids[seq // 4 % len(run_ids)],
            "outcome": "denied" if action == "access.denied" else "success",
            "reason": None,
            "ip": "10.0.0.7",
            "user_agent": "python-httpx/0.28.1",
            "data": {"decision": "approve", "comment": "within budget", "amount": "120.50"},
        }
        stored = chain_hash(prev, payload)
        lines.append(event_line(payload, prev, stored))
        prev = stored
    header = header_line(
        org_id=org,
        exported_at=datetime.now(UTC),
        filters={},
        complete=True,
        first_seq=1 if events else None,
        last_seq=events or None,
        head=(events, prev),
        public_keys={},
    )
    return [header, *lines]


def measure(events: int, *, repeat: int = 3) -> dict[str, Any]:
    """Generate (untimed), then time `verify_export` over the lines held in memory, best of
    `repeat`."""
    began = perf_counter()
    lines = synthetic_export(events)
    generated = perf_counter() - began
    runs: list[float] = []
    for _ in range(max(1, repeat)):
        gc.collect()
        began = perf_counter()
        report = verify_export(lines)
        runs.append(perf_counter() - began)
        if not report.ok or report.events_checked != events:
            raise AssertionError(f"the synthetic chain did not verify: {report}")
    seconds = min(runs)
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds),
        "runs_seconds": [round(run, 3) for run in runs],
        # What writes the canonical JSON: orjson when it is installed, else the standard library.
        "encoder": "orjson" if importlib.util.find_spec("orjson") else "json (stdlib)",
        "generate_seconds": round(generated, 1),
        "bytes": sum(len(line) for line in lines),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="verifications; the best counts")
    args = parser.parse_args(argv)
    result = measure(args.events, repeat=args.repeat)
    print(
        f"verified {result['events']} events ({result['bytes'] / 1e6:.0f} MB) in "
        f"{result['seconds']} s, best of {result['runs_seconds']}: "
        f"{result['events_per_second']} events/s with {result['encoder']} "
        f"(generation, not timed: {result['generate_seconds']} s)"
    )


if __name__ == "__main__":
    main()
