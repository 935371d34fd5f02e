"""`tracegate loadtest BENCHMARK`: what each benchmark measures is in loadtest/catalogue.py
(and `tracegate loadtest --help`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from loadtest import report
from loadtest.catalogue import BENCHMARKS, help_text
from loadtest.stack import Stack, open_stack
from loadtest.suite import RESULTS, Plan, run_all, run_cluster
from loadtest.workload import Workload, generate

README = RESULTS.parent.parent / "README.md"


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full()
    if args.command == "nhsa-import":
        return _nhsa_import(args.quick)
    if args.command == "cluster":
        results = run_cluster(plan, args.quick, args.redis_primaries)
        json_path, md_path = report.write_cluster(results, RESULTS)
        sys.stdout.write(md_path.read_text() + f"\nwrote {json_path} and {md_path}\n")
        return 0 if results["stream"]["correct"] and results["gate"]["correct"] else 1
    if args.command == "scale-model":
        from loadtest.scale_model import write_scale_md

        sys.stdout.write(f"wrote the tables of {write_scale_md()}\n")
        return 0
    if args.command == "all":
        results = run_all(plan, args.quick)
        json_path, md_path = report.write(results, RESULTS)
        sys.stdout.write(md_path.read_text() + f"\nwrote {json_path} and {md_path}\n")
        if report.show_in_readme(results, README):
            sys.stdout.write(f"and the tables in {README}\n")
        return 0 if report.correct(results) else 1
    result = _single(args.command, plan)
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    if args.command == "baselines":
        sys.stdout.write("\n" + report.baselines_markdown(result["baselines"]))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracegate loadtest", epilog=help_text(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=list(BENCHMARKS), help="the benchmark (see below)")
    parser.add_argument("--quick", action="store_true", help="small sizes (< 3 minutes)")
    parser.add_argument("--redis-primaries", type=int, default=3,
                        help="cluster: Redis Cluster primaries (at least 3)")
    return parser


def _nhsa_import(quick: bool) -> int:
    """Its own servers and workload (a platform export), so not part of `all`."""
    from loadtest.nhsa_import import run_nhsa_import
    from service.kit.garbage_collection import tune_for_throughput

    tune_for_throughput()  # as the import command's process runs
    command = f"tracegate loadtest nhsa-import{' --quick' if quick else ''}"
    result = {"command": command, "cpus": os.cpu_count(), "target_codes_per_s": 50_000,
              **(run_nhsa_import(100_000, 1) if quick else run_nhsa_import(1_000_000, 3))}
    path = RESULTS / "nhsa-import.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=2) + f"\nwrote {path}\n")
    return 0 if result["correct"] else 1


def _single(command: str, plan: Plan) -> dict[str, Any]:
    from loadtest import suite
    from service.kit.garbage_collection import tune_for_throughput

    workload = generate(plan.settlements, seed=plan.seed)
    tune_for_throughput()
    runs: dict[str, Callable[[Stack, Workload], Any]] = {
        "stream": lambda s, w: suite.stream_section(s, w, plan),
        "gate": lambda s, w: suite.gate_section(s, w, plan),
        "memory": lambda s, w: suite.memory_section(s, plan),
        "rebuild": lambda s, w: suite.rebuild_section(s, w, plan),
        "baselines": lambda s, w: suite.baselines_section(s, w, plan),
    }
    stack = open_stack(workload.institutions)
    try:
        return {command: runs[command](stack, workload)}
    finally:
        stack.close()
