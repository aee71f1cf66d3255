"""Registry on a real SQLite file: the shipped GB/T 2260 regions, CSV import that is
idempotent and all-or-nothing with line-numbered errors, school days, device room
history, the deterministic demo dataset and the documented CSV examples."""
import re
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fleet_server.db.engine import make_engine, migrate
from fleet_server.db.registry_schema import (
    buildings, calendar_days, device_assignments, regions, rooms, schools, timetable_periods,
)
from fleet_server.db.schema import devices
from fleet_server.registry import service as svc
from fleet_server.registry.demo_data import PERIODS, demo_csv_texts, load_demo_registry
from fleet_server.registry.importer import CsvDecodeError, decode_csv_bytes, import_csv
from tests.utils.registry_samples import CALENDAR, ROOMS, SCHOOLS, TIMETABLE

REGISTRY_TABLES = (regions, schools, buildings, rooms, timetable_periods, calendar_days, device_assignments)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "registry.md"


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}/registry.db")
    migrate(eng)
    with eng.begin() as conn:
        svc.load_regions(conn)
    yield eng
    eng.dispose()


def run_import(engine, kind, text):
    with engine.connect() as conn:
        result = import_csv(conn, kind, text)
        if result.ok:
            conn.commit()
    return result


def dump(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {t.name: sorted(tuple(r) for r in conn.execute(select(t))) for t in REGISTRY_TABLES}


@pytest.fixture
def loaded(engine):
    for kind, text in (("schools", SCHOOLS), ("rooms", ROOMS), ("timetable", TIMETABLE), ("calendar", CALENDAR)):
        assert run_import(engine, kind, text).errors == []
    return engine


# -- regions --------------------------------------------------------------------------

def test_regions_csv_has_11_cities_under_330000_and_every_county_under_a_city():
    rows = svc.read_regions_csv()
    by_code = {r["code"]: r for r in rows}
    assert len(by_code) == len(rows)
    assert [r["code"] for r in rows if r["level"] == "province"] == [330000]
    cities = {r["code"] for r in rows if r["level"] == "city"}
    assert cities == {330100, 330200, 330300, 330400, 330500, 330600, 330700, 330800, 330900, 331000, 331100}
    assert all(by_code[c]["parent_code"] == 330000 for c in cities)
    counties = [r for r in rows if r["level"] == "county"]
    assert len(counties) == 90
    for county in counties:
        assert county["parent_code"] in cities, county
        assert county["code"] // 100 == county["parent_code"] // 100, county   # GB/T 2260 prefix
        assert county["name_zh"][-1] in "区县市" and county["name_en"]
    # Hangzhou's 2021 reorganisation: 下城 and 江干 gone, 临平 and 钱塘 new.
    assert 330103 not in by_code and 330104 not in by_code
    assert by_code[330113]["name_zh"] == "临平区" and by_code[330114]["name_zh"] == "钱塘区"
    assert by_code[330383]["name_zh"] == "龙港市"   # county-level city since 2019


def test_loading_regions_again_changes_nothing(engine):
    before = dump(engine)
    with engine.begin() as conn:
        assert svc.load_regions(conn) == {"inserted": 0, "updated": 0, "unchanged": 102}
    assert dump(engine) == before
    with engine.connect() as conn:
        assert [r["code"] for r in svc.list_regions(conn, parent=330100)][:3] == [330102, 330105, 330106]
        assert len(svc.list_regions(conn, level="county")) == 90


# -- import: idempotent, updates counted ----------------------------------------------

def test_every_kind_imported_twice_is_all_unchanged_the_second_time(loaded):
    before = dump(loaded)
    assert len(before["schools"]) == 3 and len(before["rooms"]) == 5 and len(before["buildings"]) == 2
    for kind, text, rows in (("schools", SCHOOLS, 3), ("rooms", ROOMS, 5), ("timetable", TIMETABLE, 4),
                             ("calendar", CALENDAR, 3)):
        result = run_import(loaded, kind, text)
        assert (result.inserted, result.updated, result.unchanged) == (0, 0, rows), kind
    assert dump(loaded) == before


def test_imported_values_are_parsed_and_defaulted(loaded):
    with loaded.connect() as conn:
        s2 = conn.execute(select(schools).where(schools.c.code == "S2")).one()
        assert (s2.day_start, s2.day_end, s2.weekdays_mask, s2.timezone) == ("07:30", "17:30", 0b11111, "Asia/Shanghai")
        room = {r.code: r for r in conn.execute(select(rooms))}
        assert room["B201"].new_style is True and room["N1"].new_style is True and room["A101"].new_style is False
        assert room["B301"].teaching_space is False and room["A101"].lux_factor == 1.0
        assert room["N1"].building_id is None
        periods = conn.execute(select(timetable_periods.c.weekday, timetable_periods.c.start)
                               .order_by(timetable_periods.c.id)).all()
        assert periods[1] == (0, "08:50")          # ISO weekday 1 = Monday = 0; 8:50 padded
        assert conn.execute(select(calendar_days.c.school_id).where(
            calendar_days.c.date == date(2026, 10, 1))).scalar() is None


def test_changed_rows_are_updated_and_counted(loaded):
    result = run_import(loaded, "rooms", ROOMS.replace("S1,A102,一年级(2)班,classroom,A,,44", "S1,A102,一年级(2)班,classroom,A,,46")
                        .replace("B,综合楼", "B,科技楼"))
    assert (result.inserted, result.updated, result.unchanged, result.buildings_updated) == (0, 1, 4, 1)
    with loaded.connect() as conn:
        assert conn.execute(select(rooms.c.capacity).where(rooms.c.code == "A102")).scalar() == 46


# -- import: errors by line, nothing written ------------------------------------------

BAD_FILES = [
    ("unknown column", "schools", "code,name,county_code,stage,capactiy\nS9,x,330106,primary,40\n", 1, "capactiy"),
    ("missing column", "rooms", "school_code,room_code,name\nS1,A1,x\n", 1, "type"),
    ("bad county", "schools", "code,name,county_code,stage\nS8,x,330106,primary\nS9,x,330103,primary\n", 3, "county_code"),
    ("city as county", "schools", "code,name,county_code,stage\nS9,x,330100,primary\n", 2, "county_code"),
    ("bad stage", "schools", "code,name,county_code,stage\nS8,x,330106,primary\nS9,x,330106,college\n", 3, "stage"),
    ("bad room type", "rooms", "school_code,room_code,name,type\nS1,X1,x,classroom\nS1,X2,x,office\n", 3, "type"),
    ("capacity range", "rooms", "school_code,room_code,name,type,capacity\nS1,X1,x,classroom,4000\n", 2, "capacity"),
    ("duplicate school", "schools", "code,name,county_code,stage\nS8,x,330106,primary\nS9,y,330106,junior\nS8,z,330106,senior\n",
     4, "code"),
    ("duplicate room", "rooms", "school_code,room_code,name,type\nS1,X1,x,classroom\nS1,X1,y,lab\n", 3, "room_code"),
    ("unknown school", "rooms", "school_code,room_code,name,type\nS1,X1,x,classroom\nS7,X1,x,lab\n", 3, "school_code"),
    ("unknown room", "timetable", "school_code,room_code,weekday,start,end\nS1,A101,4,08:00,08:40\nS1,Z9,4,08:00,08:40\n",
     3, "room_code"),
    ("bad time", "timetable", "school_code,room_code,weekday,start,end\nS1,A101,4,08:00,08:40\nS1,A101,4,8h50,09:30\n",
     3, "start"),
    ("end before start", "timetable", "school_code,room_code,weekday,start,end\nS1,A101,4,09:30,08:50\n", 2, "end"),
    ("weekday 0", "timetable", "school_code,room_code,weekday,start,end\nS1,A101,0,08:00,08:40\n", 2, "weekday"),
    ("overlap", "timetable", "school_code,room_code,weekday,start,end\nS1,A101,4,08:00,08:40\nS1,A101,4,08:30,09:10\n",
     3, "start"),
    ("bad date", "calendar", "date,kind\n2026-10-02,holiday\n2026-02-30,holiday\n", 3, "date"),
    ("workday on a weekday", "calendar", "date,kind\n2026-10-12,workday\n", 2, "kind"),
    ("bad school day", "schools", "code,name,county_code,stage,day_start,day_end\nS9,x,330106,primary,17:00,08:00\n",
     2, "day_end"),
    ("ragged row", "schools", "code,name,county_code,stage\nS9,x,330106\n", 2, None),
]


@pytest.mark.parametrize("what,kind,text,line,column", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_row_is_reported_by_line_and_nothing_is_written(loaded, what, kind, text, line, column):
    before = dump(loaded)
    result = run_import(loaded, kind, text)
    assert not result.ok
    assert (line, column) in [(e.line, e.column) for e in result.errors], result.errors
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 0)
    assert dump(loaded) == before


def test_duplicate_key_error_names_both_lines(loaded):
    result = run_import(loaded, "rooms", "school_code,room_code,name,type\nS1,X1,x,classroom\nS1,X2,y,lab\nS1,X1,z,lab\n")
    [error] = result.errors
    assert (error.line, error.column) == (4, "room_code") and "line 2" in error.message


def test_every_error_in_the_file_is_reported_in_line_order(loaded):
    text = ("code,name,county_code,stage\n"
            "S9,x,999999,primary\n"        # 2: unknown county
            "S10,,330106,primary\n"        # 3: empty name
            "S11,x,330106,primary\n"       # 4: fine
            "S12,x,abc,college\n")         # 5: two errors
    errors = [(e.line, e.column) for e in run_import(loaded, "schools", text).errors]
    assert errors == [(2, "county_code"), (3, "name"), (5, "county_code"), (5, "stage")]


def test_line_numbers_count_comments_blank_lines_and_multiline_cells(loaded):
    text = ("# rooms of S1, exported 2026-03-01\n"
            "school_code,room_code,name,type\n"
            "\n"
            'S1,X1,"two\nline name",classroom\n'    # a quoted cell spanning lines 4-5
            "S1,X2,x,office\n")                     # line 6
    [error] = run_import(loaded, "rooms", text).errors
    assert (error.line, error.column) == (6, "type")


def test_trailing_empty_columns_from_excel_are_ignored(loaded):
    text = "code,name,county_code,stage,,\r\nS1,杭州市西湖区第一小学,330106,primary,,\r\n"
    result = run_import(loaded, "schools", text)
    assert result.errors == [] and result.unchanged == 1


def test_gbk_file_from_chinese_excel_and_utf8_bom_both_decode():
    text = "code,name\nS1,杭州市西湖区第一小学\n"
    assert decode_csv_bytes(text.encode("gbk")) == text
    assert decode_csv_bytes(b"\xef\xbb\xbf" + text.encode()) == text
    with pytest.raises(CsvDecodeError):
        decode_csv_bytes(b"PK\x03\x04\x80\xff")     # an .xlsx is not a CSV


def test_the_csv_examples_in_the_docs_import_cleanly(engine):
    blocks = re.findall(r"```csv\n(.*?)```", DOCS.read_text("utf-8"), re.S)
    assert len(blocks) == 4
    for kind, text in zip(("schools", "rooms", "timetable", "calendar"), blocks):
        result = run_import(engine, kind, text)
        assert result.errors == [] and result.inserted == text.count("\n") - 1, kind


# -- school days and device history ---------------------------------------------------

def test_school_days_drop_holidays_and_add_make_up_days(loaded):
    with loaded.connect() as conn:
        s1 = conn.execute(select(schools.c.id).where(schools.c.code == "S1")).scalar()
        days = svc.school_days(conn, s1, date(2026, 9, 30), date(2026, 10, 11))
        # Thu 10-01 holiday; Sat 10-03, Sun 10-04 and 10-11 weekend; Sat 10-10 make-up day.
        assert days == [date(2026, 9, 30), date(2026, 10, 2), date(2026, 10, 5), date(2026, 10, 6),
                        date(2026, 10, 7), date(2026, 10, 8), date(2026, 10, 9), date(2026, 10, 10)]
        # A school's own row wins over the all-schools row.
        assert date(2026, 11, 12) not in svc.school_days(conn, s1, date(2026, 11, 9), date(2026, 11, 13))


def test_a_moved_device_keeps_its_past_in_the_old_room(loaded):
    dev, moved_at = "cf-00000000a551", 1_780_000_000
    with loaded.connect() as conn:
        room = {r.code: r.id for r in conn.execute(select(rooms.c.code, rooms.c.id))}
        svc.assign_device(conn, dev, room["A101"], moved_at - 86400)
        svc.assign_device(conn, dev, room["B201"], moved_at)
        conn.commit()
        assert svc.room_at(conn, dev, moved_at - 86401) is None
        assert svc.room_at(conn, dev, moved_at - 86400) == room["A101"]
        assert svc.room_at(conn, dev, moved_at - 1) == room["A101"]
        assert svc.room_at(conn, dev, moved_at) == room["B201"]
        assert svc.room_at(conn, dev, moved_at + 10**6) == room["B201"]
        assert conn.execute(select(devices.c.room_id).where(devices.c.device_id == dev)).scalar() == room["B201"]
        with pytest.raises(svc.Conflict):
            svc.assign_device(conn, dev, room["A102"], moved_at - 60)      # before the last move
        assert svc.assign_device(conn, dev, room["B201"], moved_at + 60)["from_ts"] == moved_at  # no-op
        svc.assign_device(conn, dev, None, moved_at + 3600)                 # out of service
        assert svc.room_at(conn, dev, moved_at + 3600) is None
        assert svc.room_at(conn, dev, moved_at + 3599) == room["B201"]
        assert [(h["room_id"], h["to_ts"]) for h in svc.assignment_history(conn, dev)] == [
            (room["A101"], moved_at), (room["B201"], moved_at + 3600)]
        with pytest.raises(svc.NotFound):
            svc.assign_device(conn, dev, 10**6, moved_at + 7200)


# -- demo dataset ---------------------------------------------------------------------

def test_demo_csvs_are_deterministic_and_cover_every_county():
    texts = demo_csv_texts()
    assert texts == demo_csv_texts()
    school_lines = texts["schools"].splitlines()[1:]
    assert len(school_lines) == 300
    counties = {line.split(",")[2] for line in school_lines}
    assert len(counties) == 90
    assert "杭州市西湖区第" in texts["schools"] and "桐庐县第" in texts["schools"]
    assert texts["timetable"].count(",08:00,08:40,第1节") * 9 == texts["timetable"].count("\n") - 1
    assert texts["calendar"].count(",holiday,") == 33 and texts["calendar"].count(",workday,") == 6


def test_demo_loads_through_the_importer_and_again_changes_nothing(engine):
    with engine.connect() as conn:
        first = load_demo_registry(conn, n_schools=20)
        conn.commit()
    before = dump(engine)
    assert first["schools"].inserted == 20 and first["calendar"].inserted == 39
    with engine.connect() as conn:
        again = load_demo_registry(conn, n_schools=20)
        conn.commit()
        per_room = conn.execute(select(func.count()).select_from(timetable_periods)
                                .group_by(timetable_periods.c.room_id)).scalars().all()
        rooms_per_school = conn.execute(select(func.count()).select_from(rooms).group_by(rooms.c.school_id)).scalars().all()
        starts = sorted(set(conn.execute(select(timetable_periods.c.start, timetable_periods.c.end)).all()))
    assert all(r.inserted == r.updated == 0 for r in again.values())
    assert dump(engine) == before
    assert set(per_room) == {45} and all(10 <= n <= 40 for n in rooms_per_school)
    assert starts == sorted(PERIODS)
