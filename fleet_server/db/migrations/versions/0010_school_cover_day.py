"""school_cover_day: per school and school day, the room counts coverage judges schools
on, kept by the rollup job; backfilled here from the existing room_day rows.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# A frozen copy of fleet_server/db/metrics_schema.py `school_cover_day` and of
# fleet_server/metrics/coverage_counts.py `cover_select` at this revision.
STEPS = tuple(range(5, 101, 5))

_room_day = sa.table("room_day", sa.column("room_id", sa.Integer), sa.column("date", sa.Date),
                     sa.column("school_id", sa.Integer), sa.column("in_school_observed_s", sa.Float))
_schools = sa.table("schools", sa.column("id", sa.Integer), sa.column("day_start", sa.String),
                    sa.column("day_end", sa.String))


def _minutes(column):
    return (sa.cast(sa.func.substr(column, 1, 2), sa.Integer) * 60
            + sa.cast(sa.func.substr(column, 4, 2), sa.Integer))


def _cover_select():
    rd, s = _room_day.c, _schools.c
    day_s = 60 * (_minutes(s.day_end) - _minutes(s.day_start))
    obs = rd.in_school_observed_s
    return (sa.select(rd.date, rd.school_id, day_s.label("day_s"), sa.func.count().filter(obs > 0).label("seen"),
                      *(sa.func.count().filter(obs > 0, obs >= (k / 100) * day_s).label(f"live_{k}")
                        for k in STEPS))
            .select_from(_room_day.join(_schools, s.id == rd.school_id))
            .group_by(rd.date, rd.school_id, s.day_start, s.day_end))


def upgrade() -> None:
    cover = op.create_table(
        "school_cover_day",
        sa.Column("date", sa.Date, nullable=False),
        sa.Column("school_id", sa.Integer, nullable=False),
        sa.Column("day_s", sa.Integer, nullable=False),
        sa.Column("seen", sa.Integer, nullable=False),
        *(sa.Column(f"live_{k}", sa.Integer, nullable=False) for k in STEPS),
        sa.PrimaryKeyConstraint("date", "school_id", name="pk_school_cover_day"),
    )
    columns = ["date", "school_id", "day_s", "seen", *(f"live_{k}" for k in STEPS)]
    op.get_bind().execute(sa.insert(cover).from_select(columns, _cover_select()))


def downgrade() -> None:
    op.drop_table("school_cover_day")
