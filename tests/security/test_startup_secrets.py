"""Outside TRACEGATE_ENV=dev a process refuses to start on a missing, default or short secret,
and says which variable: the API needs the pepper, the patient-hash key and the admin
bootstrap key; a consumer the patient-hash key only; the migration none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from service.settings import (
    API_SECRETS,
    CONSUMER_SECRETS,
    Environment,
    InsecureSecretError,
    Settings,
)

ROOT = Path(__file__).resolve().parents[2]
STRONG = "s3cret-" + "x" * 40


def _production(**secrets: str) -> Settings:
    values: dict[str, Any] = {k: SecretStr(v) for k, v in secrets.items()}
    return Settings(env=Environment.PRODUCTION, **values)


def test_api_refuses_defaults_and_names_every_variable() -> None:
    with pytest.raises(InsecureSecretError) as refused:
        _production().require_secrets(API_SECRETS)
    message = str(refused.value)
    assert "TRACEGATE_API_KEY_PEPPER is the development default" in message
    assert "TRACEGATE_PATIENT_HASH_KEY is the development default" in message
    assert "TRACEGATE_BOOTSTRAP_ADMIN_KEY is not set" in message


def test_a_short_secret_is_refused() -> None:
    settings = _production(api_key_pepper="short", patient_hash_key=STRONG,
                           bootstrap_admin_key=STRONG)
    with pytest.raises(InsecureSecretError, match="TRACEGATE_API_KEY_PEPPER is shorter"):
        settings.require_secrets(API_SECRETS)


def test_strong_secrets_pass() -> None:
    _production(api_key_pepper=STRONG, patient_hash_key=STRONG + "2",
                bootstrap_admin_key=STRONG + "3").require_secrets(API_SECRETS)


def test_a_consumer_needs_only_the_patient_hash_key() -> None:
    _production(patient_hash_key=STRONG).require_secrets(CONSUMER_SECRETS)
    with pytest.raises(InsecureSecretError) as refused:
        _production().require_secrets(CONSUMER_SECRETS)
    assert "TRACEGATE_PATIENT_HASH_KEY" in str(refused.value)
    assert "PEPPER" not in str(refused.value)


def test_dev_runs_on_the_defaults() -> None:
    Settings(env=Environment.DEV).require_secrets(API_SECRETS)


def test_unset_env_means_production() -> None:
    environ = {k: v for k, v in os.environ.items() if k != "TRACEGATE_ENV"}
    code = "from service.settings import Settings; print(Settings().env.value)"
    out = subprocess.run([sys.executable, "-c", code], env=environ, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "production"


@pytest.mark.parametrize(("command", "named"), [
    ("api", "TRACEGATE_BOOTSTRAP_ADMIN_KEY"), ("consume", "TRACEGATE_PATIENT_HASH_KEY"),
])
def test_the_process_exits_before_connecting(command: str, named: str) -> None:
    """The real command, pointed at servers that do not exist: it must stop at the secrets
    check (exit 2, the variable named), not try to connect."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRACEGATE_")}
    environ |= {"TRACEGATE_ENV": "production", "TRACEGATE_DATABASE_URL":
                "postgresql+asyncpg://nobody:none@127.0.0.1:1/none",
                "TRACEGATE_REDIS_URL": "redis://127.0.0.1:1/0",
                "TRACEGATE_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    result = subprocess.run([sys.executable, "-m", "cli.main", command], env=environ, cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
