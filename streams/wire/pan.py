"""Card numbers (PANs): finding every digit run that could be one, and masking it.

A *candidate* is what a person (or a program) could read as a card number: 13 to 19 digits that
pass the Luhn check, made of whole digit groups joined by separators. The text is normalised
first, one character at a time:
  digits      NFKC, then any Unicode decimal digit is its ASCII digit: '４' (full width), '٤'
              (Arabic-Indic), '𝟒' (mathematical), '①' and '¹' all count as a '4' or a '1';
  separators  any run of punctuation, spaces, controls, format characters and combining marks
              (Unicode categories P, Z, C, M) except '*' and '#': one or more spaces, dashes of
              any width, dots, slashes, tabs, NBSP, zero-width spaces, NUL bytes (so UTF-16 text
              is read too), and bytes that are not UTF-8;
  breakers    letters, symbols, '*' and '#' end a number ('*' is what masking writes).
Bytes are read twice: as they are (the hex digits of a `\\u` escape are digits there), and with
JSON escapes decoded (`"\\u53f74111111111111111"` holds 4111111111111111, and `\\u0034` is a 4).

Masking keeps the first 6 and last 4 digits of each candidate and writes '*' for every other
digit, one '*' per character or escape (a masked full-width digit or escape is one '*'). Masking
can expose a new candidate (the visible tail of one number next to the following group), so the
result is scanned again: a second round masks each cluster that still holds one down to its first
6 and last 4 digits, and a last resort masks every digit. Every round is linear in the input
(windows of at most 19 digits; numpy for clusters of many groups), so a megabyte of `"0 "` costs
well under a second, not minutes.

Pure functions over bytes and text; no I/O.
"""
from __future__ import annotations

import itertools
import re
import unicodedata
from functools import lru_cache

import numpy as np

_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_LUHN_DOUBLE_NP = np.array(_LUHN_DOUBLE, dtype=np.int64)
_MIN_DIGITS = 13
_MAX_DIGITS = 19
_KEEP_HEAD = 6
_KEEP_TAIL = 4
_ROUNDS = 4  # per-candidate, per-cluster, per-cluster, then every digit

# Symbol classes, one byte per symbol so that regexes run over them.
_D, _S, _O = ord("d"), ord("s"), ord("o")
_FILL = ord(".")  # the digit value of a symbol that is not a digit
_BREAKERS = "*#"


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


@lru_cache(maxsize=65_536)
def _symbols_of(ch: str) -> tuple[tuple[int, int], ...]:
    """(class, digit) of each symbol one character reads as (NFKC can make several: '⑽')."""
    out = []
    for x in unicodedata.normalize("NFKC", ch) or ch:
        if "0" <= x <= "9":
            out.append((_D, ord(x)))
            continue
        dv = unicodedata.decimal(x, None)
        if dv is not None:
            out.append((_D, 48 + dv))
        elif x in _BREAKERS:
            out.append((_O, _FILL))
        elif unicodedata.category(x)[0] in "PZCM":
            out.append((_S, _FILL))
        else:
            out.append((_O, _FILL))
    return tuple(out)


def _ascii_tables() -> tuple[bytes, bytes]:
    cls = bytearray(256)
    val = bytearray(256)
    for b in range(256):
        # (bytes >= 0x80 are never looked up: only ASCII text takes the tables)
        sym = _symbols_of(chr(b))[0] if b < 0x80 else (_S, _FILL)
        cls[b], val[b] = sym
    return bytes(cls), bytes(val)


_CLS_ASCII, _VAL_ASCII = _ascii_tables()
_DIGITS_ASCII = b"0123456789"
# Quick test for a JSON record in ASCII without backslashes: digits and separators other than
# '"' map to '1', the rest to '0'. A string value holds no '"' there, so a card number in one
# is a run of at least 13 '1's (digits and separators) between two quotes.
_RUN_TABLE = bytes(0x31 if b < 0x80 and b != 0x22 and _CLS_ASCII[b] in (_D, _S) else 0x30
                   for b in range(256))
_NEEDLE = b"1" * _MIN_DIGITS

