"""Settings parts shared by every service.

Each service composes one ``Settings`` class from these parts by inheritance, so every
variable keeps a flat, documented name (``HODHOD_KAFKA_BOOTSTRAP``, ``HODHOD_HTTP_PORT``).
Nothing here is read at import time: call ``Settings()`` inside ``create_app``/``main``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class BaseServiceSettings(BaseSettings):
    """Common base: ``HODHOD_`` prefix, ``__`` nested delimiter, no config files."""

    model_config = SettingsConfigDict(
        env_prefix="HODHOD_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"


class KafkaSettings(BaseServiceSettings):
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_partitions: int = Field(default=3, ge=1, le=1024)
    kafka_replication: int = Field(default=1, ge=1, le=5)
    # Tansu answers a waiting fetch only when the wait expires, so every hop costs up
    # to this long; Apache Kafka answers early and can take 500 (see README, Known limits).
    kafka_fetch_max_wait_ms: int = Field(default=10, ge=0, le=10_000)
    # Tansu answers a new group's join after about half of this, and a restarted member
    # waits for the old member's session to expire (it ignores LeaveGroup).
    kafka_session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    kafka_max_batch: int = Field(default=500, ge=1, le=5_000)
    kafka_linger_ms: int = Field(default=5, ge=0, le=1_000)
    kafka_retry_budget_s: float = Field(default=600.0, gt=0)
    kafka_dlq_max_consecutive: int = Field(default=1000, ge=1)


class SegmenterSettings(BaseServiceSettings):
    # How often time-dependent segments are re-evaluated in bulk (the bound on how late
    # "last visit ≥ 3 hours ago" is entered without a new event).
    segment_scheduler_interval_s: float = Field(default=60.0, gt=0, le=3600)


class AttributionSettings(BaseServiceSettings):
    # The operator's data-centre / anonymous-proxy networks, one CIDR per line ("#"
    # comments); installs from them are rejected as fraud. Read when the service starts.
    fraud_datacenter_file: str | None = None
    # Postback calls to one ad network (per process): sustained rate and burst.
    postback_rate_per_s: float = Field(default=50.0, gt=0, le=10_000)
    postback_burst: int = Field(default=10, ge=1, le=10_000)


# The master key of provider credentials in development: known to everyone, so refused
# outside development (``services.dispatcher.credentials.Keyring.from_settings``).
DEV_SECRETS_KEY = "hodhod-development-only-secrets-key-do-not-use"


class DispatcherSettings(BaseServiceSettings):
    # Master key of the per-app provider credentials (32 random bytes, base64url): only
    # the dispatcher's deployment is given it. Previous keys, comma-separated, still
    # open credentials sealed before a rotation.
    dispatcher_secrets_key: SecretStr = SecretStr(DEV_SECRETS_KEY)
    dispatcher_secrets_old_keys: SecretStr = SecretStr("")
    # Channels of an app without credentials go to the log provider (None: on except in
    # production); off, such sends are suppressed with reason no_provider.
    dispatcher_log_fallback: bool | None = None
    # How long an app's providers are used before its credentials are checked again.
    dispatcher_credentials_ttl_s: float = Field(default=10.0, ge=0, le=3600)
    # Provider endpoints: the real ones by default; tests and proxies point elsewhere.
    dispatcher_fcm_url: str = "https://fcm.googleapis.com"
    dispatcher_fcm_token_uri: str = "https://oauth2.googleapis.com/token"
    dispatcher_apns_url: str | None = None
    dispatcher_kavenegar_url: str = "https://api.kavenegar.com"
    # An extra CA bundle providers' TLS trusts (besides the system's).
    dispatcher_provider_ca_file: str | None = None
    dispatcher_provider_timeout_s: float = Field(default=10.0, gt=0, le=120)
    dispatcher_provider_max_connections: int = Field(default=100, ge=1, le=10_000)
    # Plain-http web push endpoints and SMS gateway URLs (None: allowed except in
    # production).
    dispatcher_allow_insecure_endpoints: bool | None = None

    def log_fallback(self) -> bool:
        if self.dispatcher_log_fallback is not None:
            return self.dispatcher_log_fallback
        return self.environment != "production"

    def insecure_endpoints(self) -> bool:
        if self.dispatcher_allow_insecure_endpoints is not None:
            return self.dispatcher_allow_insecure_endpoints
        return self.environment != "production"


class JourneySettings(BaseServiceSettings):
    # Webhook nodes may call loopback, private and link-local addresses (a development
    # box, tests); off in production, where such a call would reach internal services.
    journey_webhook_allow_private: bool = False
    # Runs a wake-up batch claims at once, and a broadcast's members entered per page.
    journey_timer_batch: int = Field(default=1000, ge=1, le=50_000)
    journey_broadcast_page: int = Field(default=5000, ge=1, le=100_000)


class PostgresSettings(BaseServiceSettings):
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/hodhod",
        validation_alias=AliasChoices("HODHOD_DATABASE_URL", "DATABASE_URL"),
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # How long a timed-work runner (libs.runtime.timed) retries a transient failure
    # before it stops the process.
    timed_retry_budget_s: float = Field(default=600.0, gt=0)


class ClickHouseSettings(BaseServiceSettings):
    clickhouse_url: str = "chdb://./var/clickhouse"
    clickhouse_database: str = "hodhod"
    # Raw rows older than this many days are dropped by ClickHouse; 0 keeps them forever.
    clickhouse_ttl_days: int = Field(default=0, ge=0, le=36_500)


class HttpSettings(BaseServiceSettings):
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # The address SDKs and browsers reach us at; used to build tracker click URLs.
    public_url: str | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Take the client address from X-Forwarded-For: only behind a proxy that sets it.
    trust_forwarded_for: bool = False
    # How many trusted proxies append to X-Forwarded-For (a CDN and a load balancer: 2).
    forwarded_hops: int = Field(default=1, ge=1, le=10)


class IngestSettings(BaseServiceSettings):
    """Limits of the event API (``/v1/events``, ``/v1/s2s/events``)."""

    ingest_max_batch: int = Field(default=500, ge=1, le=5_000)
    # How old an SDK event may be; server-to-server events may carry any past ts.
    ingest_max_event_age_days: int = Field(default=7, ge=1, le=3_650)
    # Token bucket per API key, counting events (not requests), per process: a key can
    # sustain ``rate`` events/s and send ``burst`` at once after being idle.
    ingest_rate_per_s: float = Field(default=200.0, gt=0)
    ingest_rate_burst: int = Field(default=1_000, ge=1)

    @model_validator(mode="after")
    def _a_full_batch_fits_the_bucket(self) -> IngestSettings:
        if self.ingest_rate_burst < self.ingest_max_batch:
            # Otherwise a full batch could never be accepted, however long the client waits.
            raise ValueError(
                f"HODHOD_INGEST_RATE_BURST ({self.ingest_rate_burst}) must be at least "
                f"HODHOD_INGEST_MAX_BATCH ({self.ingest_max_batch})"
            )
        return self


class PlatformSettings(
    KafkaSettings,
    PostgresSettings,
    ClickHouseSettings,
    HttpSettings,
    IngestSettings,
    SegmenterSettings,
    AttributionSettings,
    DispatcherSettings,
    JourneySettings,
):
    """Everything the one-process launcher needs; each service reads only its part."""
