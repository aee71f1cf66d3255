"""A deterministic demo registry: the Zhejiang regions, ~300 synthetic schools over the
90 counties with rooms, a standard timetable per classroom and the 2026 public holidays,
written as CSV and loaded through the real importer (the path users take)."""
from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterable

from sqlalchemy import Connection

from fleet_server.registry.importer import COLUMNS, ImportResult, import_csv
from fleet_server.registry.service import load_regions, read_regions_csv

DEMO_SEED = 2026
DEMO_SCHOOLS = 300
ROOMS_PER_SCHOOL = (10, 40)

# firmware/hw/scenario.py PERIODS: the typical Zhejiang 40-minute periods.
PERIODS = (("08:00", "08:40"), ("08:50", "09:30"), ("09:50", "10:30"), ("10:40", "11:20"),
           ("11:30", "12:10"), ("13:30", "14:10"), ("14:20", "15:00"), ("15:10", "15:50"),
           ("16:00", "16:40"))

# 国务院办公厅关于2026年部分节假日安排的通知 (State Council General Office, published by
# Xinhua 2025-11-04): days off, and the weekend days worked in exchange (调休上班).
HOLIDAYS_2026 = (
    ("元旦", "2026-01-01", "2026-01-03", ("2026-01-04",)),
    ("春节", "2026-02-15", "2026-02-23", ("2026-02-14", "2026-02-28")),
    ("清明节", "2026-04-04", "2026-04-06", ()),
    ("劳动节", "2026-05-01", "2026-05-05", ("2026-05-09",)),
    ("端午节", "2026-06-19", "2026-06-21", ()),
    ("中秋节", "2026-09-25", "2026-09-27", ()),
    ("国庆节", "2026-10-01", "2026-10-07", ("2026-09-20", "2026-10-10")),
)

_STAGE_WEIGHTS = {"primary": 50, "junior": 25, "senior": 10, "nine_year": 8, "twelve_year": 2, "vocational": 5}
_STAGE_SUFFIX = {"primary": "小学", "junior": "初级中学", "senior": "高级中学", "nine_year": "实验学校",
                 "twelve_year": "外国语学校", "vocational": "职业技术学校"}
_GRADES = {
    "primary": ("一年级", "二年级", "三年级", "四年级", "五年级", "六年级"),
    "junior": ("七年级", "八年级", "九年级"),
    "senior": ("高一", "高二", "高三"),
    "nine_year": ("一年级", "二年级", "三年级", "四年级", "五年级", "六年级", "七年级", "八年级", "九年级"),
    "twelve_year": ("一年级", "三年级", "五年级", "七年级", "九年级", "高一", "高二", "高三"),
    "vocational": ("一年级", "二年级", "三年级"),
}
# type: (names, capacity range, floor area range m2, teaching space)
_SPECIAL_ROOMS = {
    "lab": (("科学实验室", "物理实验室", "化学实验室", "生物实验室"), (40, 50), (86, 96), True),
    "library": (("图书馆",), (60, 120), (180, 260), False),
    "computer_room": (("计算机教室",), (45, 55), (86, 100), True),
    "art_music": (("音乐教室", "美术教室", "舞蹈教室"), (40, 50), (80, 100), True),
    "gym": (("室内体育馆",), (120, 240), (600, 900), True),
    "new_style": (("智慧教室", "未来教室", "创客空间", "录播教室"), (30, 60), (80, 120), True),
}
_DIGITS = "零一二三四五六七八九"
_CITY_WEIGHT = {330100: 3.0, 330200: 2.5, 330300: 2.5}   # the three big cities get more schools


def chinese_number(n: int) -> str:
    """1..99 as written in school names: 一, 十, 十二, 二十, 二十三."""
    tens, ones = divmod(n, 10)
    if tens == 0:
        return _DIGITS[ones]
    return ("" if tens == 1 else _DIGITS[tens]) + "十" + (_DIGITS[ones] if ones else "")


def _csv_text(kind: str, rows: Iterable[dict]) -> str:
    required, optional = COLUMNS[kind]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(required + optional), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _spread_schools(rng: random.Random, counties: list[dict], n_schools: int) -> list[dict]:
    """At least one school per county while there are enough, the rest weighted
    towards the big cities' districts."""
    picks = list(counties[:n_schools])
    weights = [_CITY_WEIGHT.get(c["parent_code"], 1.0) for c in counties]
    picks += rng.choices(counties, weights=weights, k=max(0, n_schools - len(picks)))
    return sorted(picks, key=lambda c: c["code"])


