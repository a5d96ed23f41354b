"""The slow, obvious definition of "holds a card number", independent of streams.wire.pan.

Text is normalised as a person would read it: NFKC, every Unicode decimal digit as its ASCII
digit, and runs of separators (Unicode punctuation, spaces, controls, format characters and
marks, except '*' and '#') removed between digit groups. A card number is then 13-19 digits of
whole groups passing Luhn (wire.luhn_ok, the one piece shared with the code under test, pinned
down by known numbers in test_wire). Bytes are read as they are (bytes that are not UTF-8 count as
separators) and with JSON escapes decoded.
"""
from __future__ import annotations

import re
import unicodedata

from streams.wire import luhn_ok as _luhn  # the textbook check; checked by known card numbers

_ESC = re.compile(r"\\(u[0-9a-fA-F]{4}|[\"\\/bfnrt])")
_SHORT = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(text: str) -> str:
    out = _ESC.sub(lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "u"
                   else _SHORT[m.group(1)], text)
    return out.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _tokens(text: str) -> list[str]:
    """'d<digit>', 's' or 'o' for each character of the normalised text."""
    out = []
    for c in unicodedata.normalize("NFKC", text):
        dv = unicodedata.decimal(c, None)
        if dv is not None:
            out.append(str(dv))
        elif c not in "*#" and unicodedata.category(c)[0] in "PZCM":
            out.append("s")
        else:
            out.append("o")
    return out


def numbers_in_text(text: str) -> list[str]:
    """Every card number (as ASCII digits) in one reading of `text`."""
    toks = _tokens(text)
    groups: list[list[str]] = []  # the digit groups of the current cluster
    found = []

    def flush():
        for a in range(len(groups)):
            digits = ""
            for b in range(a, len(groups)):
                digits += "".join(groups[b])
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and _luhn(digits):
                    found.append(digits)
        groups.clear()

    prev = "o"
    for t in toks:
        if t.isdigit():
            if prev == "d":
                groups[-1].append(t)
            else:
                groups.append([t])
            prev = "d"
        elif t == "s":
            if prev == "d" or prev == "s":
                prev = "s" if groups else "o"
        else:
            flush()
            prev = "o"
    flush()
    return found


def card_numbers_in(data: bytes | str) -> list[str]:
    """Every card number in `data`, read as it is and with JSON escapes decoded."""
    text = data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")
    found = numbers_in_text(text)
    if "\\" in text:
        found += numbers_in_text(_unescape(text))
    return found
