"""`python -m bench.deployed`: Blocks as users run it, beside bare Temporal and DBOS, in one run."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

from rich.console import Console

from bench.deployed.driver import measure
from bench.deployed.report import markdown, render
from bench.deployed.servers import log_tails, start_servers
from blocks.infra.embedded.supervisor import interrupt_on_stop_signals

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "deployed.json"

console = Console(width=max(Console().width, 150))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.deployed", description=__doc__)
    parser.add_argument("--runs", type=int, default=300, help="runs per engine and round")
    parser.add_argument("--concurrency", type=int, default=50, help="runs in flight under load")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of blocks, bare, dbos")
    parser.add_argument(
        "--serial-runs", type=int, default=30, help="runs per engine one at a time (0 skips)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.concurrency < 1 or args.rounds < 1 or args.serial_runs < 0:
        parser.error("--runs, --concurrency and --rounds must be positive, --serial-runs >= 0")
    return args


def _say(message: str) -> None:
    console.log(f"[bold cyan]{message}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # SIGTERM and SIGHUP unwind like Ctrl-C, so every process is stopped and the directory goes.
    interrupt_on_stop_signals()
    began = perf_counter()
    with tempfile.TemporaryDirectory(prefix="blocks-bench-deployed-") as tmp, ExitStack() as stack:
        stack.callback(_say, "stopping every process")
        try:
            # From the main thread: each child's die-with-parent signal is tied to this thread.
            servers = start_servers(Path(tmp), stack, _say)
            results = asyncio.run(measure(args, servers, _say))
        except BaseException:
            for name, tail in log_tails(Path(tmp)).items():
                console.rule(f"last lines of {name}", style="yellow")
                console.print(tail, markup=False, highlight=False)
            raise
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(perf_counter() - began, 1),
        **results,
    }
    render(results, console)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    console.print(
        f"results written to {out} (tables: {out.with_suffix('.md')}); "
        f"{results['wall_seconds']} s in all"
    )


if __name__ == "__main__":
    main()