def _school_rows(rng: random.Random, n_schools: int) -> list[dict]:
    regions = read_regions_csv()
    cities = {r["code"]: r for r in regions if r["level"] == "city"}
    counties = [r for r in regions if r["level"] == "county"]
    serial: dict[tuple[int, str], int] = {}
    per_county: dict[int, int] = {}
    schools = []
    for county in _spread_schools(rng, counties, n_schools):
        stage = rng.choices(list(_STAGE_WEIGHTS), weights=list(_STAGE_WEIGHTS.values()))[0]
        number = serial[(county["code"], stage)] = serial.get((county["code"], stage), 0) + 1
        per_county[county["code"]] = per_county.get(county["code"], 0) + 1
        # Districts (区) are named with their city (杭州市西湖区), counties and county-level
        # cities stand alone (桐庐县, 建德市), as real school names are.
        prefix = county["name_zh"]
        if prefix.endswith("区"):
            prefix = cities[county["parent_code"]]["name_zh"] + prefix
        schools.append({
            "code": f"D{county['code']}{per_county[county['code']]:02d}",
            "name": f"{prefix}第{chinese_number(number)}{_STAGE_SUFFIX[stage]}",
            "county_code": county["code"], "stage": stage,
            "day_start": "07:30", "day_end": "17:30", "weekdays": "12345",
        })
    return schools


def _room_rows(rng: random.Random, school: dict) -> list[dict]:
    n_rooms = rng.randint(*ROOMS_PER_SCHOOL)
    stage = school["stage"]
    specials = ["library", "computer_room"] + ["lab"] * rng.randint(1, 2 if stage == "primary" else 4)
    specials += ["art_music"] * rng.randint(1, 2) + ["gym"] * rng.randint(0, 1)
    specials += ["new_style"] * rng.choice((0, 0, 1, 1, 2, 3))
    specials = specials[:n_rooms - 6]           # small schools keep at least six classrooms
    rows = []
    grades = _GRADES[stage]
    for i in range(n_rooms - len(specials)):
        floor, slot = divmod(i, 6)
        rows.append({"school_code": school["code"], "room_code": f"A{floor + 1}{slot + 1:02d}",
                     "name": f"{grades[i % len(grades)]}({i // len(grades) + 1})班", "type": "classroom",
                     "building_code": "A", "building_name": "教学楼",
                     "capacity": rng.randint(40, 45 if stage == "primary" else 50),
                     "floor_area_m2": rng.randint(60, 75), "new_style": "0",
                     "lux_factor": f"{rng.uniform(0.8, 1.25):.2f}", "teaching_space": "1"})
    used: dict[str, int] = {}
    for i, room_type in enumerate(specials):
        names, capacity, area_m2, teaching = _SPECIAL_ROOMS[room_type]
        k = used[room_type] = used.get(room_type, 0) + 1
        name = names[(k - 1) % len(names)] + (str((k - 1) // len(names) + 1) if k > len(names) else "")
        rows.append({"school_code": school["code"], "room_code": f"B{i // 8 + 1}{i % 8 + 1:02d}",
                     "name": name, "type": room_type, "building_code": "B", "building_name": "综合楼",
                     "capacity": rng.randint(*capacity), "floor_area_m2": rng.randint(*area_m2),
                     "new_style": "1" if room_type == "new_style" else "0",
                     "lux_factor": f"{rng.uniform(0.8, 1.25):.2f}", "teaching_space": "1" if teaching else "0"})
    return rows


def _timetable_rows(rooms: list[dict]) -> Iterable[dict]:
    for room in rooms:
        if room["type"] != "classroom":
            continue
        for weekday in range(1, 6):          # ISO weekdays Monday to Friday
            for n, (start, end) in enumerate(PERIODS, 1):
                yield {"school_code": room["school_code"], "room_code": room["room_code"],
                       "weekday": weekday, "start": start, "end": end, "label": f"第{n}节"}


def _calendar_rows() -> Iterable[dict]:
    from datetime import date, timedelta
    for name, first, last, workdays in HOLIDAYS_2026:
        day, end = date.fromisoformat(first), date.fromisoformat(last)
        while day <= end:
            yield {"date": day.isoformat(), "kind": "holiday", "school_code": "", "label": name}
            day += timedelta(days=1)
        for workday in workdays:
            yield {"date": workday, "kind": "workday", "school_code": "", "label": f"{name}调休上班"}


def demo_csv_texts(n_schools: int = DEMO_SCHOOLS, seed: int = DEMO_SEED) -> dict[str, str]:
    """kind -> CSV text, the same for the same arguments."""
    rng = random.Random(seed)
    schools = _school_rows(rng, n_schools)
    rooms = [room for school in schools for room in _room_rows(rng, school)]
    return {"schools": _csv_text("schools", schools), "rooms": _csv_text("rooms", rooms),
            "timetable": _csv_text("timetable", _timetable_rows(rooms)),
            "calendar": _csv_text("calendar", _calendar_rows())}


def load_demo_registry(conn: Connection, n_schools: int = DEMO_SCHOOLS, seed: int = DEMO_SEED
                       ) -> dict[str, ImportResult]:
    """Regions plus the demo files, imported in dependency order in the caller's
    transaction. Loading it again changes nothing."""
    load_regions(conn)
    results = {}
    for kind, text in demo_csv_texts(n_schools, seed).items():
        result = import_csv(conn, kind, text)
        if not result.ok:
            first = result.errors[0]
            raise RuntimeError(f"demo {kind} CSV line {first.line} {first.column}: {first.message}")
        results[kind] = result
    return results
