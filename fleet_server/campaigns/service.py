"""Campaigns as the API and the pages see them: create one, list and read them with
their per-state counts, the per-device states and every transition, and pause, resume or
abort. The engine (engine.py) moves them forward."""
from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from fleet_server.campaigns import model as m
from fleet_server.campaigns.targets import Target, resolve, rollout_order
from fleet_server.db.campaign_schema import ota_campaign_devices as cd, ota_campaign_events as ev, ota_campaigns as oc
from fleet_server.firmware_release import store
from fleet_server.services.devices import iso


class CampaignError(Exception):
    """A request the campaign's state or the target refuses (HTTP 409 / 422)."""


class NotFound(LookupError):
    pass


def create(conn: Connection, *, name: str, version: str, target: Target, waves: list[float] | None = None,
           success_pct: float = m.DEFAULT_SUCCESS_PCT, max_failure_pct: float = m.DEFAULT_MAX_FAILURE_PCT,
           wave_timeout_s: int = m.DEFAULT_WAVE_TIMEOUT_S, command_ttl_s: int = m.DEFAULT_COMMAND_TTL_S,
           base_url: str, created_by: str, now_s: float) -> dict:
    """Resolves the target now (devices registered later are not added), orders it and
    splits it into waves. Raises BadTarget (a ValueError) or CampaignError."""
    waves = m.check_waves(list(waves or m.DEFAULT_WAVES))
    if store.get_release(conn, version) is None:
        raise CampaignError(f"no release {version}: upload it first (campusfleet firmware upload)")
    salt = uuid.uuid4().hex
    chosen = rollout_order(resolve(conn, target), salt, target.percent)
    if not chosen:
        raise CampaignError("the target has no devices")
    ids = [d for d, _ in chosen]
    busy = []
    for i in range(0, len(ids), 500):
        busy += conn.execute(
            select(cd.c.device_id).join(oc, oc.c.id == cd.c.campaign_id)
            .where(oc.c.state.in_(m.ACTIVE), cd.c.device_id.in_(ids[i:i + 500]),
                   cd.c.state.not_in(m.FINAL))).scalars().all()
    if busy:
        raise CampaignError(f"{len(busy)} of these devices are in another active campaign "
                            f"(e.g. {', '.join(sorted(busy)[:5])}): pause or abort it first")
    cumulative = m.wave_sizes(len(chosen), waves)
    campaign_id = conn.execute(insert(oc).values(
        name=name, version=version, target=json.dumps(target.as_json()), waves=json.dumps(waves),
        success_pct=success_pct, max_failure_pct=max_failure_pct, wave_timeout_s=wave_timeout_s,
        command_ttl_s=command_ttl_s, base_url=base_url, state=m.RUNNING, reason=None, wave=0, devices=len(chosen),
        created_s=now_s, created_by=created_by, updated_s=now_s, finished_s=None)).inserted_primary_key[0]
    rows, wave = [], 0
    for position, (device_id, fw) in enumerate(chosen):
        while position >= cumulative[wave]:
            wave += 1
        already = fw == version
        rows.append({"campaign_id": campaign_id, "device_id": device_id, "wave": wave, "position": position,
                     "state": m.SKIPPED if already else m.PENDING,
                     "reason": "already on this version" if already else None, "cmd_id": None, "pct": None,
                     "fw_before": fw, "sent_s": None, "updated_s": now_s})
    for i in range(0, len(rows), 1000):
        conn.execute(insert(cd), rows[i:i + 1000])
    log_event(conn, campaign_id, None, m.RUNNING,
              f"created by {created_by}: {len(chosen)} devices in {len(waves)} waves", now_s)
    return get(conn, campaign_id)


def in_active_campaign(conn: Connection, device_id: str) -> bool:
    """Whether a running or paused campaign has this device and is not done with it."""
    return conn.execute(select(cd.c.device_id).join(oc, oc.c.id == cd.c.campaign_id)
                        .where(oc.c.state.in_(m.ACTIVE), cd.c.device_id == device_id,
                               cd.c.state.not_in(m.FINAL)).limit(1)).first() is not None


def log_event(conn: Connection, campaign_id: int, device_id: str | None, state: str, reason: str | None,
              at_s: float) -> None:
    conn.execute(insert(ev).values(campaign_id=campaign_id, device_id=device_id, state=state,
                                   reason=reason, at_s=at_s))


def _counts(conn: Connection, campaign_ids: list[int]) -> dict[int, dict]:
    """Per campaign: counts by state, and per wave: size and counts by state."""
    out: dict[int, dict] = {c: {"by_state": {s: 0 for s in m.DEVICE_STATES}, "waves": {}} for c in campaign_ids}
    if not campaign_ids:
        return out
    rows = conn.execute(select(cd.c.campaign_id, cd.c.wave, cd.c.state, func.count())
                        .where(cd.c.campaign_id.in_(campaign_ids))
                        .group_by(cd.c.campaign_id, cd.c.wave, cd.c.state))
    for campaign_id, wave, state, n in rows:
        c = out[campaign_id]
        c["by_state"][state] += n
        c["waves"].setdefault(wave, {s: 0 for s in m.DEVICE_STATES})[state] += n
    return out


