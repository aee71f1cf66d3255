"""Tables. Times received by the server are Unix seconds (float, UTC); node times
(`ts`) are the protocol's integer Unix seconds. The API renders them as ISO 8601."""
from sqlalchemy import (
    BigInteger, Boolean, Column, Float, Index, Integer, MetaData, PrimaryKeyConstraint,
    SmallInteger, String, Table, Text,
)

metadata = MetaData()

devices = Table(
    "devices", metadata,
    Column("device_id", String(15), primary_key=True),
    Column("first_seen_s", Float, nullable=False),
    Column("last_seen_s", Float),           # last live (non-retained) message
    Column("online", Boolean, nullable=False, default=False),
    Column("online_since_s", Float),        # when `online` last changed
    Column("fw", String(32)),
    Column("hw", String(32)),
    Column("boot", Integer),
    Column("reset_cause", String(16)),
    Column("uptime_s", BigInteger),
    Column("heap_free", Integer),
    Column("rssi", SmallInteger),
    Column("ip", String(64)),
    Column("clock", String(8)),
    Column("outbox", Integer),
    Column("sensors", Text),                # JSON object name -> ok|missing|failed
    Column("status_ts", BigInteger),
    Column("win_s", Integer),               # window length of the last report
    Column("windows_received", BigInteger, nullable=False, default=0),
    Column("last_window", Text),            # JSON of the newest stored report
    Column("last_window_ts", BigInteger),
    Column("present", Boolean),             # from the newest event
    Column("present_ts", BigInteger),
    Column("room_id", Integer),             # NULL = unassigned (registry comes later)
)

windows = Table(
    "windows", metadata,
    Column("device_id", String(15), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("win", SmallInteger, nullable=False),
    Column("occupied_s", SmallInteger, nullable=False),
    Column("present", Boolean, nullable=False),
    Column("pir", Integer),
    Column("radar_s", SmallInteger),
    Column("co2_ppm", SmallInteger),
    Column("temp_c", Float),
    Column("rh_pct", Float),
    Column("lux", Float),
    Column("noise_dba", Float),
    Column("received_s", Float, nullable=False),
    # Exactly-once storage: a redelivered (device_id, seq) is a conflict, not a row.
    PrimaryKeyConstraint("device_id", "seq", name="pk_windows"),
    Index("ix_windows_device_ts", "device_id", "ts"),
)

events = Table(
    "events", metadata,
    Column("device_id", String(15), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("present", Boolean, nullable=False),
    Column("received_s", Float, nullable=False),
    PrimaryKeyConstraint("device_id", "seq", name="pk_events"),
)

commands = Table(
    "commands", metadata,
    Column("cmd_id", String(64), nullable=False),
    Column("device_id", String(15), nullable=False),
    Column("op", String(16)),               # NULL for an ack of a command we did not send
    Column("args", Text),
    Column("created_s", Float),
    Column("exp", BigInteger),
    Column("acked_s", Float),
    Column("ok", Boolean),
    Column("err", String(64)),
    PrimaryKeyConstraint("device_id", "cmd_id", name="pk_commands"),
)

# Every status a node sent (PROTOCOL.md "Status"), for health over time: heap, RSSI,
# reboots and reset causes (DOMAIN.md "Device health"). `devices` keeps only the latest.
# A status is ~1 row per device per status_s (default 300 s), ~100 bytes: cheap beside
# `windows`. Pruned with the raw windows (fleet_server/metrics/retention.py).
status_history = Table(
    "status_history", metadata,
    Column("device_id", String(15), nullable=False),
    Column("received_s", Float, nullable=False),     # server clock: the time axis of the series
    Column("online", Boolean, nullable=False),       # false = the will / a graceful stop
    Column("status_ts", BigInteger),                 # the node's ts; NULL on the will
    Column("fw", String(32)),
    Column("boot", Integer),
    Column("reset_cause", String(16)),
    Column("uptime_s", BigInteger),
    Column("heap_free", Integer),
    Column("rssi", SmallInteger),
    Column("outbox", Integer),
    Column("sensors", Text),                         # JSON object name -> ok|missing|failed
    PrimaryKeyConstraint("device_id", "received_s", name="pk_status_history"),
)

from fleet_server.db import registry_schema  # noqa: F401
from fleet_server.db import metrics_schema  # noqa: F401
from fleet_server.db import alerts_schema  # noqa: F401
from fleet_server.db import provisioning_schema  # noqa: F401
from fleet_server.db import firmware_schema  # noqa: F401
from fleet_server.db import auth_schema  # noqa: F401
from fleet_server.db import campaign_schema  # noqa: F401
