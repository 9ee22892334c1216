"""`python -m bench.codec`: what sealing a payload costs, side by side in one run.

Each payload goes through Temporal's data converter both ways (to payloads and back, as the client
and the worker do): the pydantic JSON converter alone (what bare Temporal does), with the payload
keys (one AES-256-GCM key for every payload, as Blocks did before organization keys), and with an
organization's key (the codec as built, its key source answering from memory as a warm process's
cache does, so the figure is the codec's own cost, not a database round trip). Payload sizes: a
run's small input (~200 B), a decision (~1 KB), a large result (~64 KB). Reported as microseconds
per payload (median of rounds) and as ratios to the converter alone.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import uuid
from collections.abc import Sequence
from statistics import median
from time import perf_counter
from typing import Any

from temporalio.converter import DataConverter, WorkflowSerializationContext

from blocks.infra.crypto.key_specs import new_payload_key_spec, parse_payload_keys
from blocks.infra.crypto.org_keys import OrgDataKey
from blocks.infra.temporal.client import PLAIN_DATA_CONVERTER, encrypting_data_converter
from blocks.infra.temporal.payload_codec import EncryptionCodec

SIZES = {"input_200B": 200, "decision_1KB": 1_000, "result_64KB": 64_000}


class _WarmKeys:
    """A key source answering from memory: one organization, its one key, every run known."""

    def __init__(self) -> None:
        self.org_id = uuid.uuid4()
        self._key = OrgDataKey(uuid.uuid4(), self.org_id, os.urandom(32))

    async def run_org(self, workflow_id: str) -> uuid.UUID | None:
        return self.org_id

    async def active_key(self, org_id: uuid.UUID) -> OrgDataKey:
        return self._key

    async def key(self, org_id: uuid.UUID, key_id: uuid.UUID) -> OrgDataKey:
        return self._key


def _value(size: int) -> dict[str, Any]:
    text = "x" * max(size - 60, 1)
    return {"run_id": str(uuid.uuid4()), "note": text, "amount": 120.5}


def converters() -> dict[str, DataConverter]:
    spec = new_payload_key_spec("bench")
    by_org = dataclasses.replace(
        encrypting_data_converter(spec),
        payload_codec=EncryptionCodec(*parse_payload_keys(spec), org_keys=_WarmKeys()),
    )
    context = WorkflowSerializationContext(namespace="default", workflow_id="run-bench")
    return {
        "converter alone (bare Temporal)": PLAIN_DATA_CONVERTER,
        "payload keys (one key)": encrypting_data_converter(spec),
        "organization key (as built)": by_org.with_context(context),
    }


async def _round(converter: DataConverter, value: dict[str, Any], n: int) -> float:
    started = perf_counter()
    for _ in range(n):
        payloads = await converter.encode([value])
        await converter.decode(payloads, [dict])
    return (perf_counter() - started) / n * 1e6


async def measure(rounds: int, n: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    chosen = converters()
    for size_name, size in SIZES.items():
        value = _value(size)
        samples: dict[str, list[float]] = {name: [] for name in chosen}
        for _ in range(rounds):
            for name, converter in chosen.items():  # alternating, in the same sitting
                samples[name].append(await _round(converter, value, n))
        results[size_name] = {name: median(values) for name, values in samples.items()}
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("-n", type=int, default=2_000, help="payloads per round and converter")
    args = parser.parse_args(argv)
    results = asyncio.run(measure(args.rounds, args.n))
    for size_name, by_name in results.items():
        base = by_name["converter alone (bare Temporal)"]
        print(f"{size_name}:")
        for name, micros in by_name.items():
            print(f"  {name:34s} {micros:8.1f} µs encode+decode  {micros / base:5.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
