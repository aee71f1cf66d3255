"""The audit log: who did what to which device, room, user or firmware, when and from
where. Append-only (the database refuses UPDATE and DELETE, migration 0009); record()
writes in the caller's transaction, so an entry exists exactly when the change does."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from fleet_server.auth.principal import Principal
from fleet_server.db.auth_schema import audit_log

MAX_DETAIL_CHARS = 4000


def record(conn: Connection, principal: Principal | None, action: str, target: tuple[str, Any] | None = None,
           detail: dict[str, Any] | None = None, ip: str | None = None, *, actor: str | None = None,
           now_s: float | None = None) -> None:
    """Add an entry (not committed: the caller commits it with the change). `actor`
    names someone who is not a principal yet (a failed login's username)."""
    kind, target_id = target if target is not None else (None, None)
    text = json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str) if detail else None
    if text is not None and len(text) > MAX_DETAIL_CHARS:
        text = text[:MAX_DETAIL_CHARS]
    conn.execute(audit_log.insert().values(
        at_s=time.time() if now_s is None else now_s,
        actor=(actor or (principal.username if principal else "anonymous"))[:64],
        actor_id=principal.user_id if principal else None, role=principal.role if principal else None,
        action=action, target_kind=kind, target_id=None if target_id is None else str(target_id)[:128],
        detail=text, ip=ip if ip is not None else (principal.ip if principal else None)))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _public(row: Any) -> dict[str, Any]:
    return {"id": row.id, "at": _iso(row.at_s), "actor": row.actor, "actor_id": row.actor_id, "role": row.role,
            "action": row.action, "target_kind": row.target_kind, "target_id": row.target_id,
            "detail": json.loads(row.detail) if row.detail else None, "ip": row.ip}


def _filtered(stmt, *, actor: str | None, action: str | None, target_kind: str | None, target_id: str | None,
              since_s: float | None, until_s: float | None):
    c = audit_log.c
    if actor is not None:
        stmt = stmt.where(c.actor == actor)
    if action is not None:
        # "device." matches every device action
        stmt = stmt.where(c.action.startswith(action) if action.endswith(".") else c.action == action)
    if target_kind is not None:
        stmt = stmt.where(c.target_kind == target_kind)
    if target_id is not None:
        stmt = stmt.where(c.target_id == target_id)
    if since_s is not None:
        stmt = stmt.where(c.at_s >= since_s)
    if until_s is not None:
        stmt = stmt.where(c.at_s < until_s)
    return stmt


def list_entries(conn: Connection, *, limit: int | None = 100, offset: int = 0, **filters: Any
                 ) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, newest first)."""
    total = conn.execute(_filtered(select(func.count()).select_from(audit_log), **filters)).scalar_one()
    rows = conn.execute(_filtered(select(audit_log), **filters)
                        .order_by(audit_log.c.at_s.desc(), audit_log.c.id.desc()).limit(limit).offset(offset))
    return total, [_public(r) for r in rows]


def csv_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "detail": json.dumps(e["detail"], ensure_ascii=False) if e["detail"] else ""} for e in entries]