_RUN = re.compile(rb"[ds]+")  # a cluster is such a run without its leading and trailing 's'

_GROUP = re.compile(rb"d+")
_ASCII_RUN = re.compile(r"[\x00-\x7f]+")
_ASCII_RUN_NO_BACKSLASH = re.compile(r"[\x00-\x5b\x5d-\x7f]+")
_U_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_SHORT_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
                  "t": "\t"}


# ------------------------------------------------------------------------------------ views
class _View:
    """The symbols of one reading of the bytes: `cls` and `val` (one byte per symbol), and for
    each symbol the byte span of the character or escape it came from (`unit_start[sym_unit]`
    to `unit_end[sym_unit]`; all None when symbol i is byte i)."""

    __slots__ = ("cls", "val", "sym_unit", "unit_start", "unit_end")

    def __init__(self, cls: bytes, val: bytes, sym_unit: np.ndarray | None = None,
                 unit_start: np.ndarray | None = None, unit_end: np.ndarray | None = None) -> None:
        self.cls = cls
        self.val = val
        self.sym_unit = sym_unit
        self.unit_start = unit_start
        self.unit_end = unit_end

    def spans(self, syms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Byte spans (starts, ends) of the characters or escapes of symbols `syms`."""
        if self.sym_unit is None:
            return syms, syms + 1
        u = self.sym_unit[syms]
        return self.unit_start[u], self.unit_end[u]


def _view(data: bytes, escapes: bool) -> _View:
    if data.isascii() and not (escapes and b"\\" in data):
        return _View(data.translate(_CLS_ASCII), data.translate(_VAL_ASCII))
    text = data.decode("utf-8", "surrogateescape")
    cls = bytearray()
    val = bytearray()
    # Symbols, and units (characters or escapes) with their byte spans, gathered in chunks:
    # an ASCII run as numpy ranges, other characters one by one in the lists of `pend`.
    chunks_sym: list[np.ndarray] = []
    chunks_start: list[np.ndarray] = []
    chunks_end: list[np.ndarray] = []
    sym_unit: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    units = 0
    run = (_ASCII_RUN_NO_BACKSLASH if escapes else _ASCII_RUN).match
    pos = 0  # byte offset of text[i]
    i = 0
    n = len(text)
    while i < n:
        m = run(text, i)
        if m is not None:  # a run of plain ASCII: one symbol and one unit per byte, in bulk
            chunk = m.group().encode("ascii")
            k = len(chunk)
            cls += chunk.translate(_CLS_ASCII)
            val += chunk.translate(_VAL_ASCII)
            if k < 64:  # short: into the lists
                sym_unit.extend(range(units, units + k))
                starts.extend(range(pos, pos + k))
                ends.extend(range(pos + 1, pos + k + 1))
                units += k
                pos += k
                i = m.end()
                continue
            if starts:
                chunks_sym.append(np.array(sym_unit, dtype=np.int64))
                chunks_start.append(np.array(starts, dtype=np.int64))
                chunks_end.append(np.array(ends, dtype=np.int64))
                sym_unit, starts, ends = [], [], []
            chunks_sym.append(np.arange(units, units + k, dtype=np.int64))
            chunks_start.append(np.arange(pos, pos + k, dtype=np.int64))
            chunks_end.append(np.arange(pos + 1, pos + k + 1, dtype=np.int64))
            units += k
            pos += k
            i = m.end()
            continue
        c = text[i]
        o = ord(c)
        if c == "\\":  # escapes only: a backslash is plain ASCII otherwise
            e = _U_ESCAPE.match(text, i)
            if e is not None:
                cp = int(e.group(1), 16)
                j = i + 6
                if 0xD800 <= cp <= 0xDBFF:
                    lo = _U_ESCAPE.match(text, j)
                    if lo is not None and 0xDC00 <= int(lo.group(1), 16) <= 0xDFFF:
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (int(lo.group(1), 16) - 0xDC00)
                        j += 6
                ch = chr(cp)
            elif i + 1 < n and text[i + 1] in _SHORT_ESCAPES:
                ch = _SHORT_ESCAPES[text[i + 1]]
                j = i + 2
            else:
                ch = c
                j = i + 1
            blen = j - i  # escapes are ASCII: one byte per character
        else:
            ch = c
            j = i + 1
            blen = (1 if o < 0x80 or 0xDC80 <= o <= 0xDCFF  # a byte that is not UTF-8
                    else 2 if o < 0x800 else 3 if o < 0x10000 else 4)
        for k_cls, k_val in _symbols_of(ch):
            cls.append(k_cls)
            val.append(k_val)
            sym_unit.append(units)
        starts.append(pos)
        ends.append(pos + blen)
        units += 1
        pos += blen
        i = j
    if starts:
        chunks_sym.append(np.array(sym_unit, dtype=np.int64))
        chunks_start.append(np.array(starts, dtype=np.int64))
        chunks_end.append(np.array(ends, dtype=np.int64))
    empty = np.zeros(0, dtype=np.int64)
    return _View(bytes(cls), bytes(val), np.concatenate(chunks_sym or [empty]),
                 np.concatenate(chunks_start or [empty]), np.concatenate(chunks_end or [empty]))


def _views(data: bytes) -> list[_View]:
    """The readings of `data`: with JSON escapes decoded, and (when there are backslashes) as
    the bytes are."""
    if b"\\" in data:
        return [_view(data, True), _view(data, False)]
    return [_view(data, True)]


# ---------------------------------------------------------------------------------- windows
def _windows_small(digits: bytes, lens: list[int]) -> list[tuple[int, int]]:
    bounds = [0]
    for k in lens:
        bounds.append(bounds[-1] + k)
    out = []
    for j in range(1, len(bounds)):
        e = bounds[j]
        total = 0
        double = False
        k = e
        for i in range(j - 1, -1, -1):
            s = bounds[i]
            if e - s > _MAX_DIGITS:
                break
            while k > s:  # add the digits of group i, right to left
                k -= 1
                d = digits[k] - 48
                total += _LUHN_DOUBLE[d] if double else d
                double = not double
            if e - s >= _MIN_DIGITS and total % 10 == 0:
                out.append((s, e))
    return out


def _windows_numpy(digits: bytes, lens: list[int] | np.ndarray) -> np.ndarray:
    d = np.frombuffer(digits, dtype=np.uint8).astype(np.int32) - 48
    dd = _LUHN_DOUBLE_NP[d]
    even = (np.arange(len(d)) & 1) == 0
    # Prefix sums of the Luhn contributions for either parity: the rightmost digit of a window
    # is never doubled, so digit i is doubled iff its distance from the window's end is odd.
    pa = np.concatenate(([0], np.cumsum(np.where(even, d, dd), dtype=np.int64)))
    pb = np.concatenate(([0], np.cumsum(np.where(even, dd, d), dtype=np.int64)))
    lens = np.asarray(lens, dtype=np.int64)
    bounds = np.concatenate(([0], np.cumsum(lens)))
    shortest, longest = int(lens.min()), int(lens.max())
    found = []
    for k in range(1, min(_MAX_DIGITS, len(lens)) + 1):  # windows of k whole groups
        if k * shortest > _MAX_DIGITS:
            break
        if k * longest < _MIN_DIGITS:
            continue
        s = bounds[:-k]
        e = bounds[k:]
        n = e - s
        ok = (n >= _MIN_DIGITS) & (n <= _MAX_DIGITS)
        total = np.where(((e - 1) & 1) == 0, pa[e] - pa[s], pb[e] - pb[s])
        ok &= total % 10 == 0
        if ok.any():
            found.append(np.stack([s[ok], e[ok]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(found)


_CHUNK_GROUPS = 8192  # a long cluster is searched this many groups at a time: bounded memory


def _window_chunks(digits: bytes, lens: list[int] | np.ndarray):
    """(lo, hi) digit offsets of every run of whole groups with 13-19 digits passing Luhn, as
    arrays of shape (n, 2), chunk by chunk (a megabyte of "0 " has 3.5 million of them)."""
    g = len(lens)
    if g <= 64:
        w = np.array(_windows_small(digits, lens), dtype=np.int64).reshape(-1, 2)
        if len(w):
            yield w
        return
    lens = np.asarray(lens, dtype=np.int64)
    bounds = np.concatenate(([0], np.cumsum(lens)))
    for g0 in range(0, g, _CHUNK_GROUPS):
        g1 = min(g, g0 + _CHUNK_GROUPS)
        g_end = min(g, g1 + _MAX_DIGITS)  # a window starting before g1 ends by g1 + 19 groups
        d0, cut, d1 = int(bounds[g0]), int(bounds[g1]), int(bounds[g_end])
        w = _windows_numpy(digits[d0:d1], lens[g0:g_end])
        if len(w):
            w = w[w[:, 0] < cut - d0] + d0  # those starting in groups g0..g1-1
            if len(w):
                yield w


def _clusters(view: _View):
    """(first symbol, end symbol, window chunks) of each cluster of `view` of 13 digits or
    more; the chunks (an iterator) are empty when the cluster holds no candidate."""
    cls = view.cls
    for m in _RUN.finditer(cls):
        a, b = m.span()
        if b - a < _MIN_DIGITS:
            continue
        seg = cls[a:b]
        if seg.count(_D) < _MIN_DIGITS:
            continue
        first = seg.find(b"d")
        a, b = a + first, a + seg.rfind(b"d") + 1
        seg = cls[a:b]
        digits = view.val[a:b].translate(None, b".")
        if b - a <= 200:
            lens = [g.end() - g.start() for g in _GROUP.finditer(seg)]
        else:  # group lengths in bulk: a group starts at a digit after a separator
            is_d = np.frombuffer(seg, dtype=np.uint8) == _D
            edges = np.flatnonzero(np.diff(np.concatenate(([False], is_d, [False])).astype(
                np.int8)))
            lens = edges[1::2] - edges[0::2]
        yield a, b, _window_chunks(digits, lens)


def _holds_candidate(view: _View) -> bool:
    return any(next(chunks, None) is not None for _, _, chunks in _clusters(view))


def _digit_symbols(cls: bytes, a: int, b: int) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(cls, dtype=np.uint8, count=b - a, offset=a) == _D) + a


_NO_SPANS = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


def _plan(data: bytes, mode: int, want_found: bool = False):
    """Byte spans (starts, ends) to overwrite with '*' (mode 0: the middle of each candidate;
    1: of each cluster holding one; 2: every digit), and, if `want_found`, the byte spans of
    the candidates."""
    views = _views(data)
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    found: list[tuple[int, int]] = []
    any_found = False
    for view in views:
        for a, b, chunks in _clusters(view):
            first = next(chunks, None)
            if first is None:
                continue
            any_found = True
            pos = _digit_symbols(view.cls, a, b)
            if mode == 0 or want_found:
                marks = np.zeros(len(pos) + 1, dtype=np.int32)
                for w in itertools.chain((first,), chunks):
                    if want_found:
                        fs, _ = view.spans(pos[w[:, 0]])
                        _, fe = view.spans(pos[w[:, 1] - 1])
                        found.extend(zip(fs.tolist(), fe.tolist()))
                    lo = w[:, 0] + _KEEP_HEAD
                    hi = w[:, 1] - _KEEP_TAIL
                    base = int(lo.min())
                    n = int(hi.max()) - base + 1
                    marks[base:base + n] += (np.bincount(lo - base, minlength=n)
                                             - np.bincount(hi - base, minlength=n))
            if mode == 0:
                chosen = pos[np.cumsum(marks[:-1]) > 0]
            elif mode == 1:
                chosen = pos[_KEEP_HEAD:len(pos) - _KEEP_TAIL]
            else:
                chosen = pos
            s, e = view.spans(chosen)
            starts.append(s)
            ends.append(e)
    if mode == 2 and any_found:  # last resort: every digit of every reading
        for view in views:
            s, e = view.spans(np.flatnonzero(np.frombuffer(view.cls, dtype=np.uint8) == _D))
            starts.append(s)
            ends.append(e)
    if not starts:
        return _NO_SPANS, found
    s = np.concatenate(starts)
    e = np.concatenate(ends)
    if len(views) > 1:
        s, e = _whole_escapes(views[0], s, e)
    s, first = np.unique(s, return_index=True)
    return (s, e[first]), found


def _whole_escapes(escaped: _View, s: np.ndarray, e: np.ndarray):
    """A digit of the as-is reading inside a `\\u` escape: overwrite the whole escape, so that
    no half escape is left to be read another way."""
    if escaped.unit_start is None or not len(escaped.unit_start):
        return s, e
    u = np.searchsorted(escaped.unit_start, s, side="right") - 1
    u = np.maximum(u, 0)
    us = escaped.unit_start[u]
    ue = escaped.unit_end[u]
    inside = (us <= s) & (e <= ue)
    return np.where(inside, us, s), np.where(inside, ue, e)


def _apply(data: bytes, spans: tuple[np.ndarray, np.ndarray]) -> bytes:
    s, e = spans
    if bool(np.all(e - s == 1)):
        out = np.frombuffer(bytearray(data), dtype=np.uint8)
        out[s] = 0x2A  # '*'
        return out.tobytes()
    parts = []
    prev = 0
    for a, b in zip(s.tolist(), e.tolist()):
        if a < prev:  # nested in the previous span
            continue
        parts.append(data[prev:a])
        parts.append(b"*")
        prev = b
    parts.append(data[prev:])
    return b"".join(parts)


# ---------------------------------------------------------------------------------- public
def pan_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of every candidate in `data` (either reading), in order."""
    return sorted(set(_plan(data, 0, want_found=True)[1]))


def contains_pan(data: bytes) -> bool:
    return any(_holds_candidate(v) for v in _views(data))


def mask_pans(data: bytes) -> bytes:
    """`data` with the middle digits of every candidate replaced by '*' (first 6 and last 4
    kept, separators kept): b'4111 1111 1111 1111' -> b'4111 11** **** 1111'. Returns `data`
    itself when it holds none; the result holds none (in either reading), and masking it again
    changes nothing."""
    out = data
    for r in range(_ROUNDS):
        spans, _ = _plan(out, min(r, 2))
        if not len(spans[0]):
            return out
        out = _apply(out, spans)
    return out


def mask_pans_text(s: str) -> str:
    """`mask_pans` for text (returns `s` itself when it holds no candidate)."""
    b = s.encode("utf-8", "surrogatepass")
    masked = mask_pans(b)
    return s if masked is b else masked.decode("utf-8", "surrogatepass")


def text_has_pan(s: str) -> bool:
    """True when the text of a stored field holds a candidate; fast for short ASCII ids."""
    if s.isascii():
        if len(s) < _MIN_DIGITS:
            return False
        b = s.encode("ascii")
        if len(b) - len(b.translate(None, _DIGITS_ASCII)) < _MIN_DIGITS:
            return False
        if b"\\" not in b:
            return _holds_candidate(_View(b.translate(_CLS_ASCII), b.translate(_VAL_ASCII)))
        return contains_pan(b)
    return contains_pan(s.encode("utf-8", "surrogatepass"))


def mask_prefix(data: bytes, n: int) -> bytes:
    """The first `n` bytes of `data`, masked, and with every digit after the last breaker
    masked as well: the cut may fall inside a card number, whose head alone would show more
    than its first 6 digits."""
    head = data[:n]
    views = _views(head)
    starts = []
    ends = []
    for view in views:
        k = view.cls.rfind(b"o") + 1
        s, e = view.spans(np.flatnonzero(np.frombuffer(view.cls, dtype=np.uint8)[k:] == _D) + k)
        starts.append(s)
        ends.append(e)
    s = np.concatenate(starts)
    e = np.concatenate(ends)
    if len(s):
        if len(views) > 1:
            s, e = _whole_escapes(views[0], s, e)
        s, first = np.unique(s, return_index=True)
        head = _apply(head, (s, e[first]))
    return mask_pans(head)
