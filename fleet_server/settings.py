"""Server settings: environment variables prefixed CAMPUSFLEET_ and CLI flags.

Nothing reads them at import time; the app factory and the CLI build a Settings."""
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_SCHEME = "embedded"
TLS_SCHEME = "mqtts"   # MQTT over TLS (default port 8883), verified with mqtt_ca_file


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAMPUSFLEET_", extra="ignore")

    # SQLAlchemy URL; the default is a SQLite file under ./var/.
    db: str = "sqlite:///./var/campusfleet.db"
    # mqtt://host:port for an external broker (Mosquitto), or embedded://host:port to
    # start the amqtt broker inside this process.
    mqtt: str = "embedded://127.0.0.1:1883"
    bind: str = "127.0.0.1:8000"
    # Run the MQTT ingest inside the API process (off for API-only replicas).
    ingest: bool = True
    # Run the background jobs (rollups and the coverage keeper, alerts, retention, OTA
    # campaigns) in this process. Off for extra API replicas on a PostgreSQL that a server
    # with the jobs also uses: their requests then never share the interpreter with a job.
    jobs: bool = True
    ingest_client_id: str = "campusfleet-ingest"
    # Batch commit bounds: whichever is reached first closes the batch.
    batch_max: int = 500
    batch_max_age_ms: int = 50
    # MQTT v5 for ingest against an external broker (Mosquitto); the embedded amqtt
    # broker speaks only 3.1.1, so the app factory always uses 3.1.1 with it.
    ingest_mqtt_v5: bool = True
    # Subscribe through the shared subscription $share/campusfleet/campus/v1/+/#, so
    # several ingest workers split the messages between them (needs MQTT v5).
    ingest_shared: bool = False
    # v5: how long the broker keeps ingest's session (subscription and queued QoS 1
    # messages) after ingest disconnects or dies.
    ingest_session_expiry_s: int = 7 * 86400
    # v5: most unacked QoS 1 messages the broker may send ingest (Receive Maximum);
    # 0 = three batches (3 x batch_max).
    ingest_receive_maximum: int = 0
    # `campusfleet ingest`: decode and store in a process of their own, on another core
    # than the MQTT client (`serve` always writes from a thread of its own process).
    ingest_writer_process: bool = True
    # Raw windows, events and status history are deleted after this many days (daily,
    # fleet_server/metrics/retention.py); rollups are kept forever.
    retention_days: int = Field(400, ge=1)
    # Optional time-series sink (docs/tsdb.md): newly stored windows are also written as
    # line protocol to an InfluxDB v2 write API (InfluxDB 2/3, VictoriaMetrics).
    # '' = off. The token is read from a file so it stays out of env dumps and `ps`.
    tsdb_url: str = ""
    tsdb_token_file: str = ""
    tsdb_org: str = ""
    tsdb_bucket: str = "campusfleet"
    # Windows held while the TSDB is slow or down; beyond it the oldest are dropped.
    tsdb_queue_max: int = 100_000
    # Firmware releases for OTA (docs/ota.md): where uploaded bundles are kept, the
    # Ed25519 public keys (hex, comma-separated) an upload must be signed by (the server
    # never holds a private key), and each download's bandwidth cap (bytes/s, 0 = none).
    firmware_dir: str = "./var/firmware"
    firmware_trusted_keys: str = ""
    firmware_download_bps: int = Field(0, ge=0)
    # OTA campaigns (docs/ota.md "Campaigns"): the URL nodes reach this server at for
    # downloads (empty: the address the campaign was created through), the engine's pass
    # interval, and how many updates one campaign keeps under way at once, in all and in
    # one school (its nodes share the school's uplink; each download is paced too).
    public_url: str = ""
    campaign_interval_s: float = Field(5.0, gt=0)
    campaign_max_in_flight: int = Field(200, ge=1)
    campaign_max_per_school: int = Field(10, ge=1)
    # Broker identity and ACLs (docs/security.md). With require_registration a device
    # the server never issued credentials to is refused by the broker (the embedded one,
    # or Mosquitto through dynamic security); the demo turns it off. The server's own MQTT
    # login (ingest, commands) against Mosquitto: mqtt_user + a file holding its password.
    # broker_admin_user + its password file: the Mosquitto dynamic-security admin the
    # server uses to create, re-key and disable device clients ('' = not managed).
    # Secrets are read from files only, never from flags or the environment's values.
    require_registration: bool = True
    mqtt_user: str = ""
    mqtt_password_file: str = ""
    broker_admin_user: str = ""
    broker_admin_password_file: str = ""
    # Users, roles and API tokens (docs/security.md "Users, roles and audit"). Off only
    # for a throwaway test server: then every request acts as the system operator.
    auth_required: bool = True
    # TLS and hardening (docs/security.md). mqtt_ca_file: the CA that signed the broker's
    # certificate, for mqtts:// ('' = the system's trust store). tls_cert_file +
    # tls_key_file: serve HTTPS (both, or neither). Request bodies over max_request_bytes
    # are refused with 413 (max_upload_bytes for CSV imports and firmware bundles).
    # Ingest drops a device's messages beyond ingest_device_rate_per_s sustained after a
    # burst of ingest_device_burst (sized to a node's whole outbox; 0 = no limit).
    mqtt_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    max_request_bytes: int = Field(1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    ingest_device_rate_per_s: float = Field(1.0, ge=0)
    ingest_device_burst: int = Field(10_000, ge=1)
    # Login throttling by client address (docs/security.md, "Users, roles and audit"), on
    # top of the per-user lockout: each address may try login_address_burst logins at
    # once, refilled at login_address_per_min (0 = no limit); an IPv6 client counts by
    # its /login_ipv6_prefix network (a host usually holds a whole /64).
    login_address_per_min: float = Field(10.0, ge=0)
    login_address_burst: int = Field(20, ge=1)
    login_ipv6_prefix: int = Field(64, ge=16, le=128)

    @property
    def device_rate(self) -> tuple[float, int] | None:
        """(messages per second, burst) for ingest, or None when off."""
        return (self.ingest_device_rate_per_s, self.ingest_device_burst) if self.ingest_device_rate_per_s > 0 else None

    def mqtt_tls_ca(self) -> str | None:
        """For MqttIngest(tls_ca_file=): None for plain MQTT, the CA file ('' = system
        trust) for mqtts://."""
        return self.mqtt_ca_file if parse_mqtt_url(self.mqtt)[0] == TLS_SCHEME else None

    @field_validator("batch_max")
    @classmethod
    def _batch_max(cls, v: int) -> int:
        if not 1 <= v <= 20000:
            raise ValueError("batch_max must be 1..20000")
        return v

    @field_validator("ingest_receive_maximum")
    @classmethod
    def _receive_maximum(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError("ingest_receive_maximum must be 0..65535 (0 = automatic)")
        return v

    @field_validator("ingest_session_expiry_s")
    @classmethod
    def _session_expiry(cls, v: int) -> int:
        if not 0 <= v <= 0xFFFFFFFF:
            raise ValueError("ingest_session_expiry_s must be 0..4294967295")
        return v

    @field_validator("tsdb_queue_max")
    @classmethod
    def _tsdb_queue_max(cls, v: int) -> int:
        if not 1 <= v <= 10_000_000:
            raise ValueError("tsdb_queue_max must be 1..10000000")
        return v

    @field_validator("mqtt")
    @classmethod
    def _mqtt_url(cls, v: str) -> str:
        parse_mqtt_url(v)
        return v

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        parse_host_port(v, 8000)
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> "Settings":
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together (HTTPS needs both)")
        return self


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """'host:port', '[::1]:port', 'host' -> (host, port). Raises ValueError."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"port in {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port in {text!r} is out of range")
    return host, port


def parse_mqtt_url(url: str) -> tuple[str, str, int]:
    """-> (scheme, host, port); scheme is 'mqtt', 'mqtts' (TLS, port 8883 by default) or
    'embedded'. An IPv6 host goes in brackets: mqtt://[::1]:1883; it comes back bare."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("mqtt", TLS_SCHEME, EMBEDDED_SCHEME):
        raise ValueError(f"MQTT URL must be mqtt://host:port, mqtts://host:port or embedded://host:port, not {url!r}")
    host, port = parse_host_port(rest.rstrip("/"), 8883 if scheme == TLS_SCHEME else 1883)
    return scheme, host, port
