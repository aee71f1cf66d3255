"""Room-hour rollups for the rooms whose reports the bench times: a node's 60 s windows
over a school-local day (lessons from the timetable, some unscheduled use, CO2 that
rises while a room is occupied), summed the way fleet_server/metrics/hour_buckets.py
adds windows. `check_against_rollup` proves the shortcut equals add_window."""
from __future__ import annotations

import random
from collections import namedtuple
from datetime import date
from typing import Any

from fleet_server.db.metrics_schema import ADDITIVE
from fleet_server.metrics import definitions as d
from fleet_server.metrics.hour_buckets import RoomContext, add_window
from fleet_server.metrics.schooltime import SchoolHours
from fleet_server.registry.demo_data import PERIODS

from bench.province_registry import local_ts

WIN_S = 60
SCHOOL_START_MIN, SCHOOL_END_MIN = 7 * 60 + 30, 17 * 60 + 30
Window = namedtuple("Window", "ts win occupied_s co2_ppm temp_c rh_pct lux noise_dba")


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:])


def day_windows(rng: random.Random, day: date, school_day: bool, classroom: bool) -> list[Window]:
    """One node's windows for one school-local day (24 h, a few minutes lost)."""
    occupied = [False] * 1440
    if school_day:
        if classroom:
            for start, end in PERIODS:
                if rng.random() < 0.8:                     # one booked period in five is a no-show
                    a, b = _minutes(start) + rng.randint(0, 3), _minutes(end) - rng.randint(0, 2)
                    occupied[a:b] = [True] * (b - a)
        for _ in range(rng.randint(0, 2) if classroom else rng.randint(1, 4)):
            a = rng.randint(12 * 60, 17 * 60)              # lunch-time and after-school use
            b = a + rng.randint(10, 45)
            occupied[a:b] = [True] * (b - a)
    lost = set()
    if rng.random() < 0.3:                                 # a short Wi-Fi gap on some days
        a = rng.randint(0, 1400)
        lost = set(range(a, a + rng.randint(1, 30)))
    base = local_ts(day)
    co2 = 450.0
    out = []
    for m in range(1440):
        occ = occupied[m]
        co2 = min(2200.0, co2 + 18.0) if occ else max(430.0, co2 - 0.08 * (co2 - 430.0))
        if m in lost:
            continue
        out.append(Window(base + 60 * m, WIN_S, 60 if occ else 0, int(co2), 24.0 + (1.5 if occ else 0.0),
                          55.0, 280.0 + 40 * (m % 7) if 6 * 60 <= m < 19 * 60 else 5.0,
                          46.0 if occ else 38.0 + (m % 11)))
    return out


def hour_rows(windows: list[Window], room_id: int, school_id: int, lux_factor: float, day: date) -> list[dict]:
    """The room-hour rows of one day of aligned 60 s windows: add_window's arithmetic,
    with the hour and school-day split known in advance (nothing crosses them)."""
    rows: dict[int, dict[str, Any]] = {}
    base = local_ts(day)
    for w in windows:
        m = (w.ts - base) // 60
        hour, minute = divmod(m, 60)
        r = rows.get(hour)
        if r is None:
            r = rows[hour] = {"room_id": room_id, "date": day, "hour": hour, "school_id": school_id, "windows": 0,
                              **{n: 0.0 for n in ADDITIVE}, "co2_max": None,
                              "observed_mask": 0, "present_mask": 0, "occupied_mask": 0}
        occ = w.occupied_s * WIN_S / w.win
        in_school = WIN_S if SCHOOL_START_MIN <= m < SCHOOL_END_MIN else 0
        r["windows"] += 1
        r["observed_s"] += WIN_S
        r["occupied_s"] += occ
        r["in_school_observed_s"] += in_school
        r["in_school_occupied_s"] += w.occupied_s * in_school / w.win
        bit = 1 << minute
        r["observed_mask"] |= bit
        if w.occupied_s > 0:
            r["present_mask"] |= bit
        if 2 * w.occupied_s >= w.win:
            r["occupied_mask"] |= bit
        r["co2_sum"] += w.co2_ppm * WIN_S
        r["co2_n_s"] += WIN_S
        if r["co2_max"] is None or w.co2_ppm > r["co2_max"]:
            r["co2_max"] = w.co2_ppm
        if w.co2_ppm > d.CO2_NOTICE_PPM:
            r["co2_over_1000_s"] += occ
        if w.co2_ppm > d.CO2_BREACH_PPM:
            r["co2_over_1500_s"] += occ
        r["temp_occ_s"] += occ
        if d.TEMP_BAND_C[0] <= w.temp_c <= d.TEMP_BAND_C[1]:
            r["temp_in_band_s"] += occ
        r["rh_occ_s"] += occ
        if d.RH_BAND_PCT[0] <= w.rh_pct <= d.RH_BAND_PCT[1]:
            r["rh_in_band_s"] += occ
        r["lux_sum"] += w.lux * occ
        r["lux_occ_s"] += occ
        if w.lux * lux_factor < d.DESK_LUX_MIN:
            r["lux_low_s"] += occ
        if w.occupied_s == 0:
            r["noise_energy_sum"] += 10 ** (w.noise_dba / 10) * WIN_S
            r["noise_n_s"] += WIN_S
            if w.noise_dba > d.NOISE_UNOCCUPIED_MAX_DBA:
                r["noise_over_45_s"] += WIN_S
    return [rows[h] for h in sorted(rows)]


def check_against_rollup(day: date) -> None:
    """The shortcut's rows for a busy school day equal the rollup's own add_window."""
    rng = random.Random(7)
    windows = day_windows(rng, day, True, True)
    ctx = RoomContext(1, 1, 0.9, SchoolHours(1, "Asia/Shanghai", "07:30", "17:30", 0b11111))
    real: dict = {}
    for w in windows:
        add_window(real, w, ctx)
    ours = {(1, r["date"], r["hour"]): r for r in hour_rows(windows, 1, 1, 0.9, day)}
    assert set(real) == set(ours), "hours differ"
    for key, m in real.items():
        mine = {k: v for k, v in ours[key].items() if k not in ("room_id", "date", "hour")}
        assert m == mine, f"room-hour {key} differs:\n{m}\n{mine}"
