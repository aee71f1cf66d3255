"""What one window adds to the room-hour sums: the window split at school-local hour
boundaries and at the school-day edges, occupancy spread evenly over its span, the
environment figures against the DOMAIN.md thresholds, and its minutes as bitmaps."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from fleet_server.db.metrics_schema import ADDITIVE, MASKS
from fleet_server.metrics import definitions as d
from fleet_server.metrics.schooltime import SchoolHours

HourKey = tuple[int, date, int]      # room_id, school-local date, hour


@dataclass(slots=True)
class RoomContext:
    room_id: int
    school_id: int
    lux_factor: float
    hours: SchoolHours


_EMPTY: dict[str, Any] = {"windows": 0, "co2_max": None, **{name: 0.0 for name in ADDITIVE}}
_EMPTY_WITH_MASKS: dict[str, Any] = {**_EMPTY, **{name: 0 for name in MASKS}}


def empty_measures(*, masks: bool) -> dict[str, Any]:
    return (_EMPTY_WITH_MASKS if masks else _EMPTY).copy()


def merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    """Add `part` to `into` the way the database upsert does (sum, max, OR)."""
    into["windows"] += part["windows"]
    for name in ADDITIVE:
        into[name] += part[name]
    if part["co2_max"] is not None and (into["co2_max"] is None or part["co2_max"] > into["co2_max"]):
        into["co2_max"] = part["co2_max"]
    for name in MASKS:
        if name in into:
            into[name] |= part[name]


def add_window(hours: dict[HourKey, dict[str, Any]], w: Any, ctx: RoomContext) -> None:
    """Add the window to the room-hours it overlaps (`hours`: key -> measures plus
    school_id). `w` has the window's columns. Occupied seconds are spread evenly over
    the window; a 60 s window aligned to the minute never crosses an hour, so for the
    usual window nothing is approximated."""
    tz = ctx.hours.tz
    end = w.ts + w.win
    t = w.ts
    while t < end:
        local = datetime.fromtimestamp(t, tz)
        into_hour = local.minute * 60 + local.second
        b = min(end, t + 3600 - into_hour)
        part = b - t
        key = (ctx.room_id, local.date(), local.hour)
        m = hours.get(key)
        if m is None:
            m = hours[key] = empty_measures(masks=True)
            m["school_id"] = ctx.school_id
        school_start, school_end = ctx.hours.bounds(key[1])
        in_school = max(0, min(b, school_end) - max(t, school_start))
        occ = w.occupied_s * part / w.win            # occupied seconds in this part
        if t == w.ts:
            m["windows"] += 1                        # a window counts in the hour it starts
        m["observed_s"] += part
        m["occupied_s"] += occ
        m["in_school_observed_s"] += in_school
        m["in_school_occupied_s"] += w.occupied_s * in_school / w.win
        first_min, last_min = into_hour // 60, (into_hour + part - 1) // 60
        bits = ((1 << (last_min - first_min + 1)) - 1) << first_min
        m["observed_mask"] |= bits
        if w.occupied_s > 0:
            m["present_mask"] |= bits
        if 2 * w.occupied_s >= w.win:                # >= 30 of each minute's 60 seconds, spread evenly
            m["occupied_mask"] |= bits
        _environment(m, w, ctx, part, occ)
        t = b


def _environment(m: dict[str, Any], w: Any, ctx: RoomContext, part: int, occ: float) -> None:
    # DOMAIN.md "Environment thresholds": occupied time only, except noise, which is
    # judged on unoccupied windows only (GB 50118-2010 background noise).
    co2 = w.co2_ppm
    if co2 is not None:
        m["co2_sum"] += co2 * part
        m["co2_n_s"] += part
        if m["co2_max"] is None or co2 > m["co2_max"]:
            m["co2_max"] = co2
        if co2 > d.CO2_NOTICE_PPM:
            m["co2_over_1000_s"] += occ
        if co2 > d.CO2_BREACH_PPM:
            m["co2_over_1500_s"] += occ
    if w.temp_c is not None:
        m["temp_occ_s"] += occ
        if d.TEMP_BAND_C[0] <= w.temp_c <= d.TEMP_BAND_C[1]:
            m["temp_in_band_s"] += occ
    if w.rh_pct is not None:
        m["rh_occ_s"] += occ
        if d.RH_BAND_PCT[0] <= w.rh_pct <= d.RH_BAND_PCT[1]:
            m["rh_in_band_s"] += occ
    if w.lux is not None:
        m["lux_sum"] += w.lux * occ                 # ceiling lux; x lux_factor when reported
        m["lux_occ_s"] += occ
        if w.lux * ctx.lux_factor < d.DESK_LUX_MIN:
            m["lux_low_s"] += occ
    if w.noise_dba is not None and w.occupied_s == 0:
        m["noise_energy_sum"] += 10 ** (w.noise_dba / 10) * part
        m["noise_n_s"] += part
        if w.noise_dba > d.NOISE_UNOCCUPIED_MAX_DBA:
            m["noise_over_45_s"] += part
