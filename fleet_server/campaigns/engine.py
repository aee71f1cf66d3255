"""The campaign engine: every few seconds it reads the progress nodes acked, moves each
device's state forward (logging every transition), fails devices that took too long,
halts a campaign whose failures exceed its limit, advances to the next wave once the
current one has finished well enough, and sends the `ota` command to the devices of the
current wave (at most `max_in_flight` updates at once per campaign, and at most
`max_per_school` in one school, whose nodes share an uplink).

`tick(conn, now_s)` is one pass in the caller's transaction and returns the commands to
publish after the commit (so a fast ack always finds its command, as in the devices
API); `CampaignJob` runs it in the server and publishes through ingest's MQTT client."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, and_, func, select, text, update

from fleet_server.campaigns import model as m
from fleet_server.campaigns.service import end, log_event
from fleet_server.db.campaign_schema import (command_progress as cp, ota_campaign_devices as cd,
                                             ota_campaigns as oc)
from fleet_server.db.registry_schema import rooms
from fleet_server.db.schema import commands, devices
from fleet_server.firmware_release import store
from fleet_server.periodic import PeriodicJob
from fleet_server.services.devices import delete_command, new_command, record_command

log = logging.getLogger(__name__)
_LOCK_ID = 0x43664F74  # "CfOt": PostgreSQL advisory lock, one engine pass at a time
DEFAULT_MAX_IN_FLIGHT = 200
DEFAULT_MAX_PER_SCHOOL = 10


@dataclass
class TickResult:
    transitions: int = 0
    sent: list[tuple[int, str, dict]] = field(default_factory=list)   # (campaign, device, command)


def tick(conn: Connection, now_s: float, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
         max_per_school: int | None = DEFAULT_MAX_PER_SCHOOL, can_send: bool = True) -> TickResult:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    result = TickResult()
    tracked = conn.execute(
        select(oc).where(oc.c.id.in_(select(cd.c.campaign_id).where(cd.c.state.in_(m.IN_FLIGHT)))
                         | oc.c.state.in_(m.ACTIVE)).order_by(oc.c.id)).all()
    for c in tracked:
        result.transitions += _sync(conn, c, now_s)
        if c.state != m.RUNNING:
            continue
        if _over_failure_limit(conn, c, now_s) or not _advance(conn, c, now_s):
            continue
        if can_send:
            result.sent += _send(conn, c, now_s, max_in_flight, max_per_school)
    return result


def _sync(conn: Connection, c, now_s: float) -> int:
    """Moves the campaign's in-flight devices forward from their acks; returns how many
    transitions were logged."""
    flying = {r.device_id: r for r in conn.execute(
        select(cd.c.device_id, cd.c.state, cd.c.cmd_id, cd.c.sent_s, cd.c.pct)
        .where(cd.c.campaign_id == c.id, cd.c.state.in_(m.IN_FLIGHT)))}
    if not flying:
        return 0
    stages: dict[str, list] = {}
    for r in conn.execute(select(cp).join(cd, and_(cd.c.device_id == cp.c.device_id, cd.c.cmd_id == cp.c.cmd_id))
                          .where(cd.c.campaign_id == c.id, cd.c.state.in_(m.IN_FLIGHT))):
        stages.setdefault(r.device_id, []).append(r)
    # An ack without progress that refuses the command itself (expired, bad_args,
    # no_ota_pubkey, busy: PROTOCOL.md).
    refused = {r.device_id: r.err for r in conn.execute(
        select(commands.c.device_id, commands.c.err)
        .join(cd, and_(cd.c.device_id == commands.c.device_id, cd.c.cmd_id == commands.c.cmd_id))
        .where(cd.c.campaign_id == c.id, cd.c.state.in_(m.IN_FLIGHT), commands.c.ok.is_(False)))}
    logged = 0
    for device_id, dev in flying.items():
        steps = []   # (state, reason, pct) in order
        for r in sorted(stages.get(device_id, ()), key=lambda r: (m.RANK[m.STAGE_STATE[r.stage]], r.acked_s)):
            state = m.STAGE_STATE[r.stage]
            if r.stage == "confirmed" and r.fw is not None and r.fw != c.version:
                state, reason = m.FAILED, f"confirmed {r.fw}, not {c.version}"
            else:
                reason = r.err if state in m.FAILURE else (f"{r.pct} %" if r.pct is not None else None)
            steps.append((state, reason, r.pct))
        if not any(s in m.FINAL for s, _, _ in steps) and device_id in refused:
            steps.append((m.FAILED, refused[device_id] or "refused", None))
        if not any(s in m.FINAL for s, _, _ in steps) and dev.sent_s is not None \
                and now_s - dev.sent_s > c.wave_timeout_s:
            steps.append((m.FAILED, f"timeout: no result {c.wave_timeout_s} s after the command", None))
        state, pct = dev.state, dev.pct
        for new_state, reason, new_pct in steps:
            if new_pct is not None:
                pct = new_pct
            if m.RANK[new_state] <= m.RANK[state]:
                continue
            # A node acks each stage once and does not repeat a progress ack lost with its
            # link; a later stage proves the earlier ones happened (installed needs a
            # verified manifest): log them, saying so.
            for implied in m.IMPLIED.get(new_state, ()):
                if m.RANK[state] < m.RANK[implied]:
                    log_event(conn, c.id, device_id, implied, f"implied by {new_state} (its ack did not arrive)",
                              now_s)
                    logged += 1
                    state = implied
            state = new_state
            log_event(conn, c.id, device_id, state, reason, now_s)
            logged += 1
            final_reason = reason if state in m.FAILURE else None
            conn.execute(update(cd).where(cd.c.campaign_id == c.id, cd.c.device_id == device_id)
                         .values(state=state, reason=final_reason, pct=pct, updated_s=now_s))
            if state in m.FINAL:
                break
        if state == dev.state and pct != dev.pct:
            conn.execute(update(cd).where(cd.c.campaign_id == c.id, cd.c.device_id == device_id)
                         .values(pct=pct, updated_s=now_s))
    return logged


def _count(conn: Connection, c, *where) -> int:
    return conn.execute(select(func.count()).select_from(cd).where(cd.c.campaign_id == c.id, *where)).scalar_one()


def _over_failure_limit(conn: Connection, c, now_s: float) -> bool:
    """Halts the campaign when failures exceed max_failure_pct of the devices sent."""
    failures = _count(conn, c, cd.c.state.in_(m.FAILURE))
    if not failures:
        return False
    sent = _count(conn, c, cd.c.state.not_in((m.PENDING, m.CANCELLED, m.SKIPPED)))
    if failures * 100 <= c.max_failure_pct * sent:
        return False
    end(conn, c.id, m.HALTED, f"{failures} of {sent} devices sent failed or rolled back "
                              f"(limit {c.max_failure_pct:g} %)", now_s)
    return True


def _advance(conn: Connection, c, now_s: float) -> bool:
    """Moves past every finished wave that did well enough; False if the campaign ended
    (halted on a wave below success_pct, or completed)."""
    waves = json.loads(c.waves)
    wave = c.wave
    while True:
        unfinished = _count(conn, c, cd.c.wave <= wave, cd.c.state.not_in(m.FINAL))
        if unfinished:
            break
        size = _count(conn, c, cd.c.wave == wave)
        success = _count(conn, c, cd.c.wave == wave, cd.c.state.in_(m.SUCCESS))
        if size and success * 100 < c.success_pct * size:
            end(conn, c.id, m.HALTED, f"wave {wave + 1}: {success} of {size} confirmed, below "
                                      f"{c.success_pct:g} %", now_s)
            return False
        if wave + 1 >= len(waves):
            end(conn, c.id, m.COMPLETED, f"{_count(conn, c, cd.c.state.in_(m.SUCCESS))} of {c.devices} "
                                         "devices on the release", now_s)
            return False
        wave += 1
        log_event(conn, c.id, None, "wave", f"wave {wave + 1} of {len(waves)} started "
                                            f"({_count(conn, c, cd.c.wave == wave)} devices)", now_s)
    if wave != c.wave:
        conn.execute(update(oc).where(oc.c.id == c.id).values(wave=wave, updated_s=now_s))
    return True


def _school_of():
    return (select(cd.c.device_id, rooms.c.school_id)
            .select_from(cd.join(devices, devices.c.device_id == cd.c.device_id)
                         .outerjoin(rooms, rooms.c.id == devices.c.room_id)))


def _send(conn: Connection, c, now_s: float, max_in_flight: int,
          max_per_school: int | None = None) -> list[tuple[int, str, dict]]:
    room = max_in_flight - _count(conn, c, cd.c.state.in_(m.IN_FLIGHT))
    if room <= 0:
        return []
    wave = conn.execute(select(oc.c.wave).where(oc.c.id == c.id)).scalar_one()
    query = _school_of().where(cd.c.campaign_id == c.id, cd.c.wave <= wave, cd.c.state == m.PENDING) \
        .order_by(cd.c.position)
    if max_per_school is None:
        todo = [r.device_id for r in conn.execute(query.limit(room))]
    else:
        # A school's uplink carries its own nodes' downloads: at most max_per_school at
        # once (each paced to firmware_download_bps), the others wait for a later pass.
        busy: dict = {}
        for r in conn.execute(_school_of().where(cd.c.campaign_id == c.id, cd.c.state.in_(m.IN_FLIGHT))):
            busy[r.school_id] = busy.get(r.school_id, 0) + 1
        todo = []
        for r in conn.execute(query):
            if r.school_id is not None and busy.get(r.school_id, 0) >= max_per_school:
                continue
            busy[r.school_id] = busy.get(r.school_id, 0) + 1
            todo.append(r.device_id)
            if len(todo) >= room:
                break
    if not todo:
        return []
    release = store.get_release(conn, c.version)
    if release is None:
        end(conn, c.id, m.HALTED, f"release {c.version} is gone from the server", now_s)
        return []
    args = store.ota_args(release, c.base_url)
    out = []
    for device_id in todo:
        cmd = new_command("ota", args, exp=int(now_s) + c.command_ttl_s)
        record_command(conn, device_id=device_id, cmd=cmd, created_s=now_s)
        conn.execute(update(cd).where(cd.c.campaign_id == c.id, cd.c.device_id == device_id)
                     .values(state=m.SENT, cmd_id=cmd["id"], sent_s=now_s, updated_s=now_s))
        log_event(conn, c.id, device_id, m.SENT, f"command {cmd['id']}", now_s)
        out.append((c.id, device_id, cmd))
    return out


def unsend(conn: Connection, campaign_id: int, device_id: str, cmd_id: str, why: str, now_s: float) -> None:
    """A command that could not be published goes back to pending (sent next pass)."""
    delete_command(conn, device_id=device_id, cmd_id=cmd_id)
    conn.execute(update(cd).where(cd.c.campaign_id == campaign_id, cd.c.device_id == device_id,
                                  cd.c.cmd_id == cmd_id)
                 .values(state=m.PENDING, cmd_id=None, sent_s=None, updated_s=now_s))
    log_event(conn, campaign_id, device_id, m.PENDING, f"not sent: {why}", now_s)


class CampaignJob(PeriodicJob):
    """tick() every interval_s; publishes the commands it made with `publish`
    (MqttIngest.publish_command), or sends nothing while there is no MQTT link."""

    name = "campaigns"

    def __init__(self, engine: Engine, publish: Callable[[str, dict], None] | None, *,
                 interval_s: float = 5.0, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 max_per_school: int | None = DEFAULT_MAX_PER_SCHOOL) -> None:
        super().__init__(interval_s)
        self.engine = engine
        self.publish = publish
        self.max_in_flight = max_in_flight
        self.max_per_school = max_per_school

    def run_once(self) -> TickResult:
        now = time.time()
        with self.engine.begin() as conn:
            result = tick(conn, now, max_in_flight=self.max_in_flight, max_per_school=self.max_per_school,
                          can_send=self.publish is not None)
        for campaign_id, device_id, cmd in result.sent:
            try:
                self.publish(device_id, cmd)
            except ConnectionError as e:
                with self.engine.begin() as conn:
                    unsend(conn, campaign_id, device_id, cmd["id"], str(e), time.time())
        return result
