"""Salesforce record ids: 15-character case-sensitive ids and their 18-character form."""

from __future__ import annotations

import re

_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _suffix(id15: str) -> str:
    # Each 5-character block contributes one character that encodes which of
    # its letters are upper case, so the 18-character id survives case-folding.
    out = []
    for block in range(3):
        bits = 0
        for i, ch in enumerate(id15[block * 5 : block * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        out.append(_SUFFIX_ALPHABET[bits])
    return "".join(out)


def to_18(value: str) -> str | None:
    """The canonical 18-character form of a 15- or 18-character id, or None when it is malformed.

    An 18-character id is case-insensitive (its suffix records the case of the first 15
    characters), so the case is restored from the suffix before recomputing it; that way an
    id that some tool upper- or lower-cased still matches the stored one.
    """
    if not isinstance(value, str) or not _ID_RE.match(value) or not value.isascii():
        return None
    if len(value) == 15:
        return value + _suffix(value)
    restored = []
    for block, suffix_char in enumerate(value[15:]):
        bits = _SUFFIX_ALPHABET.find(suffix_char.upper())
        if bits < 0:
            return None
        for i, ch in enumerate(value[block * 5 : block * 5 + 5]):
            restored.append(ch.upper() if bits & (1 << i) else ch.lower())
    id15 = "".join(restored)
    return id15 + _suffix(id15)


def make_id(key_prefix: str, serial: int) -> str:
    """The 18-character id of the `serial`-th record of an object (ids are never reused)."""
    digits = []
    n = serial
    while n:
        n, rem = divmod(n, 62)
        digits.append(_BASE62[rem])
    body = "".join(reversed(digits)).rjust(10, "0")
    id15 = f"{key_prefix}5g{body}"
    return id15 + _suffix(id15)


# Base-62 digit pairs and the upper-case bits of each pair, for make_ids.
_PAIRS = [a + b for a in _BASE62 for b in _BASE62]
_PAIR_UPPER = [("A" <= p[0] <= "Z") | ("A" <= p[1] <= "Z") << 1 for p in _PAIRS]


def make_ids(key_prefix: str, start: int, count: int) -> list[str]:
    """`make_id(key_prefix, n)` for n in start .. start + count - 1, about ten times faster.

    Consecutive serials share all but their last two digits for runs of 62 * 62, and within
    such a run only the last suffix character changes, so each run is built from one make_id.
    """
    out: list[str] = []
    n, end = start, start + count
    while n < end:
        run_start = n - n % len(_PAIRS)
        head = make_id(key_prefix, run_start)
        stem, suffix_ab = head[:13], head[15:17]
        # The third suffix character encodes the case of characters 10..14: 10..12 are fixed here.
        high = sum(1 << i for i, ch in enumerate(head[10:13]) if "A" <= ch <= "Z")
        stop = min(end, run_start + len(_PAIRS))
        out.extend(
            stem + _PAIRS[low] + suffix_ab + _SUFFIX_ALPHABET[high | _PAIR_UPPER[low] << 3]
            for low in range(n - run_start, stop - run_start)
        )
        n = stop
    return out
