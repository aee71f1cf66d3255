"""The province dataset's registry, generated in memory: 6,000 schools over the 90
Zhejiang counties (spread as fleet_server/registry/demo_data.py does), 120,000 rooms,
the 2026 holidays, one node per instrumented room and each school's instrumentation
profile, so coverage has covered, partly instrumented and node-less schools."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from fleet_server.registry import demo_data
from fleet_server.registry.service import read_regions_csv
from fleet_server.virtual_nodes import SHANGHAI

N_SCHOOLS = 6000
N_ROOMS = 120_000
ROOMS_PER_SCHOOL = (8, 32)       # mean 20: 120,000 rooms over 6,000 schools
NO_NODES_SHARE = 0.08            # schools with no node at all
PARTLY_SHARE = 0.10              # schools with under 80% of teaching spaces instrumented
SWAPPED_SHARE = 0.01             # nodes replaced mid-term (two assignments for the room)
LATE_SHARE = 0.01                # nodes installed during the term
_TYPES = ("lab", "computer_room", "art_music", "gym", "new_style", "library")
_TEACHING = {"library": False}


@dataclass
class Room:
    id: int
    school_id: int
    building_id: int
    code: str
    name: str
    type: str
    capacity: int
    new_style: bool
    lux_factor: float
    teaching_space: bool
    # (device_id, from_ts, to_ts or None) of each node the room had
    assignments: list[tuple[str, int, int | None]] = field(default_factory=list)


@dataclass
class Province:
    schools: list[dict]
    buildings: list[tuple[int, int, str, str]]
    rooms: list[Room]
    calendar: list[tuple[int, date, str, str]]
    # school id -> (node reliability: chance a node is offline / delivers part of a day,
    #               chance the whole school is offline on a day)
    reliability: dict[int, tuple[float, float, float]]


def local_ts(day: date, hh: int = 0, mm: int = 0) -> int:
    return int(datetime.combine(day, time(hh, mm), SHANGHAI).timestamp())


def calendar_rows() -> list[tuple[int, date, str, str]]:
    """(id, date, kind, label) of the 2026 public holidays and make-up workdays."""
    out = []
    for name, first, last, workdays in demo_data.HOLIDAYS_2026:
        day = date.fromisoformat(first)
        while day <= date.fromisoformat(last):
            out.append((len(out) + 1, day, "holiday", name))
            day += timedelta(days=1)
        out += [(len(out) + 1 + i, date.fromisoformat(w), "workday", f"{name}调休上班")
                for i, w in enumerate(workdays)]
    return out


def _room_counts(rng: random.Random) -> list[int]:
    counts = [rng.randint(*ROOMS_PER_SCHOOL) for _ in range(N_SCHOOLS)]
    while (diff := N_ROOMS - sum(counts)) != 0:      # hit the total exactly
        i = rng.randrange(N_SCHOOLS)
        step = 1 if diff > 0 else -1
        if ROOMS_PER_SCHOOL[0] <= counts[i] + step <= ROOMS_PER_SCHOOL[1]:
            counts[i] += step
    return counts


def _specials(rng: random.Random, n_rooms: int) -> list[str]:
    out = ["library", "computer_room", "lab", "lab", "art_music"] + ["gym"] * rng.randint(0, 1)
    out += ["new_style"] * rng.choice((0, 0, 1, 1, 2, 3))
    return out[:max(0, n_rooms - 6)]       # small schools keep at least six classrooms


def build_province(term_first: date, term_last: date, seed: int = 4) -> Province:
    rng = random.Random(seed)
    counties = [r for r in read_regions_csv() if r["level"] == "county"]
    cities = {r["code"]: r for r in read_regions_csv() if r["level"] == "city"}
    weights = [demo_data._CITY_WEIGHT.get(c["parent_code"], 1.0) for c in counties]
    picks = sorted(counties + rng.choices(counties, weights=weights, k=N_SCHOOLS - len(counties)),
                   key=lambda c: c["code"])
    stages = list(demo_data._STAGE_WEIGHTS)
    stage_w = list(demo_data._STAGE_WEIGHTS.values())
    counts = _room_counts(rng)
    installed = local_ts(term_first - timedelta(days=30))
    schools, buildings, rooms, reliability = [], [], [], {}
    per_county: dict[int, int] = {}
    device_no = 0
    for school_id, (county, n_rooms) in enumerate(zip(picks, counts), 1):
        stage = rng.choices(stages, weights=stage_w)[0]
        k = per_county[county["code"]] = per_county.get(county["code"], 0) + 1
        prefix = county["name_zh"]
        if prefix.endswith("区"):
            prefix = cities[county["parent_code"]]["name_zh"] + prefix
        schools.append({"id": school_id, "code": f"P{county['code']}{k:03d}",
                        "name": f"{prefix}第{k}{demo_data._STAGE_SUFFIX[stage]}",
                        "county_code": county["code"], "stage": stage})
        buildings += [(2 * school_id - 1, school_id, "A", "教学楼"), (2 * school_id, school_id, "B", "综合楼")]
        specials = _specials(rng, n_rooms)
        u = rng.random()
        share = 0.0 if u < NO_NODES_SHARE else (rng.uniform(0.3, 0.79) if u < NO_NODES_SHARE + PARTLY_SHARE
                                                  else rng.choice((1.0, 1.0, 1.0, 0.95, 0.9, 0.85)))
        # Most schools' nodes are dependable; one in six schools has a flaky network.
        flaky = rng.random() < 1 / 6
        reliability[school_id] = ((0.06, 0.10, 0.08) if flaky else (0.005, 0.01, 0.01))
        grades = demo_data._GRADES[stage]
        school_rooms = []
        for i in range(n_rooms):
            room_id = len(rooms) + len(school_rooms) + 1
            if i < n_rooms - len(specials):
                floor, slot = divmod(i, 6)
                room = Room(room_id, school_id, 2 * school_id - 1, f"A{floor + 1}{slot + 1:02d}",
                            f"{grades[i % len(grades)]}({i // len(grades) + 1})班", "classroom",
                            rng.randint(40, 50), False, round(rng.uniform(0.8, 1.25), 2), True)
            else:
                j = i - (n_rooms - len(specials))
                kind = specials[j]
                room = Room(room_id, school_id, 2 * school_id, f"B{j // 8 + 1}{j % 8 + 1:02d}",
                            demo_data._SPECIAL_ROOMS[kind][0][0] + str(j + 1), kind, rng.randint(40, 60),
                            kind == "new_style", round(rng.uniform(0.8, 1.25), 2), _TEACHING.get(kind, True))
            school_rooms.append(room)
        teaching = [r for r in school_rooms if r.teaching_space]
        for room in rng.sample(teaching, round(share * len(teaching))):
            device_no += 1
            dev = f"cf-{0xB0000000 + device_no:012x}"
            v = rng.random()
            if v < SWAPPED_SHARE:
                swap = local_ts(term_first + timedelta(days=rng.randrange(1, (term_last - term_first).days)), 12)
                device_no += 1
                room.assignments = [(dev, installed, swap), (f"cf-{0xB0000000 + device_no:012x}", swap, None)]
            elif v < SWAPPED_SHARE + LATE_SHARE:
                late = term_first + timedelta(days=rng.randrange(1, (term_last - term_first).days))
                room.assignments = [(dev, local_ts(late, 10), None)]
            else:
                room.assignments = [(dev, installed, None)]
        rooms += school_rooms
    return Province(schools, buildings, rooms, calendar_rows(), reliability)
