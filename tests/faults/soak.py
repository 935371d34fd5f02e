"""The fault scenarios at the issue's full figures, outside pytest:

    python -m tests.faults.soak                    # long form: all three scenarios
    python -m tests.faults.soak --short crash      # the suite's short form of one scenario

Starts its own servers (or uses TRACEGATE_TEST_* ones, like the suite), runs the scenarios one
after another, prints each one's figures and writes them all as JSON (--json). Exit code 1 if
any promise was broken (the servers' data and the consumers' logs are then kept; always with
--workdir). `TRACEGATE_SOAK=1 pytest tests/faults` runs the same long form as tests."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cli.migrate import upgrade_to_head
from service.settings import Settings
from tests.faults.crash import crash
from tests.faults.outages import outages
from tests.faults.redis_loss import redis_loss
from tests.faults.scale import LONG, SHORT, Scale
from tests.faults.scaleout import scale_out
from tests.faults.scenario import ScenarioReport, timed
from tests.harness import start_test_servers

Scenario = Callable[[Settings, Path, Scale], Awaitable[ScenarioReport]]
SCENARIOS: dict[str, Scenario] = {"crash": crash, "redis-loss": redis_loss, "outages": outages,
                                   "scale-out": scale_out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--short", action="store_true", help="the suite's short form")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep servers' data and processes' logs here")
    args = parser.parse_args(argv)
    if unknown := set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    # The faults make the clients complain by design; the figures below say what happened.
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    scale = SHORT if args.short else LONG
    names = args.scenarios or list(SCENARIOS)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tracegate-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    reports = asyncio.run(_run(names, scale, workdir))
    wall = time.monotonic() - begin
    figures = {"scale": scale.name, "wall_s": round(wall, 1), "workdir": str(workdir),
               "scenarios": [report.to_json() for report in reports]}
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    broken = any(report.problems() for report in reports)
    _say(_summary(reports, wall, workdir if broken or args.workdir else None))
    if not broken and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if broken else 0


async def _run(names: list[str], scale: Scale, workdir: Path) -> list[ScenarioReport]:
    servers = await asyncio.to_thread(start_test_servers, workdir / "servers")
    try:
        base = Settings(
            database_url=servers.database_url, redis_url=servers.redis_url,
            redis_cluster=servers.redis_cluster, kafka_bootstrap=servers.kafka_bootstrap,
            bootstrap_admin_key="tg_soak_admin_" + secrets.token_hex(8),
        )
        await asyncio.to_thread(upgrade_to_head, base.database_url)
        reports = []
        for name in names:
            _say(f"{name} ({scale.name}) …")
            scenario_dir = workdir / name
            scenario_dir.mkdir(exist_ok=True)
            reports.append(await timed(SCENARIOS[name](base, scenario_dir, scale)))
            _say(_describe(reports[-1]))
        return reports
    finally:
        await asyncio.to_thread(servers.stop)


def _describe(report: ScenarioReport) -> str:
    record = report.record.figures() if report.record else {}
    lines = [
        f"== {report.scenario} ({report.scale}): {report.wall_s:.1f} s, "
        f"{len(report.faults)} faults injected",
        "   workload: " + ", ".join(f"{k} {v}" for k, v in report.workload.items()),
        f"   producer resends (chunks): {report.feed_resends}",
        "   record: " + ", ".join(f"{k} {v}" for k, v in record.items()),
        *[f"   fault: {fault}" for fault in report.faults],
        *[f"   seen: {seen}" for seen in report.observations],
        *[f"   BROKEN {problem}" for problem in report.problems()],
    ]
    return "\n".join(lines)


def _summary(reports: list[ScenarioReport], wall: float, workdir: Path | None) -> str:
    kept = f" (logs in {workdir})" if workdir is not None else ""
    lines = [f"soak: {len(reports)} scenarios in {wall:.1f} s{kept}"]
    for report in reports:
        record = report.record
        if record is None:
            lines.append(f"  {report.scenario}: no record audited, BROKEN")
            continue
        lines.append(
            f"  {report.scenario}: faults {len(report.faults)}, events "
            f"{report.workload.get('events')}, codes {report.workload.get('codes')}, "
            f"records lost {record.settlements_missing + record.payments_lost} "
            f"(claims lost {record.claims_lost}), payments doubled {record.payments_doubled}, "
            f"flags {record.flags_missed} missed / {record.flags_doubled} doubled / "
            f"{record.flags_false} false, topic doubles {record.topic_flag_doubles}, "
            f"{'OK' if not report.problems() else 'BROKEN'}")
    return "\n".join(lines)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
