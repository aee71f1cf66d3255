"""Writing alerts: the rules hand in what they found (a Finding per condition that
holds now) and these open a new row, bring the open one up to date, or resolve it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from fleet_server.alerts.rules import SEVERITY
from fleet_server.db.alerts_schema import alerts


@dataclass
class Finding:
    """A condition that holds (or, with resolved_at, held and ended) for a subject."""
    kind: str
    subject: str
    opened_at: float
    last_seen_at: float
    device_id: str | None = None
    room_id: int | None = None
    school_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    resolved_at: float | None = None


@dataclass
class Outcome:
    opened: int = 0
    updated: int = 0
    resolved: int = 0

    def add(self, other: Outcome) -> None:
        self.opened += other.opened
        self.updated += other.updated
        self.resolved += other.resolved


def _insert(conn: Connection):
    dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(conn.dialect.name)
    if dialect is None:
        raise RuntimeError(f"unsupported database {conn.dialect.name}")
    return dialect.insert(alerts)


def open_alerts(conn: Connection, kind: str) -> dict[str, Any]:
    """subject -> the open alert of `kind` (few rows: the partial unique index keeps one
    per subject, and open alerts are a small share of all)."""
    a = alerts.c
    return {r.subject: r for r in conn.execute(select(alerts).where(a.kind == kind, a.resolved_at.is_(None)))}


def insert(conn: Connection, f: Finding, out: Outcome) -> None:
    """A new alert. A row that another evaluator wrote first (same open subject, or the
    same CO2 episode) wins: ON CONFLICT DO NOTHING, so a race is not an error."""
    values = {"kind": f.kind, "severity": SEVERITY[f.kind], "subject": f.subject, "device_id": f.device_id,
              "room_id": f.room_id, "school_id": f.school_id, "opened_at": f.opened_at,
              "last_seen_at": f.last_seen_at, "resolved_at": f.resolved_at, "detail": json.dumps(f.detail)}
    if conn.execute(_insert(conn).values(**values).on_conflict_do_nothing()).rowcount:
        out.opened += 1
        if f.resolved_at is not None:
            out.resolved += 1


def update(conn: Connection, alert_id: int, f: Finding, out: Outcome) -> None:
    """Bring an alert up to date: the condition still holds (or ended, with resolved_at)."""
    values = {"last_seen_at": f.last_seen_at, "detail": json.dumps(f.detail), "device_id": f.device_id,
              "room_id": f.room_id, "school_id": f.school_id}
    if f.resolved_at is not None:
        values["resolved_at"] = f.resolved_at
    n = conn.execute(alerts.update().where(alerts.c.id == alert_id, alerts.c.resolved_at.is_(None))
                     .values(**values)).rowcount
    if n and f.resolved_at is not None:
        out.resolved += 1
    elif n:
        out.updated += 1


def update_open_many(conn: Connection, found: list[tuple[int, Finding]], out: Outcome) -> None:
    """update() for many open alerts whose condition still holds, in one executemany:
    a province's offline rule brings ~95,000 alerts up to date a pass, and a statement
    built and sent per alert cost ~200 s of the ~290 s pass (bench/jobs.py)."""
    if not found:
        return
    a = alerts.c
    stmt = (alerts.update().where(a.id == bindparam("b_id"), a.resolved_at.is_(None))
            .values(last_seen_at=bindparam("b_last_seen_at"), detail=bindparam("b_detail"),
                    device_id=bindparam("b_device_id"), room_id=bindparam("b_room_id"),
                    school_id=bindparam("b_school_id")))
    params = [{"b_id": alert_id, "b_last_seen_at": f.last_seen_at, "b_detail": json.dumps(f.detail),
               "b_device_id": f.device_id, "b_room_id": f.room_id, "b_school_id": f.school_id}
              for alert_id, f in found]
    n = conn.execute(stmt, params).rowcount
    out.updated += n if conn.dialect.supports_sane_multi_rowcount and n >= 0 else len(params)


def resolve(conn: Connection, row: Any, resolved_at: float, out: Outcome, **detail: Any) -> None:
    """The condition of an open alert no longer holds; `detail` says why."""
    merged = {**json.loads(row.detail or "{}"), **detail}
    n = conn.execute(alerts.update().where(alerts.c.id == row.id, alerts.c.resolved_at.is_(None))
                     .values(resolved_at=max(resolved_at, row.opened_at), detail=json.dumps(merged))).rowcount
    out.resolved += n or 0


def upsert_open(conn: Connection, f: Finding, existing: Any | None, out: Outcome) -> None:
    if existing is None:
        insert(conn, f, out)
    else:
        update(conn, existing.id, f, out)


def detail_of(row: Any) -> dict[str, Any]:
    return json.loads(row.detail or "{}")
