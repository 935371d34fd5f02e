"""`tracegate loadtest {stream,gate,memory,rebuild,baselines,all}`: see loadtest/README in the
results (latest.md) for what each measures."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from loadtest import report
from loadtest.stack import Stack, open_stack
from loadtest.suite import RESULTS, Plan, run_all
from loadtest.workload import Workload, generate

README = RESULTS.parent.parent / "README.md"


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full()
    if args.command == "all":
        results = run_all(plan, args.quick)
        json_path, md_path = report.write(results, RESULTS)
        sys.stdout.write(md_path.read_text() + f"\nwrote {json_path} and {md_path}\n")
        if report.show_in_readme(results, README):
            sys.stdout.write(f"and the tables in {README}\n")
        return 0 if report.correct(results) else 1
    sys.stdout.write(json.dumps(_single(args.command, plan), indent=2, default=str) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracegate loadtest")
    parser.add_argument("command", choices=["stream", "gate", "memory", "rebuild", "baselines",
                                            "all"])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 3 minutes)")
    return parser


def _single(command: str, plan: Plan) -> dict[str, Any]:
    from loadtest import suite
    from loadtest.gate import RATES, run_gate
    from service.kit.garbage_collection import tune_for_throughput

    workload = generate(plan.settlements, seed=plan.seed)
    tune_for_throughput()
    runs: dict[str, Callable[[Stack, Workload], Any]] = {
        "stream": lambda s, w: suite.stream_section(s, w, plan),
        "gate": lambda s, w: run_gate(s, w.institutions, RATES, plan.gate_seconds, "gate"),
        "memory": lambda s, w: suite.store_sections(s, w, plan)["memory"],
        "rebuild": lambda s, w: suite.rebuild_section(s, w, plan),
        "baselines": lambda s, w: suite.baselines(s, w, plan),
    }
    stack = open_stack(workload.institutions)
    try:
        return {command: runs[command](stack, workload)}
    finally:
        stack.close()
