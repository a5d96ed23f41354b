"""RFC 3339 text <-> epoch milliseconds (UTC), fast and strict; no clock is read."""
from __future__ import annotations

import re

# ---------------------------------------------------------------------------------------- time
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_MINUTE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}")
_MINUTE_MS: dict[str, int | None] = {}  # "YYYY-MM-DDTHH:MM" -> ms (None: not a minute)
_DAY_MS: dict[str, int | None] = {}  # "YYYY-MM-DD" -> ms of its midnight UTC (None: no date)
_DATE_OF_DAY: dict[int, str] = {}    # days since epoch -> "YYYY-MM-DD"
_CACHE_MAX = 20_000
_SEC_MS = {f"{i:02d}": i * 1000 for i in range(61)}  # second 60: a leap second
_FRAC_MS = {f"{i:03d}": i for i in range(1000)}


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _day_ms(date: str) -> int | None:
    """ms of midnight UTC of 'YYYY-MM-DD' (digits already checked), None if no such date."""
    ms = _DAY_MS.get(date, -1)
    if ms != -1:
        return ms
    y, m, d = int(date[0:4]), int(date[5:7]), int(date[8:10])
    if 1 <= m <= 12 and 1 <= d <= _days_in_month(y, m):
        ms = _days_from_civil(y, m, d) * 86_400_000
    else:
        ms = None
    if len(_DAY_MS) >= _CACHE_MAX:
        _DAY_MS.clear()
    _DAY_MS[date] = ms
    return ms


def parse_time_ms(s: str) -> int:
    """RFC 3339 date-time with 'Z' or an offset -> ms since the epoch, UTC.

    Fractions finer than a millisecond are truncated; second 60 (a leap second) counts as the
    next second. Raises ValueError for anything else (no offset, a space for 'T', no such date).
    """
    t = _time_ms_or_none(s) if type(s) is str else None
    if t is None:
        raise ValueError(f"not an RFC 3339 date-time: {s[:40]!r}")
    return t


def _minute_ms(prefix: str) -> int | None:
    """ms of 'YYYY-MM-DDTHH:MM' (UTC), None if it is not one; cached, streams share minutes."""
    ms = _MINUTE_MS.get(prefix, -1)
    if ms != -1:
        return ms
    ms = None
    if _MINUTE.fullmatch(prefix) is not None:
        day = _day_ms(prefix[0:10])
        h, mi = int(prefix[11:13]), int(prefix[14:16])
        if day is not None and h <= 23 and mi <= 59:
            ms = day + h * 3_600_000 + mi * 60_000
    if len(_MINUTE_MS) >= _CACHE_MAX:
        _MINUTE_MS.clear()
    _MINUTE_MS[prefix] = ms
    return ms


def _time_ms_or_none(s: str) -> int | None:
    # Fast path: 'YYYY-MM-DDTHH:MM:SS.fffZ' and 'YYYY-MM-DDTHH:MM:SSZ', the forms we write:
    # a cached minute plus table look-ups of the seconds and milliseconds (only ASCII digit
    # strings are in the tables). Anything else takes the regex below.
    n = len(s)
    if (n == 24 or n == 20) and s[n - 1] == "Z" and s[16] == ":":
        base = _MINUTE_MS.get(s[0:16], -1)  # -1 is never a minute's ms
        if base == -1:
            base = _minute_ms(s[0:16])
        sec = _SEC_MS.get(s[17:19])
        if base is not None and sec is not None:
            if n == 20:
                return base + sec
            frac = _FRAC_MS.get(s[20:23])
            if frac is not None and s[19] == ".":
                return base + sec + frac
    m = _RFC3339.fullmatch(s)
    if m is None:
        return None
    ys, mos, ds, hs, mis, ss, frac, z, sign, oh, om = m.groups()
    day = _day_ms(f"{ys}-{mos}-{ds}")
    h, mi, sec = int(hs), int(mis), int(ss)
    if day is None or h > 23 or mi > 59 or sec > 60:
        return None
    t = day + h * 3_600_000 + mi * 60_000 + sec * 1000
    if frac:
        t += int((frac + "00")[:3])
    if z is None:
        oh_i, om_i = int(oh), int(om)
        if oh_i > 23 or om_i > 59:
            return None
        off = oh_i * 3_600_000 + om_i * 60_000
        t = t - off if sign == "+" else t + off
    return t


def format_time_ms(ms: int) -> str:
    """'YYYY-MM-DDTHH:MM:SSZ', or 'YYYY-MM-DDTHH:MM:SS.fffZ' when ms is not whole seconds."""
    days, rem = divmod(ms, 86_400_000)
    date = _DATE_OF_DAY.get(days)
    if date is None:
        y, m, d = _civil_from_days(days)
        date = f"{y:04d}-{m:02d}-{d:02d}"
        if len(_DATE_OF_DAY) >= _CACHE_MAX:
            _DATE_OF_DAY.clear()
        _DATE_OF_DAY[days] = date
    secs, frac = divmod(rem, 1000)
    h, secs = divmod(secs, 3600)
    mi, secs = divmod(secs, 60)
    if frac:
        return f"{date}T{h:02d}:{mi:02d}:{secs:02d}.{frac:03d}Z"
    return f"{date}T{h:02d}:{mi:02d}:{secs:02d}Z"