def _public(row: Any, counts: dict) -> dict:
    waves = json.loads(row.waves)
    by_state = counts["by_state"]
    sent = sum(n for s, n in by_state.items() if s not in (m.PENDING, m.CANCELLED, m.SKIPPED))
    failures = sum(by_state[s] for s in m.FAILURE)
    per_wave = []
    for i, pct in enumerate(waves):
        states = counts["waves"].get(i, {s: 0 for s in m.DEVICE_STATES})
        size = sum(states.values())
        per_wave.append({"wave": i + 1, "cumulative_pct": pct, "devices": size,
                         "success": sum(states[s] for s in m.SUCCESS), "failures": sum(states[s] for s in m.FAILURE),
                         "by_state": {s: n for s, n in states.items() if n}})
    return {
        "id": row.id, "name": row.name, "version": row.version, "target": json.loads(row.target),
        "waves": waves, "success_pct": row.success_pct, "max_failure_pct": row.max_failure_pct,
        "wave_timeout_s": row.wave_timeout_s, "command_ttl_s": row.command_ttl_s, "base_url": row.base_url,
        "state": row.state, "reason": row.reason, "current_wave": row.wave + 1, "devices": row.devices,
        "by_state": by_state, "sent": sent, "failures": failures,
        "per_wave": per_wave, "created": iso(row.created_s), "created_by": row.created_by,
        "updated": iso(row.updated_s), "finished": iso(row.finished_s),
    }


def get(conn: Connection, campaign_id: int) -> dict:
    row = conn.execute(select(oc).where(oc.c.id == campaign_id)).first()
    if row is None:
        raise NotFound(f"no campaign {campaign_id}")
    return _public(row, _counts(conn, [campaign_id])[campaign_id])


def list_campaigns(conn: Connection, *, state: str | None = None, limit: int = 50, offset: int = 0) -> dict:
    query = select(oc)
    total = select(func.count()).select_from(oc)
    if state is not None:
        query, total = query.where(oc.c.state == state), total.where(oc.c.state == state)
    rows = conn.execute(query.order_by(oc.c.id.desc()).limit(limit).offset(offset)).all()
    counts = _counts(conn, [r.id for r in rows])
    return {"total": conn.execute(total).scalar_one(), "limit": limit, "offset": offset,
            "items": [_public(r, counts[r.id]) for r in rows]}


def devices(conn: Connection, campaign_id: int, *, state: str | None = None, wave: int | None = None,
            limit: int | None = 100, offset: int = 0) -> dict:
    get(conn, campaign_id)  # NotFound
    query = select(cd).where(cd.c.campaign_id == campaign_id)
    total = select(func.count()).select_from(cd).where(cd.c.campaign_id == campaign_id)
    if state is not None:
        query, total = query.where(cd.c.state == state), total.where(cd.c.state == state)
    if wave is not None:
        query, total = query.where(cd.c.wave == wave - 1), total.where(cd.c.wave == wave - 1)
    rows = conn.execute(query.order_by(cd.c.position).limit(limit).offset(offset))
    return {"total": conn.execute(total).scalar_one(), "limit": limit, "offset": offset, "items": [{
        "device_id": r.device_id, "wave": r.wave + 1, "state": r.state, "reason": r.reason, "pct": r.pct,
        "cmd_id": r.cmd_id, "fw_before": r.fw_before, "sent": iso(r.sent_s), "updated": iso(r.updated_s),
    } for r in rows]}


def events(conn: Connection, campaign_id: int, *, device_id: str | None = None, after_id: int = 0,
           limit: int | None = 500) -> list[dict]:
    """Every transition, oldest first: the campaign's (device_id null) and its devices'."""
    get(conn, campaign_id)  # NotFound
    query = select(ev).where(ev.c.campaign_id == campaign_id, ev.c.id > after_id)
    if device_id is not None:
        query = query.where(ev.c.device_id == device_id)
    rows = conn.execute(query.order_by(ev.c.id).limit(limit))
    return [{"id": r.id, "device_id": r.device_id, "state": r.state, "reason": r.reason, "at": iso(r.at_s)}
            for r in rows]


def set_state(conn: Connection, campaign_id: int, action: str, *, by: str, now_s: float) -> dict:
    """pause (running -> paused), resume (paused -> running) or abort (running or paused
    -> aborted; devices not yet sent are cancelled, updates already under way finish and
    are still tracked). Raises NotFound or CampaignError."""
    current = get(conn, campaign_id)["state"]
    moves = {"pause": ((m.RUNNING,), m.PAUSED), "resume": ((m.PAUSED,), m.RUNNING),
             "abort": (m.ACTIVE, m.ABORTED)}
    allowed_from, to = moves[action]
    if current not in allowed_from:
        hint = " (a halted campaign is not resumed: start a new one)" if current == m.HALTED else ""
        raise CampaignError(f"cannot {action} a {current} campaign{hint}")
    end(conn, campaign_id, to, f"{action} by {by}", now_s) if to == m.ABORTED else _move(
        conn, campaign_id, to, f"{action} by {by}", now_s)
    return get(conn, campaign_id)


def _move(conn: Connection, campaign_id: int, state: str, reason: str, now_s: float) -> None:
    conn.execute(update(oc).where(oc.c.id == campaign_id).values(state=state, reason=reason, updated_s=now_s))
    log_event(conn, campaign_id, None, state, reason, now_s)


def end(conn: Connection, campaign_id: int, state: str, reason: str, now_s: float) -> None:
    """halted, aborted or completed: the devices never sent are cancelled."""
    conn.execute(update(oc).where(oc.c.id == campaign_id)
                 .values(state=state, reason=reason, updated_s=now_s, finished_s=now_s))
    log_event(conn, campaign_id, None, state, reason, now_s)
    pending = conn.execute(select(cd.c.device_id).where(cd.c.campaign_id == campaign_id,
                                                        cd.c.state == m.PENDING)).scalars().all()
    if pending:
        conn.execute(update(cd).where(cd.c.campaign_id == campaign_id, cd.c.state == m.PENDING)
                     .values(state=m.CANCELLED, reason=f"campaign {state}", updated_s=now_s))
        conn.execute(insert(ev), [{"campaign_id": campaign_id, "device_id": d, "state": m.CANCELLED,
                                   "reason": f"campaign {state}", "at_s": now_s} for d in pending])
