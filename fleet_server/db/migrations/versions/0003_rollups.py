"""Rollups: room_hour, room_day, school_day sums, the rollup queue fed by a trigger
on windows, and the rollup job's state. Windows already stored are queued, so the
first rollup run counts them.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies of fleet_server/db/metrics_schema.py at this revision.
ADDITIVE = (
    "observed_s", "occupied_s", "in_school_observed_s", "in_school_occupied_s",
    "co2_sum", "co2_n_s", "co2_over_1000_s", "co2_over_1500_s",
    "temp_occ_s", "temp_in_band_s", "rh_occ_s", "rh_in_band_s",
    "lux_sum", "lux_occ_s", "lux_low_s",
    "noise_energy_sum", "noise_n_s", "noise_over_45_s",
)
MASKS = ("observed_mask", "present_mask", "occupied_mask")
QUEUED = ("device_id", "seq", "ts", "win", "occupied_s", "co2_ppm", "temp_c", "rh_pct", "lux", "noise_dba")
COLS = ", ".join(QUEUED)
TRIGGER = "trg_windows_rollup_queue"
FUNCTION = "campusfleet_queue_windows"
TRIGGER_DDL = {
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS {TRIGGER} AFTER INSERT ON windows "
        f"BEGIN INSERT OR IGNORE INTO rollup_queue ({COLS}, parked) "
        f"VALUES ({', '.join('NEW.' + c for c in QUEUED)}, 0); END",
    ],
    "postgresql": [
        f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN INSERT INTO rollup_queue ({COLS}, parked) "
        f"SELECT {COLS}, false FROM new_windows ON CONFLICT DO NOTHING; RETURN NULL; END $$",
        f"CREATE OR REPLACE TRIGGER {TRIGGER} AFTER INSERT ON windows "
        f"REFERENCING NEW TABLE AS new_windows FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()",
    ],
}
DROP_DDL = {
    "sqlite": [f"DROP TRIGGER IF EXISTS {TRIGGER}"],
    "postgresql": [f"DROP TRIGGER IF EXISTS {TRIGGER} ON windows", f"DROP FUNCTION IF EXISTS {FUNCTION}()"],
}


def _measures(masks: bool) -> list[sa.Column]:
    cols = [sa.Column("windows", sa.Integer, nullable=False, server_default="0")]
    cols += [sa.Column(n, sa.Float, nullable=False, server_default="0") for n in ADDITIVE]
    cols.append(sa.Column("co2_max", sa.SmallInteger))
    if masks:
        cols += [sa.Column(n, sa.BigInteger, nullable=False, server_default="0") for n in MASKS]
    return cols


def upgrade() -> None:
    op.create_table(
        "room_hour",
        sa.Column("room_id", sa.Integer, nullable=False),
        sa.Column("date", sa.Date, nullable=False),
        sa.Column("hour", sa.SmallInteger, nullable=False),
        sa.Column("school_id", sa.Integer, nullable=False),
        *_measures(True),
        sa.PrimaryKeyConstraint("room_id", "date", "hour", name="pk_room_hour"),
    )
    op.create_index("ix_room_hour_school_date", "room_hour", ["school_id", "date"])
    op.create_table(
        "room_day",
        sa.Column("room_id", sa.Integer, nullable=False),
        sa.Column("date", sa.Date, nullable=False),
        sa.Column("school_id", sa.Integer, nullable=False),
        *_measures(False),
        sa.PrimaryKeyConstraint("room_id", "date", name="pk_room_day"),
    )
    op.create_index("ix_room_day_school_date", "room_day", ["school_id", "date"])
    op.create_table(
        "school_day",
        sa.Column("school_id", sa.Integer, nullable=False),
        sa.Column("date", sa.Date, nullable=False),
        *_measures(False),
        sa.PrimaryKeyConstraint("school_id", "date", name="pk_school_day"),
    )
    op.create_table(
        "rollup_queue",
        sa.Column("device_id", sa.String(15), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("win", sa.SmallInteger, nullable=False),
        sa.Column("occupied_s", sa.SmallInteger, nullable=False),
        sa.Column("co2_ppm", sa.SmallInteger),
        sa.Column("temp_c", sa.Float),
        sa.Column("rh_pct", sa.Float),
        sa.Column("lux", sa.Float),
        sa.Column("noise_dba", sa.Float),
        sa.Column("parked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("device_id", "seq", name="pk_rollup_queue"),
    )
    op.create_table(
        "rollup_state",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    dialect = op.get_bind().dialect.name
    for ddl in TRIGGER_DDL.get(dialect, ()):
        op.execute(ddl)
    # The windows stored before this revision: queued like new ones.
    op.execute(f"INSERT INTO rollup_queue ({COLS}, parked) SELECT {COLS}, "
               + ("false" if dialect == "postgresql" else "0") + " FROM windows")


def downgrade() -> None:
    for ddl in DROP_DDL.get(op.get_bind().dialect.name, ()):
        op.execute(ddl)
    op.drop_table("rollup_state")
    op.drop_table("rollup_queue")
    op.drop_table("school_day")
    op.drop_index("ix_room_day_school_date", table_name="room_day")
    op.drop_table("room_day")
    op.drop_index("ix_room_hour_school_date", table_name="room_hour")
    op.drop_table("room_hour")
