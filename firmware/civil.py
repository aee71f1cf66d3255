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


def parse_iso8601(text):
    """'2026-11-23T07:30:00+08:00' (or ...Z) -> Unix seconds. Raises ValueError."""
    try:
        y = int(text[0:4])
        mo = int(text[5:7])
        d = int(text[8:10])
        hh = int(text[11:13])
        mi = int(text[14:16])
        ss = int(text[17:19])
        rest = text[19:]
        if rest and rest[0] == ".":  # fractional seconds are ignored
            i = 1
            while i < len(rest) and rest[i] in "0123456789":
                i += 1
            rest = rest[i:]
        if rest in ("Z", "z"):
            off = 0
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
            off = int(rest[1:3]) * 3600 + int(rest[4:6]) * 60
            if rest[0] == "-":
                off = -off
        else:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError("not an ISO 8601 time with offset: %s" % text)
    if text[4] != "-" or text[7] != "-" or text[10] not in "Tt " or not (1 <= mo <= 12 and 1 <= d <= 31):
        raise ValueError("not an ISO 8601 time with offset: %s" % text)
    return days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss - off


def local_day_and_second(t, offset_s):
    """Unix seconds -> (days since epoch in local time, second of the local day)."""
    lt = int(t) + offset_s
    return lt // 86400, lt % 86400


def weekday(day):
    # 1970-01-01 was a Thursday; Monday = 0.
    return (day + 3) % 7
