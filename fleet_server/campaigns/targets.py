"""Which devices a campaign reaches, and in which order: the target (every device, a
region, a school, or a list), optionally a percentage of it, ordered by a hash of the
campaign's salt and the device id so every wave is a spread across schools, not the
first rooms of one school."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from sqlalchemy import Connection, select

from fleet_server.db.registry_schema import rooms, schools
from fleet_server.db.schema import devices
from fleet_server.services.devices import region_counties

SCOPES = ("all", "region", "school", "devices")


class BadTarget(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    scope: str
    region: int | None = None
    school_id: int | None = None
    devices: tuple[str, ...] = ()
    percent: float = 100.0

    def as_json(self) -> dict:
        out: dict = {"scope": self.scope, "percent": self.percent}
        if self.scope == "region":
            out["region"] = self.region
        elif self.scope == "school":
            out["school_id"] = self.school_id
        elif self.scope == "devices":
            out["devices"] = list(self.devices)
        return out

    @classmethod
    def from_json(cls, doc: dict) -> Target:
        return cls(doc["scope"], doc.get("region"), doc.get("school_id"), tuple(doc.get("devices") or ()),
                   float(doc.get("percent", 100.0)))


def resolve(conn: Connection, target: Target) -> list[tuple[str, str | None]]:
    """(device_id, fw) of every device the target covers, before the percentage; raises
    BadTarget for an unknown region, school or device."""
    if target.scope not in SCOPES:
        raise BadTarget(f"scope must be one of {', '.join(SCOPES)}")
    if not 0 < target.percent <= 100:
        raise BadTarget("percent must be above 0 and at most 100")
    query = select(devices.c.device_id, devices.c.fw)
    if target.scope == "region":
        if target.region is None:
            raise BadTarget("a region target needs `region` (a GB/T 2260 code)")
        try:
            counties = region_counties(conn, target.region)
        except LookupError:
            raise BadTarget(f"no region {target.region}") from None
        query = (query.join(rooms, rooms.c.id == devices.c.room_id).join(schools, schools.c.id == rooms.c.school_id)
                 .where(schools.c.county_code.in_(counties)))
    elif target.scope == "school":
        if target.school_id is None:
            raise BadTarget("a school target needs `school_id`")
        if conn.execute(select(schools.c.id).where(schools.c.id == target.school_id)).first() is None:
            raise BadTarget(f"no school {target.school_id}")
        query = query.join(rooms, rooms.c.id == devices.c.room_id).where(rooms.c.school_id == target.school_id)
    elif target.scope == "devices":
        wanted = set(target.devices)
        if not wanted:
            raise BadTarget("a devices target needs a non-empty `devices` list")
        query = query.where(devices.c.device_id.in_(sorted(wanted)))
    found = [(r.device_id, r.fw) for r in conn.execute(query)]
    if target.scope == "devices":
        missing = set(target.devices) - {d for d, _ in found}
        if missing:
            raise BadTarget(f"unknown devices: {', '.join(sorted(missing)[:10])}")
    return found


def rollout_order(found: list[tuple[str, str | None]], salt: str, percent: float) -> list[tuple[str, str | None]]:
    """The devices in rollout order, cut to `percent` of them (at least one)."""
    ordered = sorted(found, key=lambda d: hashlib.sha256(f"{salt}:{d[0]}".encode()).digest())
    if percent < 100 and ordered:
        ordered = ordered[:max(1, math.ceil(percent * len(ordered) / 100 - 1e-9))]
    return ordered
