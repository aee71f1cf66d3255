"""Calendar arithmetic without the RTC's epoch or time zone: ISO 8601 parsing and
Asia/Shanghai-style fixed offsets, identical on the board and the unix port."""


def days_from_civil(y, m, d):
    # Howard Hinnant's days_from_civil: days since 1970-01-01 (proleptic Gregorian).
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _digits(text, a, b):
    part = text[a:b]
    if len(part) != b - a:
        raise ValueError
    for c in part:
        if c not in "0123456789":
            raise ValueError  # int() would also take a sign or spaces
    return int(part)


def days_in_month(y, m):
    if m == 12:
        return 31
    return days_from_civil(y, m + 1, 1) - days_from_civil(y, m, 1)


def parse_iso8601(text):
    """'2026-11-23T07:30:00+08:00' (or ...Z) -> Unix seconds. Raises ValueError for
    anything else, including fields out of range (RFC 3339 5.6), so a mistyped time
    is refused rather than silently shifted."""
    bad = ValueError("not an ISO 8601 time with offset: %s" % text)
    try:
        y = _digits(text, 0, 4)
        mo = _digits(text, 5, 7)
        d = _digits(text, 8, 10)
        hh = _digits(text, 11, 13)
        mi = _digits(text, 14, 16)
        ss = _digits(text, 17, 19)
        if text[4] != "-" or text[7] != "-" or text[10] not in "Tt " or text[13] != ":" or text[16] != ":":
            raise ValueError
        rest = text[19:]
        if rest and rest[0] == ".":  # fractional seconds are ignored
            i = 1
            while i < len(rest) and rest[i] in "0123456789":
                i += 1
            rest = rest[i:]
        if rest in ("Z", "z"):
            off = 0
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
            oh = _digits(rest, 1, 3)
            om = _digits(rest, 4, 6)
            if oh > 23 or om > 59:
                raise ValueError
            off = oh * 3600 + om * 60
            if rest[0] == "-":
                off = -off
        else:
            raise ValueError
    except (ValueError, IndexError):
        raise bad
    if not (1 <= mo <= 12 and 1 <= d <= days_in_month(y, mo) and hh <= 23 and mi <= 59 and ss <= 60):
        raise bad
    return days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss - off


def local_day_and_second(t, offset_s):
    """Unix seconds -> (days since epoch in local time, second of the local day)."""
    lt = int(t) + offset_s
    return lt // 86400, lt % 86400


def weekday(day):
    # 1970-01-01 was a Thursday; Monday = 0.
    return (day + 3) % 7
