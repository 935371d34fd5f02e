"""What a `--state-dir` keeps between runs of `tracegate dev`, and the files that describe a
running stack to other processes.

    DIR/postgres/      the PostgreSQL cluster
    DIR/secrets.json   admin key, API-key pepper, patient-hash key (kept: stored hashes and
                       patient refs made with them stay valid)
    DIR/ports.json     the ports of the last run, tried first so clients keep working
    DIR/logs/*.log     every server and child process
    DIR/stack.json     while running: URLs, admin key, topics, pids
    DIR/stack.env      while running: the TRACEGATE_* variables to join the stack
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cli.devstack.errors import DataDirError

SECRETS_FILE = "secrets.json"
PORTS_FILE = "ports.json"
STACK_JSON = "stack.json"
STACK_ENV = "stack.env"


@dataclass(frozen=True)
class Secrets:
    admin_key: str
    api_key_pepper: str
    patient_hash_key: str


def load_secrets(state_dir: Path) -> Secrets:
    """The stack's secrets, created on the first run and reused ever after."""
    path = state_dir / SECRETS_FILE
    if path.exists():
        try:
            return Secrets(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise DataDirError(f"{path} is unreadable ({exc}); delete it to start afresh") from exc
    fresh = _new_secrets()
    write_private(path, json.dumps(asdict(fresh), indent=2) + "\n")
    return fresh


def _new_secrets() -> Secrets:
    # The service's own key format, so the bootstrap key looks like any other admin key.
    from service.auth.service import new_key

    return Secrets(
        admin_key=new_key(),
        api_key_pepper=secrets.token_urlsafe(32),
        patient_hash_key=secrets.token_urlsafe(32),
    )


def load_ports(state_dir: Path) -> dict[str, int]:
    try:
        raw = json.loads((state_dir / PORTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, int)}


def save_ports(state_dir: Path, ports: Mapping[str, int]) -> None:
    write_private(state_dir / PORTS_FILE, json.dumps(dict(ports), indent=2) + "\n")


def write_stack_files(
    state_dir: Path, description: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[Path, Path]:
    """stack.json and stack.env; private (they hold the admin key and the secrets)."""
    json_path, env_path = state_dir / STACK_JSON, state_dir / STACK_ENV
    write_private(env_path, "".join(f"{key}={value}\n" for key, value in sorted(env.items())))
    # stack.json last: readers take its appearance to mean "the stack is up".
    write_private(json_path, json.dumps(dict(description), indent=2) + "\n")
    return json_path, env_path


def remove_stack_files(state_dir: Path) -> None:
    """They describe a running stack; once it is gone they would only mislead."""
    for name in (STACK_JSON, STACK_ENV):
        (state_dir / name).unlink(missing_ok=True)


def write_private(path: Path, text: str) -> None:
    """Atomic write readable by the owner only."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
