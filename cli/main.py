"""`tracegate`: the one command line. The production processes (`migrate`, `api`, `consume`,
`rebuild-hot-set`) read only `TRACEGATE_*` environment; `dev` and `demo` are developer tools."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from service.kit.logs import configure_logging

Command = Callable[[argparse.Namespace], int]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(_log_level())
    command: Command = args.command
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracegate", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    dev = sub.add_parser("dev", help="the whole stack on this machine, from pip-installed servers")
    dev.add_argument("--state-dir", type=Path, default=None, help="keep data and stack.json here")
    dev.add_argument("--consumers", type=int, default=1, help="consumer processes (0: none)")
    dev.add_argument("--demo", action="store_true", help="also feed synthetic traffic")
    dev.set_defaults(command=_dev)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(command=_migrate)
    sub.add_parser("api", help="serve the HTTP API").set_defaults(command=_api)
    sub.add_parser("consume", help="run one settlements consumer").set_defaults(command=_consume)
    rebuild = sub.add_parser(
        "rebuild-hot-set", help="rebuild the Redis first-seen set from PostgreSQL"
    )
    rebuild.set_defaults(command=_rebuild)
    from loadtest.catalogue import BENCHMARKS, help_text

    loadtest = sub.add_parser(
        "loadtest", help="benchmarks (loadtest/): stream, gate, memory, rebuild, baselines, all",
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
        from cli.devstack.stack import run_dev_stack
    except ImportError as exc:  # the embedded servers live in the `dev` extra
        sys.stderr.write(f"tracegate dev needs the dev extra: pip install -e '.[dev]' ({exc})\n")
        return 2
    return run_dev_stack(args.state_dir, args.consumers, args.demo)


def _migrate(_: argparse.Namespace) -> int:
    from cli.migrate import upgrade_to_head
    from service.settings import Settings

    upgrade_to_head(Settings().database_url)
    return 0


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
    from service.settings import Settings

    return serve_api(Settings())


def _consume(_: argparse.Namespace) -> int:
    # A consumer serves its own registry: files of an API's multiprocess directory (if the
    # variable leaked into this environment) would be neither its own nor complete.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from consumers.runner import run_consumer
    from service.settings import Settings

    return run_consumer(Settings())


def _rebuild(_: argparse.Namespace) -> int:
    from cli.rebuild import rebuild_hot_set
    from service.settings import Settings

    return rebuild_hot_set(Settings())


def _loadtest(args: argparse.Namespace) -> int:
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
