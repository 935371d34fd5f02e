"""The one typed settings object. Every process is configured only through `TRACEGATE_*`
environment variables (or a `.env`-style file named by `TRACEGATE_ENV_FILE`); `tracegate dev` is
just one way of filling them in."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class InstitutionKind(StrEnum):
    """定点医药机构 kinds, as in CONTRACT §2."""

    RETAIL_PHARMACY = "retail_pharmacy"
    PRIMARY = "primary"
    SECONDARY = "secondary"
    TERTIARY = "tertiary"


class DuplicatePolicy(StrEnum):
    REJECT = "reject"
    FLAG = "flag"


class Environment(StrEnum):
    """`TRACEGATE_ENV`: anything but `dev` is a deployment, whose processes refuse to start on
    development secrets (settings.require_secrets)."""

    DEV = "dev"
    PRODUCTION = "production"


class Secret(StrEnum):
    """The secrets a process may need, named as their settings."""

    API_KEY_PEPPER = "api_key_pepper"
    PATIENT_HASH_KEY = "patient_hash_key"
    BOOTSTRAP_ADMIN_KEY = "bootstrap_admin_key"


# What each process reads: the API verifies and mints keys (pepper), hashes the gate's
# patient ids and makes sure an admin key exists; a consumer hashes the stream's patient ids
# only. migrate, rebuild-hot-set and partitions need none, so their environment need not
# hold any (a consumer's container is not given the pepper or the admin key).
API_SECRETS = (Secret.API_KEY_PEPPER, Secret.PATIENT_HASH_KEY, Secret.BOOTSTRAP_ADMIN_KEY)
CONSUMER_SECRETS = (Secret.PATIENT_HASH_KEY,)
# Shorter values are guessable (a pepper or hash key is an HMAC key; an admin key a password).
MIN_SECRET_CHARS = 32
_DEV_PEPPER = "dev-only-api-key-pepper-change-me"
_DEV_PATIENT_HASH_KEY = "dev-only-patient-hash-key-change-me"


class InsecureSecretError(ValueError):
    """A deployment (TRACEGATE_ENV not `dev`) given a missing, default or short secret."""


DEFAULT_GO_LIVE: dict[InstitutionKind, dt.date] = {
    InstitutionKind.RETAIL_PHARMACY: dt.date(2025, 4, 1),
    InstitutionKind.PRIMARY: dt.date(2025, 5, 1),
    InstitutionKind.SECONDARY: dt.date(2025, 6, 1),
    # Not in the source notice; the contract makes it configurable.
    InstitutionKind.TERTIARY: dt.date(2025, 6, 1),
}


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    BeforeValidator(lambda value: value.upper() if isinstance(value, str) else value),
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRACEGATE_", env_nested_delimiter="__", extra="ignore"
    )

    # --- servers -------------------------------------------------------------------------------
    database_url: str = "postgresql+asyncpg://tracegate:tracegate@127.0.0.1:5432/tracegate"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    kafka_bootstrap: str = "127.0.0.1:9092"

    # --- Kafka ---------------------------------------------------------------------------------
    topic_settlements: str = "tracegate.settlements"
    topic_flags: str = "tracegate.flags"
    topic_dlq: str = "tracegate.settlements.dlq"
    settlements_partitions: int = Field(default=6, ge=1)
    consumer_group: str = "tracegate-consumers"
    # A batch is what one poll returns, up to this many events: decided, recorded in one
    # transaction and committed as one unit. Under a backlog batches fill to it; when the
    # consumer keeps up they are what arrived since the last poll (small, so flags are quick).
    consumer_max_batch: int = Field(default=5000, ge=1)
    # Static group membership (Kafka's group.instance.id, e.g. a pod's stable name): on Apache
    # Kafka a consumer restarted under the same name takes its partitions back at once instead
    # of waiting out the dead member's session. Empty = a dynamic member, as `tracegate dev`
    # runs them: Tansu pauses every static member's join and sync 3 s each (measured 6.0-6.7 s
    # a restart, against 2.3-3.4 s for a dynamic one; README, "Consumer restarts").
    consumer_instance_id: str = ""
    # How long a consumer that stops heartbeating keeps its partitions (a static member that
    # is not restarted, a dynamic one killed): Kafka's minimum is 6 s by default.
    consumer_session_timeout_ms: int = Field(default=6000, ge=1000)
    # When set, /readyz also asks that this many consumers each hold partitions of the
    # settlements topic and that every partition has one (`tracegate dev`, whose users settle
    # and expect the flag within a second). An API in production serves the gate whether or
    # not consumers are up: 0, not asked, by default.
    ready_consumers: int = Field(default=0, ge=0)
    consumer_fetch_max_wait_ms: int = Field(default=20, ge=1, le=500)
    # Finished batches' offsets are committed at most this often (and whenever the consumer
    # has caught up, on a rebalance, on stopping); 0 commits after every batch. A crash
    # redelivers what finished since the last commit, which the record already holds (healed,
    # not decided again). At 20,000 codes/s two consumers finished ~100 small batches a second.
    consumer_commit_interval_ms: int = Field(default=1000, ge=0)
    # Each consumer process serves its own Prometheus /metrics here; port 0 picks a free port
    # (logged at start, and listed in a dev stack's stack.json).
    consumer_metrics_host: str = "127.0.0.1"
    consumer_metrics_port: int = Field(default=0, ge=0, le=65535)
    # How often a consumer samples the size of the first-seen set for tracegate_hot_set_codes
    # (one script call per slot group, bounded by the layout: not per batch).
    hot_set_sample_s: float = Field(default=30.0, gt=0)
    # A consumer touches this file each time its loop polls Kafka (at most once a second);
    # `tracegate consume --check` (a container's healthcheck) fails when it is older than
    # consumer_heartbeat_max_age_s. Unset: no file. A consumer waiting out an outage or a
    # rebuild of the first-seen set stops beating: it is alive but not recording.
    consumer_heartbeat_file: Path | None = None
    consumer_heartbeat_max_age_s: float = Field(default=60.0, gt=0)

    # --- HTTP API ------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    # Processes serving the API on that port (one core each; the gate is CPU-bound in Python).
    api_workers: int = Field(default=1, ge=1, le=64)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # PostgreSQL connections one API process keeps through SQLAlchemy (a quarter more
    # overflow under load). A gate call needs one only past its settlement lookup (an
    # institution not cached, a re-used code's first payment) and holds it until Kafka
    # acknowledges; verify, history and flags use one per request.
    api_database_pool: int = Field(default=32, ge=1)
    # Connections of the lookup pool (asyncpg directly) the gate asks on every call. A lookup
    # holds one for a single indexed read, so a few serve thousands of calls a second; calls
    # beyond wait their turn rather than open connections the server may not have (two
    # workers at 40 each met "too many clients" under overload).
    api_lookup_pool: int = Field(default=8, ge=1)
    # Clients (POS, HIS) keep their connections; closing idle ones after uvicorn's default
    # 5 s made a client's next request meet a closed socket.
    api_keep_alive_s: int = Field(default=75, ge=1)
    # How long the gate waits for Kafka to acknowledge a settlement before answering 503.
    gate_publish_timeout_s: float = Field(default=3.0, gt=0)
    # How long the gate's producer gathers concurrent settlements into one produce request
    # (each answer still waits for its own acknowledgement).
    gate_linger_ms: int = Field(default=1, ge=0, le=50)
    # Calls one API process works on at once; past it the hot routes answer 503 OVERLOADED
    # at once (a POS can retry that; it cannot use an answer that came after its timeout).
    api_max_in_flight: int = Field(default=256, ge=1)
    # ... or past fewer, as many as keep its calls under this on average (0: the count alone).
    api_shed_above_ms: int = Field(default=50, ge=0)

    # --- policy (CONTRACT §2) ------------------------------------------------------------------
    go_live: dict[InstitutionKind, dt.date] = Field(default_factory=lambda: dict(DEFAULT_GO_LIVE))
    # Per-institution go-live set by configuration; an override stored on the institution
    # record (PUT /v1/institutions) wins over this one.
    go_live_overrides: dict[str, dt.date] = Field(default_factory=dict)
    legacy_stock_sunset: dt.date = dt.date(2026, 1, 1)
    duplicate_policy: DuplicatePolicy = DuplicatePolicy.REJECT

    # --- first-seen store (Redis) --------------------------------------------------------------
    # slot_groups x 2**bucket_bits hashes hold the codes; size them so a bucket keeps ~64
    # codes. Redis scans a listpack to find a field, so fuller buckets cost CPU on every read,
    # claim and rebuild, and emptier ones cost key overhead (Redis 6.2, per code: 64 fields
    # 0.84 µs to insert and 21.7 B; 250 fields 2.3 µs and 20.4 B; 32 fields 0.6 µs and 23.3 B).
    # The default suits ~8 million codes; a national set of 1,000亿 wants slot_groups 16384
    # and bucket_bits 17 over a cluster. Changing either triggers a rebuild. slot_groups is how
    # many Redis Cluster hash tags (slots) the set spreads over.
    hotset_bucket_bits: int = Field(default=13, ge=0, le=28)
    hotset_slot_groups: int = Field(default=16, ge=1, le=16384)

    # --- record (PostgreSQL) -------------------------------------------------------------------
    # code_events' monthly partitions are kept this many months past the current one, checked
    # at migrate and by every API and consumer process this often (service/records/partitions).
    partition_months_ahead: int = Field(default=3, ge=3, le=120)
    partition_check_interval_s: float = Field(default=3600.0, gt=0)

    # --- secrets -------------------------------------------------------------------------------
    # `production` unless told otherwise, so a deployment that forgot to say is held to it.
    env: Environment = Environment.PRODUCTION
    api_key_pepper: SecretStr = SecretStr(_DEV_PEPPER)
    patient_hash_key: SecretStr = SecretStr(_DEV_PATIENT_HASH_KEY)
    # When set, the API makes sure an admin key with this value exists (bootstrap of a new stack).
    bootstrap_admin_key: SecretStr | None = None

    # Every process's log level (JSON lines on stderr): DEBUG, INFO, WARNING, ERROR, CRITICAL.
    log_level: LogLevel = "INFO"

    # --- console (/console) --------------------------------------------------------------------
    # Prometheus text URLs the console's charts sample besides the API's own metrics: each
    # consumer's (stack.json `metrics_urls`). Comma-separated or a JSON list.
    metrics_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How often the charts' sampler reads them; the last hour of samples is kept in memory.
    console_sample_interval_s: float = Field(default=5.0, ge=0.1, le=60)

    @field_validator("metrics_urls", mode="before")
    @classmethod
    def _url_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [url.strip() for url in text.split(",") if url.strip()]
        return value

    def require_secrets(self, needed: Iterable[Secret]) -> None:
        """Outside `dev`, raise InsecureSecretError naming every variable of `needed` that is
        missing, a development default or shorter than MIN_SECRET_CHARS."""
        if self.env is Environment.DEV:
            return
        bad = [problem for secret in needed if (problem := self._secret_problem(secret))]
        if bad:
            raise InsecureSecretError(
                "refusing to start with TRACEGATE_ENV=" + self.env.value + ": " + "; ".join(bad)
                + " (set random values, e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`, or TRACEGATE_ENV=dev for development)"
            )

    def _secret_problem(self, secret: Secret) -> str | None:
        variable = f"TRACEGATE_{secret.value.upper()}"
        value: SecretStr | None = getattr(self, secret.value)
        text = "" if value is None else value.get_secret_value()
        if not text:
            return f"{variable} is not set"
        if text in (_DEV_PEPPER, _DEV_PATIENT_HASH_KEY):
            return f"{variable} is the development default"
        if len(text) < MIN_SECRET_CHARS:
            return f"{variable} is shorter than {MIN_SECRET_CHARS} characters"
        return None

    @cached_property
    def asyncpg_dsn(self) -> str:
        """The database as a plain DSN, for asyncpg used directly (COPY, the rebuild scan)."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
