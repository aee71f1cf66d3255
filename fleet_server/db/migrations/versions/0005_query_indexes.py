"""Query indexes for the province views: room_day by date with the columns coverage
counts, so a province's school day is read from the index alone (bench/queries.py).

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# A frozen copy of fleet_server/db/metrics_schema.py `ix_room_day_date_school`.
INDEX = "ix_room_day_date_school"
COLUMNS = ["date", "school_id", "room_id", "in_school_observed_s"]


def upgrade() -> None:
    op.create_index(INDEX, "room_day", COLUMNS)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="room_day")
