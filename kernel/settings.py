"""Herald's settings: one frozen object read once from `HERALD_*` environment variables or a `.env` file."""

from __future__ import annotations

import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.errors import ConfigurationError

Port = Annotated[int, Field(ge=1, le=65535)]
# What a produce request adds to one record's key and value (batch header, record framing, the inbox feed's
# few header bytes): aiokafka refuses a record whose estimate is over the producer's max_request_size.
RECORD_FRAMING_BYTES = 1024
# What a gateway frame adds around the one notification it may carry (its own fields, an escaped request id
# and cursor): a frame holding one notification of HERALD_INAPP_MAX_BYTES is at most this much larger.
GATEWAY_FRAME_OVERHEAD_BYTES = 4096


class SmtpTls(StrEnum):
    """How the SMTP connection is secured."""

    NONE = "none"  # plain text: only for local sinks and relays on a trusted network
    STARTTLS = "starttls"  # upgrade after connecting (port 587)
    IMPLICIT = "implicit"  # TLS from the first byte (port 465)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HERALD_",
        env_file=".env",
        env_file_encoding="utf-8",
        frozen=True,
        extra="ignore",
        secrets_dir=None,
    )

    # --- broker -------------------------------------------------------------------------------------------
    broker: str | None = Field(
        default=None,
        description="External Kafka as a Faust broker URL (kafka://h1:9092,h2:9092); "
        "unset means the embedded broker.",
    )
    embedded_broker_host: str = "127.0.0.1"
    embedded_broker_port: Port = 19092
    app_id: str = Field(default="herald", pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(default=8, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    data_dir: Path = Path(".herald-data")
    # Where the worker keeps its tables. "rocksdb": on disk under HERALD_DATA_DIR/<app id>, with the changelog
    # offsets read, so a clean restart reads only what it missed; "memory": read back from the changelogs on
    # every start. Unset: rocksdb with an external Kafka, memory on the embedded broker (which keeps nothing
    # across its own restarts, so tables on disk would be ahead of it).
    store: Literal["rocksdb", "memory"] | None = None
    # Each table partition is a RocksDB database of its own: these bound what each may hold in memory.
    rocksdb_write_buffer_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    rocksdb_block_cache_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    rocksdb_max_open_files: int = Field(default=64, ge=16)
    # Allocations between two collections of Python's youngest generation (Python's own default: 700). Worker
    # and gateway hold large state; adapters/garbage_collector.py says why fewer collections mean less pause.
    gc_gen0_threshold: int = Field(default=50_000, ge=700)
    # Short group-membership timeouts keep joins and rebalances fast (about 3 s instead of 30 s). The session
    # timeout is 6 s (Apache Kafka's smallest allowed by default) rather than 10: a crashed worker's
    # partitions move after 6 s instead of 10, and on the embedded broker a survivor re-joins in about 3 s
    # instead of 5 (a standby takeover at 1,000,000 users: 11 s instead of 17). Heartbeats run on the
    # consumer's own thread every second, so a busy agent does not miss them.
    rebalance_timeout_seconds: float = Field(default=3.0, gt=0)
    session_timeout_seconds: float = Field(default=6.0, gt=0)
    heartbeat_interval_seconds: float = Field(default=1.0, gt=0)
    # How long a fetch may wait on the broker for data, for the worker's and the gateway's consumers. Real
    # Kafka answers as soon as data is there; some brokers (the embedded Tansu) hold a fetch for about half of
    # the wait even when data is waiting, and every consumer hop on the way to a person pays that (Faust's own
    # fixed 1,500 ms cost 0.75-1.5 s per hop). An idle consumer asks this often.
    fetch_max_wait_ms: int = Field(default=10, ge=1, le=10_000)
    # The fetch wait of a gateway's feed while it hands over 2,000 records a second or more
    # (`fetch_max_wait_ms` below that): fewer and larger fetches when busy, on a broker that holds them
    # (adapters.broker.fetch_schedule.FetchPace).
    gateway_busy_fetch_max_wait_ms: int = Field(default=100, ge=1, le=10_000)
    # The worker's and the gateway's fetch wait once a second has passed with nothing handed over
    # (`fetch_max_wait_ms` again from the first record): on the embedded broker an idle deployment's short
    # fetches cost half a core. The first record after a quiet second may wait up to this much longer there.
    idle_fetch_max_wait_ms: int = Field(default=100, ge=1, le=10_000)
    # How often the worker fetches the retry and scheduler tiers, whose records wait seconds by design, where
    # the hot topics are fetched every round: a request's cost on the broker grows with its partitions, and
    # the tiers are most of a worker's. What a tier releases may be this much late. 0: with every fetch.
    delayed_fetch_interval_ms: int = Field(default=200, ge=0, le=10_000)
    # How often the worker commits acknowledged offsets: a crash replays at most about this much work (the
    # delivered-ids table keeps the replay from reaching a person twice).
    commit_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    # How long a partition may hold records no stream takes before the worker logs it as stalled (an ERROR
    # naming the partition; Faust's `stream_processing_timeout`).
    stream_stall_seconds: float = Field(default=300.0, gt=0)

    # --- topics -------------------------------------------------------------------------------------------
    topic_events: str = "herald.events"
    topic_users: str = "herald.users"
    topic_preferences: str = "herald.preferences"
    # Every change of a user's preferences as it was asked for, with its time and source (`herald preferences
    # history`): not compacted, kept for the retention below. Created by Herald with that retention.
    topic_preferences_history: str = Field(
        default="herald.preferences.history", pattern=r"^[A-Za-z0-9._-]{1,249}$"
    )
    preferences_history_retention_seconds: float = Field(default=365 * 24 * 3600, ge=3600)
    topic_rules: str = "herald.rules"
    topic_routed: str = "herald.routed"
    topic_inapp: str = "herald.deliver.inapp"
    topic_email: str = "herald.deliver.email"
    topic_push: str = "herald.deliver.push"
    topic_sms: str = "herald.deliver.sms"
    topic_scheduled_prefix: str = "herald.scheduled"
    topic_status: str = "herald.status"
    topic_dlq: str = "herald.dlq"

    # --- routing ------------------------------------------------------------------------------------------
    rules_file: Path = Path("examples/rules.yaml")
    templates_dir: Path = Path("examples/templates")

    # --- sizes --------------------------------------------------------------------------------------------
    # The largest record (key + value) the worker produces, its changelogs and dead letters included; the
    # producer takes this plus RECORD_FRAMING_BYTES (streams.app). Anything larger is dead-lettered before it
    # reaches the producer. At least 512 KiB: a digest lists up to 256 KiB of events.
    max_record_bytes: int = Field(default=1_000_000, ge=512 * 1024, le=64 * 1024 * 1024)
    max_recipients: int = Field(default=1000, ge=1, le=100_000)

    # --- email over SMTP ----------------------------------------------------------------------------------
    smtp_host: str | None = None
    smtp_port: Port = 25
    smtp_tls: SmtpTls = SmtpTls.NONE
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    smtp_connections: int = Field(default=4, ge=1, le=100)
    # Messages sent over one connection before it is closed and a fresh one opened: some servers and relays
    # cap them, and a message past the cap is refused (and retried later).
    smtp_messages_per_connection: int = Field(default=25, ge=1, le=100_000)
    # The name Herald gives in EHLO; receiving servers check it against the sending address's reverse DNS.
    # Unset: this host's fully qualified name, looked up once (aiosmtplib would look it up per connection).
    smtp_local_hostname: str | None = Field(default=None, pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)$")
    email_from: str = "Herald <herald@localhost>"

    # --- providers ----------------------------------------------------------------------------------------
    # Failover order per channel; only configured providers take part.
    email_providers: str = "sendgrid,smtp"
    sms_providers: str = "twilio,sns"
    push_providers: str = "fcm,apns"
    provider_threads: int = Field(default=16, ge=1, le=512)
    sendgrid_api_key: SecretStr | None = None
    sendgrid_base_url: str = "https://api.sendgrid.com"
    sendgrid_timeout_seconds: float = Field(default=10.0, gt=0)
    sendgrid_webhook_public_key: str | None = None
    sendgrid_webhook_path: str = Field(default="/webhooks/sendgrid", pattern=r"^/[A-Za-z0-9._~/-]*$")
    sendgrid_webhook_tolerance_seconds: float = Field(default=600.0, gt=0)
    sendgrid_webhook_max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_base_url: str = "https://api.twilio.com"
    twilio_timeout_seconds: float = Field(default=10.0, gt=0)
    twilio_connections: int = Field(default=16, ge=1, le=1000)
    sns_region: str | None = None
    sns_endpoint_url: str | None = None
    sns_access_key_id: str | None = None
    sns_secret_access_key: SecretStr | None = None
    sns_sender_id: str | None = None
    sns_sms_type: Literal["Transactional", "Promotional"] = "Transactional"
    sns_timeout_seconds: float = Field(default=10.0, gt=0)
    fcm_service_account_file: Path | None = None
    fcm_project_id: str | None = None
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_timeout_seconds: float = Field(default=10.0, gt=0)
    fcm_max_tokens_per_call: int = Field(default=100, ge=1, le=500)
    apns_key_file: Path | None = None
    apns_key_id: str | None = Field(default=None, pattern=r"^[A-Z0-9]{10}$")
    apns_team_id: str | None = Field(default=None, pattern=r"^[A-Z0-9]{10}$")
    apns_topic: str | None = None
    apns_base_url: str = "https://api.push.apple.com"
    apns_ca_file: Path | None = None
    apns_timeout_seconds: float = Field(default=10.0, gt=0)
    apns_max_concurrency: int = Field(default=20, ge=1, le=1000)
    apns_time_to_live_seconds: float = Field(default=86400.0, ge=0)
    apns_token_renew_seconds: float = Field(default=3000.0, ge=1200, lt=3600)

    # --- batching -----------------------------------------------------------------------------------------
    batch_size: int = Field(default=1000, ge=1, le=100000)
    batch_seconds: float = Field(default=0.005, gt=0, le=10)

    # --- delivery -----------------------------------------------------------------------------------------
    delivery_concurrency: int = Field(default=32, ge=1, le=1024)
    retry_base_delay_seconds: float = Field(default=2.0, ge=0)
    retry_multiplier: float = Field(default=4.0, ge=1)
    retry_max_delay_seconds: float = Field(default=600.0, gt=0)
    retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    retry_max_attempts: int = Field(default=5, ge=1, le=100)
    retry_tiers: int = Field(default=3, ge=1, le=10)
    # How long a recipient's send times are kept for throttling: at least the longest `per` of any rule.
    throttle_memory_seconds: float = Field(default=24 * 3600, gt=0)
    dedup_retention_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    # How often the delivered-ids table is swept for entries past the retention.
    dedup_sweep_seconds: float = Field(default=300.0, gt=0)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_cooldown_seconds: float = Field(default=30.0, gt=0)

    # --- gateway ------------------------------------------------------------------------------------------
    gateway_host: str = "127.0.0.1"
    gateway_port: Port = 8080
    jwt_secret: SecretStr | None = None
    jwt_algorithm: str = "HS256"
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    jwt_public_key_algorithm: str = Field(default="RS256", pattern=r"^(RS|PS|ES)(256|384|512)$")
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: float = Field(default=0.0, ge=0, le=300)
    gateway_allowed_origins: str = ""
    gateway_max_connections_per_user: int = Field(default=10, ge=1, le=1000)
    gateway_send_queue_size: int = Field(default=256, ge=1, le=100_000)
    # Bytes queued per socket and not yet written; at least one frame carrying the largest notification.
    gateway_send_queue_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    # The most an `inbox` reply (and a `?since=` recovery) may hold; a reply holds one entry whatever its
    # size, so paging always moves on.
    gateway_list_reply_bytes: int = Field(default=256 * 1024, ge=16 * 1024, le=1024 * 1024 * 1024)
    gateway_max_frame_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    gateway_ping_interval_seconds: float = Field(default=20.0, gt=0)
    gateway_ping_timeout_seconds: float = Field(default=20.0, gt=0)
    # permessage-deflate, which browsers offer: about 38 KB more memory per socket and 28 µs more CPU per
    # frame (bench/RESULTS.md, WebSocket server stacks), for notifications of a few hundred bytes.
    gateway_ws_compression: bool = False
    gateway_idle_timeout_seconds: float = Field(default=0.0, ge=0)
    gateway_handshake_timeout_seconds: float = Field(default=10.0, gt=0)
    gateway_body_timeout_seconds: float = Field(default=10.0, gt=0)
    # Where the gateway asks the worker that owns a user's inbox (any worker: one that does not own the user
    # forwards the request to the one that does), and the shared secret of that internal endpoint.
    gateway_worker_url: str = "http://127.0.0.1:6066"
    gateway_owner_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    internal_secret: SecretStr | None = Field(default=None, min_length=32)

    # --- in-app inbox (kept by the worker: streams/inbox) -------------------------------------------------
    inbox_commands_topic: str = "herald.inbox.commands"
    inbox_feed_topic: str = "herald.inbox.feed"
    # Gateways read the feed from its end: it only has to outlive a gateway's restart.
    inbox_feed_retention_seconds: float = Field(default=3600.0, ge=60)
    # Per user: the newest kept; each notification's index line costs ~50 bytes in the user's index record.
    inbox_size: int = Field(default=100, ge=1, le=10_000)
    inbox_retention_days: float = Field(default=90.0, gt=0)
    inbox_sweep_seconds: float = Field(default=3600.0, gt=0)
    # A larger in-app notification is dead-lettered (too_large) instead of being kept and pushed.
    inapp_max_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)

    # --- worker ops endpoint (metrics, health) ------------------------------------------------------------
    worker_host: str = "127.0.0.1"
    worker_port: Port = 6066
    # How other workers and the gateway reach this worker's ops endpoint (requests for an inbox it owns are
    # forwarded here). Default: http://<HERALD_WORKER_HOST, or this host's name if that is 0.0.0.0>:<port>.
    worker_advertised_url: str | None = None
    worker_header_timeout_seconds: float = Field(default=10.0, gt=0)
    worker_body_timeout_seconds: float = Field(default=30.0, gt=0)
    # The ops endpoint as providers reach it (through your ingress), e.g. https://hooks.example.com: turns
    # delivery receipts on (Twilio status callback URLs are built from it; README "Delivery receipts").
    public_base_url: str | None = None

    # --- privacy ------------------------------------------------------------------------------------------
    # Keys the pseudonyms of user ids, addresses and numbers in dead letters and logs (kernel/privacy.py).
    pseudonym_key: SecretStr | None = Field(default=None, min_length=32)

    @field_validator("broker")
    @classmethod
    def _broker_is_kafka_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith("kafka://"):
            raise ValueError("must be a kafka:// URL, e.g. kafka://localhost:9092")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _public_base_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. https://hooks.example.com")
        if parsed.query or parsed.fragment or parsed.username or parsed.password:
            raise ValueError("must be a plain base URL: no query, fragment or credentials")
        try:
            parsed.port  # noqa: B018 - raises on a port that is not a number in 0-65535
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value.strip().rstrip("/")

    @field_validator("jwt_algorithm")
    @classmethod
    def _hs_only(cls, value: str) -> str:
        if value not in {"HS256", "HS384", "HS512"}:
            raise ValueError("only HS256, HS384 and HS512 are supported in this version")
        return value

    @field_validator("email_providers", "sms_providers", "push_providers")
    @classmethod
    def _known_providers(cls, value: str, info: ValidationInfo) -> str:
        known = {
            "email_providers": {"sendgrid", "smtp"},
            "sms_providers": {"twilio", "sns"},
            "push_providers": {"fcm", "apns"},
        }
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in known[str(info.field_name)]]
        if unknown:
            choices = ", ".join(sorted(known[str(info.field_name)]))
            raise ValueError(f"unknown provider(s) {', '.join(unknown)}; known: {choices}")
        return ",".join(names)

    @model_validator(mode="after")
    def _smtp_credentials_paired(self) -> Settings:
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("HERALD_SMTP_USERNAME and HERALD_SMTP_PASSWORD must be set together")
        twilio = {
            "HERALD_TWILIO_ACCOUNT_SID": self.twilio_account_sid,
            "HERALD_TWILIO_AUTH_TOKEN": self.twilio_auth_token,
            "HERALD_TWILIO_FROM": self.twilio_from,
        }
        if any(v is not None for v in twilio.values()) and not all(v is not None for v in twilio.values()):
            missing = ", ".join(name for name, v in twilio.items() if v is None)
            raise ValueError(f"Twilio is partly configured: set {missing} too")
        if (self.sns_access_key_id is None) != (self.sns_secret_access_key is None):
            raise ValueError("HERALD_SNS_ACCESS_KEY_ID and HERALD_SNS_SECRET_ACCESS_KEY must be set together")
        if self.fcm_service_account_file is not None and not self.fcm_service_account_file.is_file():
            raise ValueError(
                f"HERALD_FCM_SERVICE_ACCOUNT_FILE: {self.fcm_service_account_file} is not a file"
            )
        apns = {
            "HERALD_APNS_KEY_FILE": self.apns_key_file,
            "HERALD_APNS_KEY_ID": self.apns_key_id,
            "HERALD_APNS_TEAM_ID": self.apns_team_id,
            "HERALD_APNS_TOPIC": self.apns_topic,
        }
        if any(v is not None for v in apns.values()) and not all(v is not None for v in apns.values()):
            missing = ", ".join(name for name, v in apns.items() if v is None)
            raise ValueError(f"APNs is partly configured: set {missing} too")
        for name, path in (
            ("HERALD_APNS_KEY_FILE", self.apns_key_file),
            ("HERALD_APNS_CA_FILE", self.apns_ca_file),
        ):
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a file")
        if self.heartbeat_interval_seconds >= self.session_timeout_seconds:
            raise ValueError("HERALD_HEARTBEAT_INTERVAL_SECONDS must be below HERALD_SESSION_TIMEOUT_SECONDS")
        self._gateway_budgets_fit()
        return self

    def _gateway_budgets_fit(self) -> None:
        # One frame must always fit an empty send queue, or a client would be closed as slow on every attempt:
        # a notification frame, or a reply holding one notification (of at most HERALD_MAX_RECORD_BYTES).
        largest = max(self.inapp_max_bytes, self.gateway_list_reply_bytes) + GATEWAY_FRAME_OVERHEAD_BYTES
        if self.gateway_send_queue_bytes < largest:
            raise ValueError(
                f"HERALD_GATEWAY_SEND_QUEUE_BYTES must be at least {largest}: the larger of "
                f"HERALD_INAPP_MAX_BYTES and HERALD_GATEWAY_LIST_REPLY_BYTES, plus "
                f"{GATEWAY_FRAME_OVERHEAD_BYTES} bytes of frame, so one frame always fits"
            )
        if self.inapp_max_bytes + GATEWAY_FRAME_OVERHEAD_BYTES > self.max_record_bytes:
            raise ValueError(
                "HERALD_INAPP_MAX_BYTES must leave room for a frame around it within HERALD_MAX_RECORD_BYTES"
            )

    @property
    def advertised_worker_url(self) -> str:
        if self.worker_advertised_url is not None:
            return self.worker_advertised_url.rstrip("/")
        host = socket.gethostname() if self.worker_host in ("0.0.0.0", "::") else self.worker_host  # noqa: S104
        return f"http://{host}:{self.worker_port}"

    @property
    def broker_url(self) -> str:
        """The broker to connect to: the external one, else the embedded broker's address."""
        if self.broker is not None:
            return self.broker
        return f"kafka://{self.embedded_broker_host}:{self.embedded_broker_port}"

    @property
    def table_store(self) -> Literal["rocksdb", "memory"]:
        """HERALD_STORE, or by default rocksdb with an external Kafka and memory on the embedded broker."""
        if self.store is not None:
            return self.store
        return "memory" if self.broker is None else "rocksdb"

    @property
    def bootstrap_servers(self) -> list[str]:
        """`host:port` list for plain Kafka clients (aiokafka), from the same URL Faust uses."""
        hosts = self.broker_url.removeprefix("kafka://")
        return [h.strip() for h in hosts.replace(";", ",").split(",") if h.strip()]

    def provider_order(self, channel: str) -> list[str]:
        value: str = getattr(self, f"{channel}_providers")
        return [name for name in value.split(",") if name]

    @property
    def delivery_topics(self) -> dict[str, str]:
        return {
            "inapp": self.topic_inapp,
            "email": self.topic_email,
            "push": self.topic_push,
            "sms": self.topic_sms,
        }


def load_settings(**overrides: object) -> Settings:
    """Read the settings once; a bad one raises ConfigurationError naming its environment variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            name = f"HERALD_{field.upper()}" if field else "settings"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None
