"""What an operator command reads: `TRACEGATE_*` variables, each falling back to a stack.env
(the file `tracegate dev` writes; TRACEGATE_STACK_ENV or `--stack-env` names it, else
./stack.env when there is one). The environment wins over the file."""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.settings import Settings


class OperatorError(Exception):
    """A failure to tell the operator in words (exit code 1), never a traceback."""


# Every variable an operator command may read, as its --help lists them.
VARIABLES = {
    "TRACEGATE_API_URL": "the API's base URL (default http://127.0.0.1:8000)",
    "TRACEGATE_API_KEY": "the API key the command calls with (its role must allow the call)",
    "TRACEGATE_DATABASE_URL": "PostgreSQL, for the commands that work on the database directly",
    "TRACEGATE_REDIS_URL": "Redis, told when institutions change (the gates keep them in memory)",
    "TRACEGATE_REDIS_CLUSTER": "true when TRACEGATE_REDIS_URL is a node of a Redis Cluster",
    "TRACEGATE_PARTITION_MONTHS_AHEAD": "months past this one that code_events partitions "
                                        "reach (default 3)",
    "TRACEGATE_KAFKA_BOOTSTRAP": "Kafka's bootstrap servers, for the DLQ commands",
    "TRACEGATE_TOPIC_DLQ": "the dead-letter topic (default tracegate.settlements.dlq)",
    "TRACEGATE_TOPIC_SETTLEMENTS": "the settlements topic replays go to "
                                   "(default tracegate.settlements)",
    "TRACEGATE_CONSUMER_GROUP": "the consumers' group; DLQ replay keeps its checkpoint in the "
                                "group <this>-dlq-replay",
    "TRACEGATE_STACK_ENV": "a stack.env to read the variables above from when unset "
                           "(default ./stack.env if present; --stack-env overrides)",
    "TRACEGATE_LOG_LEVEL": "log level of the command's own JSON log lines on stderr",
}
API_VARIABLES = ("TRACEGATE_API_URL", "TRACEGATE_API_KEY")
DATABASE_VARIABLES = ("TRACEGATE_DATABASE_URL",)
IMPORT_VARIABLES = ("TRACEGATE_DATABASE_URL", "TRACEGATE_REDIS_URL", "TRACEGATE_REDIS_CLUSTER")
KAFKA_VARIABLES = ("TRACEGATE_KAFKA_BOOTSTRAP", "TRACEGATE_TOPIC_DLQ",
                   "TRACEGATE_TOPIC_SETTLEMENTS", "TRACEGATE_CONSUMER_GROUP")


class ApiAccess(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACEGATE_", extra="ignore")

    api_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None


def epilog(names: tuple[str, ...]) -> str:
    """The 'environment' section of a command's --help."""
    shown = (*names, "TRACEGATE_STACK_ENV", "TRACEGATE_LOG_LEVEL")
    width = max(len(name) for name in shown) + 4
    lines = [textwrap.fill(VARIABLES[name], 96, initial_indent=f"  {name:<{width - 2}}",
                           subsequent_indent=" " * width) for name in shown]
    return "environment:\n" + "\n".join(lines)


def add_stack_env_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack-env", type=Path, default=None, metavar="FILE",
                        help="read unset TRACEGATE_* variables from this stack.env")


def stack_env(args: argparse.Namespace) -> Path | None:
    named = args.stack_env or os.environ.get("TRACEGATE_STACK_ENV")
    if named is not None:
        path = Path(named)
        if not path.is_file():
            raise OperatorError(f"stack env file {path} does not exist")
        return path
    default = Path("stack.env")
    return default if default.is_file() else None


def settings(args: argparse.Namespace) -> Settings:
    try:
        return Settings(_env_file=stack_env(args))
    except ValidationError as exc:
        raise OperatorError(f"invalid TRACEGATE_* environment: {exc}") from exc


def api_access(args: argparse.Namespace) -> ApiAccess:
    access = ApiAccess(_env_file=stack_env(args))
    if access.api_key is None:
        raise OperatorError("no API key: set TRACEGATE_API_KEY (or name a stack.env)")
    return access
