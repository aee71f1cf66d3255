"""Registry: regions, schools, buildings, rooms, timetable periods, calendar days and
device assignments (room history).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _one_of(column: str, values: tuple[str, ...], name: str) -> sa.CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({quoted})", name=name)


def upgrade() -> None:
    op.create_table(
        "regions",
        sa.Column("code", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("parent_code", sa.Integer, sa.ForeignKey("regions.code", name="fk_regions_parent")),
        sa.Column("name_zh", sa.String(32), nullable=False),
        sa.Column("name_en", sa.String(64), nullable=False),
        _one_of("level", ("province", "city", "county"), "ck_regions_level"),
    )
    op.create_index("ix_regions_parent_code", "regions", ["parent_code"])
    op.create_table(
        "schools",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("county_code", sa.Integer, sa.ForeignKey("regions.code", name="fk_schools_county"),
                  nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("day_start", sa.String(5), nullable=False, server_default="07:30"),
        sa.Column("day_end", sa.String(5), nullable=False, server_default="17:30"),
        sa.Column("weekdays_mask", sa.SmallInteger, nullable=False, server_default="31"),
        sa.Column("timezone", sa.String(32), nullable=False, server_default="Asia/Shanghai"),
        sa.UniqueConstraint("code", name="uq_schools_code"),
        _one_of("stage", ("primary", "junior", "senior", "nine_year", "twelve_year", "vocational"),
                "ck_schools_stage"),
    )
    op.create_index("ix_schools_county_code", "schools", ["county_code"])
    op.create_table(
        "buildings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("school_id", sa.Integer, sa.ForeignKey("schools.id", name="fk_buildings_school"),
                  nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64)),
        sa.UniqueConstraint("school_id", "code", name="uq_buildings_school_code"),
    )
    op.create_table(
        "rooms",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("school_id", sa.Integer, sa.ForeignKey("schools.id", name="fk_rooms_school"),
                  nullable=False),
        sa.Column("building_id", sa.Integer, sa.ForeignKey("buildings.id", name="fk_rooms_building")),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("capacity", sa.Integer),
        sa.Column("floor_area_m2", sa.Float),
        sa.Column("new_style", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("lux_factor", sa.Float, nullable=False, server_default="1.0"),
        sa.Column("teaching_space", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.UniqueConstraint("school_id", "code", name="uq_rooms_school_code"),
        _one_of("type", ("classroom", "lab", "library", "computer_room", "art_music", "gym", "new_style"),
                "ck_rooms_type"),
    )
    op.create_table(
        "timetable_periods",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("school_id", sa.Integer, sa.ForeignKey("schools.id", name="fk_timetable_school"),
                  nullable=False),
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id", name="fk_timetable_room"),
                  nullable=False),
        sa.Column("weekday", sa.SmallInteger, nullable=False),
        sa.Column("start", sa.String(5), nullable=False),
        sa.Column("end", sa.String(5), nullable=False),
        sa.Column("label", sa.String(64)),
        sa.UniqueConstraint("room_id", "weekday", "start", name="uq_timetable_room_weekday_start"),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name="ck_timetable_weekday"),
    )
    op.create_index("ix_timetable_school", "timetable_periods", ["school_id"])
    op.create_table(
        "calendar_days",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("school_id", sa.Integer, sa.ForeignKey("schools.id", name="fk_calendar_school")),
        sa.Column("date", sa.Date, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("label", sa.String(64)),
        sa.UniqueConstraint("school_id", "date", name="uq_calendar_school_date"),
        _one_of("kind", ("holiday", "workday"), "ck_calendar_kind"),
    )
    op.create_index("ix_calendar_date", "calendar_days", ["date"])
    op.create_table(
        "device_assignments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.String(15),
                  sa.ForeignKey("devices.device_id", name="fk_assignments_device"), nullable=False),
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id", name="fk_assignments_room"),
                  nullable=False),
        sa.Column("from_ts", sa.BigInteger, nullable=False),
        sa.Column("to_ts", sa.BigInteger),
    )
    op.create_index("ix_assignments_device_from", "device_assignments", ["device_id", "from_ts"])
    op.create_index("ix_assignments_room", "device_assignments", ["room_id"])


def downgrade() -> None:
    op.drop_index("ix_assignments_room", table_name="device_assignments")
    op.drop_index("ix_assignments_device_from", table_name="device_assignments")
    op.drop_table("device_assignments")
    op.drop_index("ix_calendar_date", table_name="calendar_days")
    op.drop_table("calendar_days")
    op.drop_index("ix_timetable_school", table_name="timetable_periods")
    op.drop_table("timetable_periods")
    op.drop_table("rooms")
    op.drop_table("buildings")
    op.drop_index("ix_schools_county_code", table_name="schools")
    op.drop_table("schools")
    op.drop_index("ix_regions_parent_code", table_name="regions")
    op.drop_table("regions")
