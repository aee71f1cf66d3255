"""The sim layer's calendar arithmetic (firmware/hw/sim.py): ISO 8601 parsing with offsets
for sim.start, and days_from_civil. Expected values come from CPython's datetime (an
independent implementation)."""
from hw.sim import days_from_civil, parse_iso8601


def _rejects(text):
    try:
        v = parse_iso8601(text)
    except ValueError:
        return True
    return "accepted -> %r" % v


def test_parse_with_plus_0800_offset():
    assert parse_iso8601("2026-11-23T07:30:00+08:00") == 1795390200


def test_parse_z_is_utc_and_equals_the_offset_form():
    assert parse_iso8601("2026-11-22T23:30:00Z") == 1795390200
    assert parse_iso8601("1970-01-01T00:00:00Z") == 0


def test_parse_negative_and_half_hour_offsets():
    assert parse_iso8601("2026-11-23T07:30:00-05:00") == 1795437000
    assert parse_iso8601("2026-11-23T07:30:00-09:30") == 1795453200
    assert parse_iso8601("2026-11-23T07:30:00+05:30") == 1795399200


def test_parse_ignores_fractional_seconds():
    assert parse_iso8601("2026-11-23T07:30:00.75+08:00") == 1795390200
    assert parse_iso8601("2026-11-22T23:30:00.123456Z") == 1795390200


def test_parse_rejects_garbage_with_value_error():
    for text in ("", "garbage", "2026-11-23", "2026-11-23T07:30:00",
                 "2026-11-23T07:30:00+0800", "2026/11/23T07:30:00Z",
                 "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-11-32T00:00:00Z",
                 "2026-11-23X07:30:00Z", "2026-11-23T07:30:00+08:00junk",
                 "2026-11-23T07:30:00.Q+08:00", "2026-11-23T07:xx:00Z"):
        assert _rejects(text) is True, (text, _rejects(text))


def test_parse_rejects_out_of_range_time_fields():
    # ISO 8601 / RFC 3339 5.6: hour 00-23, minute 00-59, second 00-60 (leap), offset
    # hours 00-23; a day must exist in its month. The node must refuse such a sim start
    # rather than silently shift it (STYLE.md habit 5).
    accepted = []
    for text in ("2026-11-23T25:00:00+08:00", "2026-11-23T07:60:00+08:00",
                 "2026-11-23T07:30:61+08:00", "2026-11-23T-1:30:00+08:00",
                 "2026-11-23T07:30:00+99:00", "2026-02-30T07:30:00+08:00"):
        if _rejects(text) is not True:
            accepted.append(text)
    assert accepted == [], "accepted invalid times: %r" % accepted


def test_days_from_civil_known_dates():
    assert days_from_civil(1970, 1, 1) == 0
    assert days_from_civil(1969, 12, 31) == -1
    assert days_from_civil(2000, 2, 29) == 11016   # leap day of a /400 year
    assert days_from_civil(2000, 3, 1) == 11017
    assert days_from_civil(2026, 11, 23) == 20780
    assert days_from_civil(1600, 1, 1) == -135140  # previous 400-year era
