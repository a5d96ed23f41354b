"""Card numbers (PANs): detection (13-19 digits, Luhn) and masking to first 6 and last 4.

Pure functions over bytes; no I/O.
"""
from __future__ import annotations

import re

# --------------------------------------------------------------------------- card numbers (PAN)
# A PAN candidate is a run of >= 13 characters of [0-9 -]. `bytes.translate` + `find` spots one
# in well under a microsecond, so events without such a run pay almost nothing; only runs get
# the exact look: digit groups joined by single spaces or dashes, 13-19 digits, Luhn.
_RUN_TABLE = bytes(0x31 if c in b"0123456789 -" else 0x30 for c in range(256))
_RUN_NEEDLE = b"1" * 13
_SEGMENT = re.compile(rb"[0-9]+(?:[ -][0-9]+)*")
_GROUP = re.compile(rb"[0-9]+")
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_SEPARATORS = b" -"


def luhn_ok(digits: bytes | str) -> bool:
    """The Luhn (mod 10) check of a string of ASCII digits."""
    if isinstance(digits, str):
        digits = digits.encode("ascii")
    total = 0
    double = False
    for c in reversed(digits):
        d = c - 48
        total += _LUHN_DOUBLE[d] if double else d
        double = not double
    return total % 10 == 0


def _segment_pans(data: bytes, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    """Every run of whole digit groups of one segment that holds 13-19 digits and passes Luhn
    (overlaps included, so that masking each one masks every card number)."""
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(data, start, end)]
    n = len(groups)
    for a in range(n):
        count = 0
        for b in range(a, n):
            count += groups[b][1] - groups[b][0]
            if count > 19:
                break
            if count >= 13:
                digits = data[groups[a][0]:groups[b][1]].translate(None, _SEPARATORS)
                if luhn_ok(digits):
                    spans.append((groups[a][0], groups[b][1]))


def pan_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of every full card number in `data`, in order."""
    mapped = data.translate(_RUN_TABLE)
    i = mapped.find(_RUN_NEEDLE)
    if i < 0:
        return []
    spans: list[tuple[int, int]] = []
    while i >= 0:
        j = mapped.find(b"0", i)
        if j < 0:
            j = len(data)
        run = data[i:j]
        if len(run) - run.count(b" ") - run.count(b"-") >= 13:
            for seg in _SEGMENT.finditer(data, i, j):
                s, e = seg.span()
                if e - s >= 13:
                    _segment_pans(data, s, e, spans)
        i = mapped.find(_RUN_NEEDLE, j)
    return spans


def _mask_spans(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """Mask the middle digits of each span, then again until no card number is left: masking
    can join the visible tail of one number to the next group and make a new Luhn match."""
    while spans:
        out = bytearray(data)
        for s, e in spans:
            positions = [k for k in range(s, e) if 48 <= data[k] <= 57]
            for k in positions[6:-4]:
                out[k] = 0x2A  # '*'
        data = bytes(out)
        spans = pan_spans(data)
    return data


def mask_pans(data: bytes) -> bytes:
    """`data` with the middle digits of every full card number replaced by '*' (first 6 and
    last 4 kept, separators kept): b'4111 1111 1111 1111' -> b'4111 11** **** 1111'.
    Idempotent: the result holds no card number."""
    spans = pan_spans(data)
    return _mask_spans(data, spans) if spans else data


def mask_pans_text(s: str) -> str:
    """`mask_pans` for text."""
    b = s.encode("utf-8", "surrogatepass")
    spans = pan_spans(b)
    return _mask_spans(b, spans).decode("utf-8", "surrogatepass") if spans else s


def contains_pan(data: bytes) -> bool:
    return bool(pan_spans(data))


