"""How operator commands are declared: a group (`tracegate keys`) of actions, each with its
--help listing its options and the environment variables it reads, and a handler that
returns the exit code."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import TypeAlias

from cli.operator import environment
from cli.operator.environment import OperatorError

# A string: argparse's class is generic only to type checkers.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler = Callable[[argparse.Namespace], int]


def group(sub: SubParsers, name: str, help_text: str) -> SubParsers:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(required=True, metavar="ACTION")


def command(
    actions: SubParsers, name: str, help_text: str, variables: tuple[str, ...], run: Handler,
    description: str | None = None,
) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help_text, description=description or help_text,
                                epilog=environment.epilog(variables),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    environment.add_stack_env_option(parser)
    parser.set_defaults(command=_told(run))
    return parser


def _told(run: Handler) -> Handler:
    """An OperatorError is said in words on stderr (exit code 1), never as a traceback."""

    @functools.wraps(run)
    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except OperatorError as exc:
            sys.stderr.write(f"tracegate: {exc}\n")
            return 1

    return guarded
