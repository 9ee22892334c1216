"""The bare Temporal side's worker process: SDK defaults (sandboxed), one workflow, one activity."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

from temporalio.client import Client
from temporalio.worker import Worker

from bench.deployed.bare_workflow import BareApproval, one_step


async def serve(address: str, task_queue: str) -> None:
    """Poll `task_queue` until SIGTERM or SIGINT, then shut down gracefully."""
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(
        client, task_queue=task_queue, workflows=[BareApproval], activities=[one_step]
    ):
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.deployed.bare_worker")
    parser.add_argument("--address", required=True, help="Temporal frontend host:port")
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.address, args.task_queue))


if __name__ == "__main__":
    main()
