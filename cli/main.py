"""`tracegate`: the one command line. The production processes (`migrate`, `api`, `consume`,
`rebuild-hot-set`) read only `TRACEGATE_*` environment; `dev` and `demo` are developer tools."""

from __future__ import annotations

import signal
import sys

from cli.starting import exit_while_starting

if sys.argv[1:2] == ["consume"]:
    # Set before anything else is imported: this command's imports take a second, and a stop
    # meanwhile is a clean exit (cli/starting.py).
    signal.signal(signal.SIGTERM, exit_while_starting)

import argparse  # noqa: E402 - after the handler, on purpose
import os  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from service.kit.logs import configure_logging  # noqa: E402

if TYPE_CHECKING:
    from service.settings import Settings

Command = Callable[[argparse.Namespace], int]


def main(argv: list[str] | None = None) -> int:
    if argv is not None and argv[:1] == ["consume"]:  # called, not run: as above
        signal.signal(signal.SIGTERM, exit_while_starting)
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(_log_level())
    command: Command = args.command
    from service.settings import InsecureSecretError

    try:
        return command(args)
    except InsecureSecretError as exc:  # a deployment's process, refusing dev secrets
        sys.stderr.write(f"tracegate: {exc}\n")
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracegate", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    dev = sub.add_parser("dev", help="the whole stack on this machine, from pip-installed servers")
    dev.add_argument("--state-dir", type=Path, default=None, help="keep data and stack.json here")
    dev.add_argument("--consumers", type=int, default=1, help="consumer processes (0: none)")
    dev.add_argument("--demo", action="store_true", help="also feed synthetic traffic")
    dev.add_argument("--redis-cluster", type=int, default=0, metavar="N",
                     help="a Redis Cluster of N primaries (at least 3) instead of one Redis")
    dev.add_argument("--partitions", type=int, default=None, metavar="N",
                     help="partitions of every topic (default: TRACEGATE_SETTLEMENTS_PARTITIONS "
                     "for settlements, 1 for flags and the DLQ)")
    dev.set_defaults(command=_dev)
    sub.add_parser(
        "migrate", help="apply database migrations and create the code_events months ahead"
    ).set_defaults(command=_migrate)
    sub.add_parser("api", help="serve the HTTP API").set_defaults(command=_api)
    consume = sub.add_parser("consume", help="run one settlements consumer")
    consume.add_argument(
        "--check", action="store_true",
        help="health probe: exit 0 if the heartbeat file (TRACEGATE_CONSUMER_HEARTBEAT_FILE) "
        "is fresher than TRACEGATE_CONSUMER_HEARTBEAT_MAX_AGE_S",
    )
    consume.set_defaults(command=_consume)
    rebuild = sub.add_parser(
        "rebuild-hot-set", help="rebuild the Redis first-seen set from PostgreSQL"
    )
    rebuild.set_defaults(command=_rebuild)
    from loadtest.catalogue import BENCHMARKS, help_text

    loadtest = sub.add_parser(
        "loadtest", help="benchmarks (loadtest/): stream, gate, memory, rebuild, baselines, all, "
        "cluster; scale-model writes SCALE.md's tables",
        usage=f"tracegate loadtest {{{','.join(BENCHMARKS)}}} [--quick]",
        epilog=help_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    loadtest.add_argument("args", nargs=argparse.REMAINDER, metavar="BENCHMARK [--quick]",
                          help="the benchmark to run, and --quick for small sizes")
    loadtest.set_defaults(command=_loadtest)
    catalogue = sub.add_parser("catalogue", help="the drug catalogue: catalogue import FILE.csv")
    catalogue.add_argument("action", choices=["import"])
    catalogue.add_argument("file", type=Path, help="CSV with med_list_codg,name,pack_size")
    catalogue.add_argument("--encoding", default="utf-8-sig", help="e.g. gbk")
    catalogue.set_defaults(command=_catalogue)
    imports = sub.add_parser("import", help="bulk uploads: import nhsa FILE (JSON lines)")
    imports.add_argument("kind", choices=["nhsa"])
    imports.add_argument("file", type=Path, help="3505/3505A messages, one JSON per line")
    imports.add_argument("--state-dir", type=Path, default=None,
                         help="where the checkpoint goes (default: beside the file)")
    imports.add_argument("--restart", action="store_true",
                         help="ignore the checkpoint and send the whole file again")
    imports.add_argument("--ordered", action="store_true",
                         help="one partition: the consumers decide the file in its order")
    imports.add_argument("--workers", type=int, default=None,
                         help="processes mapping the file (default: one per core; 0: none)")
    imports.set_defaults(command=_import)
    demo = sub.add_parser("demo", help="feed synthetic traffic into a running stack")
    demo.add_argument("--stack", type=Path, required=True, help="path of stack.json")
    demo.add_argument("--rate", type=float, default=200.0, help="settlements per second")
    demo.set_defaults(command=_demo)
    from cli.operator import register as operator_commands

    operator_commands(sub)
    return parser


def _dev(args: argparse.Namespace) -> int:
    try:
        from cli.devstack.stack import StackShape, run_dev_stack
    except ImportError as exc:  # the embedded servers live in the `dev` extra
        sys.stderr.write(f"tracegate dev needs the dev extra: pip install -e '.[dev]' ({exc})\n")
        return 2
    if args.redis_cluster and args.redis_cluster < 3:
        sys.stderr.write("tracegate dev: --redis-cluster needs at least 3 primaries\n")
        return 2
    if args.partitions is not None and args.partitions < 1:
        sys.stderr.write("tracegate dev: --partitions must be at least 1\n")
        return 2
    shape = StackShape(args.consumers, args.redis_cluster, args.partitions)
    return run_dev_stack(args.state_dir, shape, args.demo)


def _migrate(_: argparse.Namespace) -> int:
    from cli.migrate import upgrade_to_head
    from cli.operator.partitions import ensure_and_say
    from service.settings import Settings

    settings = Settings()
    upgrade_to_head(settings.database_url)
    # Every run, not only the one that applied 0019: the months move on between deploys.
    return ensure_and_say(settings)


def _log_level() -> str:
    """TRACEGATE_LOG_LEVEL as the settings read it; a bad environment is the command's own
    error to report (with every field named), so logging starts at INFO meanwhile."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings().log_level
    except ValidationError:
        return "INFO"


def _api(_: argparse.Namespace) -> int:
    from cli.api_server import serve_api
    from service.settings import API_SECRETS, Settings

    settings = Settings()
    settings.require_secrets(API_SECRETS)  # here once, not in every worker's traceback
    return serve_api(settings)


def _consume(args: argparse.Namespace) -> int:
    # A consumer serves its own registry: files of an API's multiprocess directory (if the
    # variable leaked into this environment) would be neither its own nor complete.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from consumers.runner import run_consumer
    from service.settings import CONSUMER_SECRETS, Settings

    settings = Settings()
    if args.check:
        return _check_consumer(settings)
    settings.require_secrets(CONSUMER_SECRETS)
    return run_consumer(settings)


def _check_consumer(settings: Settings) -> int:
    from service.kit.heartbeat import heartbeat_age_s

    path = settings.consumer_heartbeat_file
    if path is None:
        sys.stderr.write("TRACEGATE_CONSUMER_HEARTBEAT_FILE is not set: nothing to check\n")
        return 2
    age, limit = heartbeat_age_s(path), settings.consumer_heartbeat_max_age_s
    if age is None or age > limit:
        said = "no heartbeat yet" if age is None else f"last heartbeat {age:.0f} s ago"
        sys.stderr.write(f"consumer unhealthy: {said} in {path} (limit {limit:.0f} s)\n")
        return 1
    sys.stdout.write(f"consumer healthy: last heartbeat {age:.1f} s ago\n")
    return 0


def _rebuild(_: argparse.Namespace) -> int:
    from cli.rebuild import rebuild_hot_set
    from service.settings import Settings

    return rebuild_hot_set(Settings())


def _loadtest(args: argparse.Namespace) -> int:
    # The harness's own Kafka clients log every join at INFO, and Alembic its plugins as it is
    # imported, between the progress bars; the processes it measures already run at WARNING
    # (loadtest/stack.py). Set the variable to see them.
    if "TRACEGATE_LOG_LEVEL" not in os.environ:
        configure_logging("WARNING")
    from loadtest.cli import main as loadtest_main

    return loadtest_main(args.args)


def _catalogue(args: argparse.Namespace) -> int:
    from cli.catalogue import import_catalogue
    from service.settings import Settings

    return import_catalogue(args.file, Settings(), args.encoding)


def _import(args: argparse.Namespace) -> int:
    from cli.nhsa_import import ImportOptions, import_nhsa
    from service.settings import Settings

    options = ImportOptions(restart=args.restart, ordered=args.ordered)
    if args.workers is not None:
        options = replace(options, workers=max(args.workers, 0))
    return import_nhsa(args.file, Settings(), args.state_dir, options)


def _demo(args: argparse.Namespace) -> int:
    from cli.demo import run_demo

    return run_demo(args.stack, args.rate)


if __name__ == "__main__":
    raise SystemExit(main())
