"""Anonymising fields for moving production data into sandboxes.

Three methods, for one column at a time ("" stays "", so empty fields stay empty):

* `mask`: every character becomes `*` except the last `keep`; a value not longer than
  `keep` is masked entirely, since showing "all but nothing" would show it all. With
  kind "email" the first character of the local part and the domain stay
  (`j***@example.com`), which keeps test data recognisable per customer domain.
* `hash`: the first 16 hex digits of HMAC-SHA256(salt, value). The same value gives the
  same hash in every run and every object, so external ids and lookups still join, and
  without the salt nobody can hash candidate values to reverse it. Kind "email" gives
  `<hash>@example.invalid`, a valid address that can never be delivered.
* `fake`: a realistic value of the given kind (`FAKE_KINDS`), picked with the same keyed
  hash, so re-runs are stable and equal inputs stay equal. Fakes look real but are not
  guaranteed distinct: use `hash` for fields that must stay unique (external ids,
  usernames).

Emails are hashed (and faked) as stripped and lower-cased addresses, as Salesforce
compares them, so `Ann@X.com` and `ann@x.com` stay the same person.

The keyed hash is one HMAC per distinct value (Python's hmac; nothing vectorises it), so
`hash` and `fake` work on the distinct values of the column (Arrow's dictionary encoding)
and spread the results back with one take; `mask` runs on whole columns in Arrow.

The salt is a secret: it only keys the HMAC, and it never appears in an output or an
error message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

METHODS = ("mask", "hash", "fake")
MASK_KINDS = ("email",)
HASH_KINDS = ("email",)
FAKE_KINDS = ("company", "date", "email", "name", "name_en", "number", "phone", "text")
HASH_LENGTH = 16  # hex digits: 64 bits, so a million distinct values collide with odds of about 1 in 36 million

_STRING = pa.large_string()  # pandas' own string storage
_EMAIL_RE = r"^(?P<local>.+)(?P<domain>@[^@]+)$"  # splits at the last "@"
_HASH_DOMAIN = "example.invalid"  # RFC 2606: reserved, never resolves, so nothing is ever sent


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Small built-in lists: enough variety for test data, no faker dependency.
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭"
    "曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾"
)
_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超霞平刚华建国文玲红辉鹏宇婷雪"
    "琳晨欣浩然子轩涵怡博思佳俊嘉梓雨鑫丹萍颖倩秀英兰桂志海波斌宁凯"
)
_FIRST_NAMES = _words(
    "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara Richard Susan Joseph "
    "Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony Betty Mark Margaret Paul Sandra Steven "
    "Ashley Andrew Emily Joshua Donna Kevin Michelle Brian Carol George Amanda Edward Melissa Ronald Deborah"
)
_LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson "
    "Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis "
    "Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera"
)
_EMAIL_DOMAINS = ("example.com", "example.net", "example.org")  # RFC 2606: reserved for examples
_MOBILE_PREFIXES = tuple(
    str(p) for p in (*range(130, 140), 150, 151, 152, 153, 155, 156, 157, 158, 159, *range(180, 190), 198, 199)
)
_CITIES = (
    "北京",
    "上海",
    "广州",
    "深圳",
    "杭州",
    "南京",
    "成都",
    "武汉",
    "西安",
    "苏州",
    "天津",
    "重庆",
    "长沙",
    "青岛",
)
_TRADE_NAMES = (
    "华信",
    "恒达",
    "鼎盛",
    "远航",
    "博瑞",
    "金源",
    "天合",
    "宏图",
    "新创",
    "瑞丰",
    "东方",
    "中科",
    "联拓",
    "嘉禾",
)
_INDUSTRIES = ("科技", "贸易", "实业", "咨询", "物流", "电子", "信息技术", "生物科技", "建材", "食品", "文化传媒")
_COMPANY_FORMS = ("有限公司", "有限公司", "有限公司", "股份有限公司")
_WORDS = _words(
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore "
    "magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo "
    "consequat duis aute irure in reprehenderit voluptate velit esse cillum eu fugiat nulla pariatur"
)
_DATE_SHIFT_DAYS = 365  # a real date moves by 1..365 days either way: plausible, and order mostly kept
_FALLBACK_DATES = (dt.date(1950, 1, 1), 60 * 365)  # for values that are not dates: 1950 to about 2009
_NUMBER_PUNCTUATION = "+-.,'"  # kept by fake numbers: sign, point, grouping
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # fromisoformat alone would also take 20240531 or 2024-W22


def anonymise(values: pd.Series, method: str, *, salt: str, kind: str | None = None, keep: int = 0) -> pd.Series:
    """`values` anonymised by `method` ("mask", "hash" or "fake"); a "str" Series with the same index.

    Raises ValueError for an unknown method or kind, a `keep` that does not apply, or a
    missing salt (`hash` and `fake` need one). Messages never contain the salt.
    """
    if method not in METHODS:
        raise ValueError(f"unknown anonymisation method {method!r}; the methods are {', '.join(METHODS)}")
    allowed = {"mask": MASK_KINDS, "hash": HASH_KINDS, "fake": FAKE_KINDS}[method]
    if kind is not None and kind not in allowed:
        raise ValueError(f"{method}: unknown kind {kind!r}; the kinds are {', '.join(allowed)}")
    if method == "fake" and kind is None:
        raise ValueError(f"fake needs a kind; the kinds are {', '.join(FAKE_KINDS)}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise ValueError(f"keep must be a whole number of characters, 0 or more, not {keep!r}")
    if keep and (method != "mask" or kind == "email"):
        raise ValueError("keep applies to mask without a kind only")
    text = _text(values)
    if method == "mask":
        masked = _mask_email(text) if kind == "email" else _mask(text, keep)
        return pd.Series(masked, dtype="str", index=values.index)
    if not isinstance(salt, str) or not salt:
        # Without a key the "keyed" hash is a plain hash: anyone could hash a list of names and match them.
        raise ValueError(f"{method} needs a non-empty salt (a secret kept outside the spec)")
    if kind == "email":
        text = pc.utf8_lower(pc.utf8_trim_whitespace(text))
    key = salt.encode("utf-8")
    if method == "hash":
        suffix = f"@{_HASH_DOMAIN}" if kind == "email" else ""
        result = _per_distinct(text, lambda value: _digest(key, value).hex()[:HASH_LENGTH] + suffix)
    else:
        assert kind is not None
        fake = _FAKERS[kind]
        prefix = f"fake:{kind}:".encode()  # a stream per kind: a fake name says nothing of the fake phone
        result = _per_distinct(text, lambda value: fake(value, _Draws(_digest(key, value, prefix))))
    return pd.Series(result, dtype="str", index=values.index)


# ---------------------------------------------------------------- helpers


def _text(values: pd.Series) -> pa.Array:
    """The column as Arrow text, "" for missing values."""
    if values.dtype != "str":
        values = values.astype("str")
    column = pa.array(values, type=_STRING)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return pc.fill_null(column, "")


def _repeat(text: str, n: int) -> pa.Array:
    return pa.array([text], type=_STRING).take(np.zeros(n, dtype=np.int32))


def _stars(counts: pa.Array | np.ndarray) -> pa.Array:
    return pc.binary_repeat(_repeat("*", len(counts)), counts)


def _mask(text: pa.Array, keep: int) -> pa.Array:
    lengths = pc.utf8_length(text)
    shown = pc.greater(lengths, keep)  # only longer values show their last `keep` characters
    if keep == 0:
        return _stars(lengths)
    masked = _stars(pc.if_else(shown, pc.subtract(lengths, keep), lengths))
    tail = pc.if_else(shown, pc.utf8_slice_codeunits(text, -keep), pa.scalar("", _STRING))
    return pc.binary_join_element_wise(masked, tail, pa.scalar("", _STRING))


def _mask_email(text: pa.Array) -> pa.Array:
    parts = pc.extract_regex(text, _EMAIL_RE)
    local, domain = parts.field("local"), parts.field("domain")
    local_length = pc.utf8_length(local)
    # The first character stays unless it is all of the local part.
    first = pc.if_else(pc.greater(local_length, 1), pc.utf8_slice_codeunits(local, 0, 1), pa.scalar("", _STRING))
    stars = _stars(pc.subtract(local_length, pc.utf8_length(first)))
    email = pc.binary_join_element_wise(first, stars, domain, pa.scalar("", _STRING))
    # Values that are not email-shaped are masked entirely.
    return pc.if_else(parts.is_valid(), email, _mask(text, 0))


def _digest(key: bytes, value: str, prefix: bytes = b"") -> bytes:
    return hmac.new(key, prefix + value.encode("utf-8"), hashlib.sha256).digest()


def _per_distinct(text: pa.Array, make: Callable[[str], str]) -> pa.Array:
    """`make` applied once per distinct non-empty value, spread back over the rows."""
    encoded = pc.dictionary_encode(text)
    distinct = encoded.dictionary.to_pylist()
    made = pa.array([make(v) if v else "" for v in distinct], type=_STRING)
    return made.take(encoded.indices)


class _Draws:
    """Numbers drawn from one value's keyed hash, the same on every run and platform.

    The 32 bytes of the HMAC are extended by SHA-256 in counter mode when a fake needs
    more (long texts); `random.Random` is avoided because its algorithms may change
    between Python versions, which would change every fake.
    """

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._buffer = seed
        self._position = 0
        self._counter = 0

    def below(self, n: int) -> int:
        """A number in [0, n); 8 bytes per draw keep the modulo bias negligible for small n."""
        if self._position + 8 > len(self._buffer):
            self._counter += 1
            self._buffer = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._position = 0
        chunk = self._buffer[self._position : self._position + 8]
        self._position += 8
        return int.from_bytes(chunk, "big") % n

    def pick(self, options: tuple[str, ...] | list[str] | str) -> str:
        return options[self.below(len(options))]

    def digits(self, count: int) -> str:
        return "".join(str(self.below(10)) for _ in range(count))


# ---------------------------------------------------------------- fakes


def _fake_name(value: str, draws: _Draws) -> str:
    # Most Chinese given names have two characters, some one.
    given = draws.pick(_GIVEN) + (draws.pick(_GIVEN) if draws.below(3) else "")
    return draws.pick(_SURNAMES) + given


def _fake_name_en(value: str, draws: _Draws) -> str:
    return f"{draws.pick(_FIRST_NAMES)} {draws.pick(_LAST_NAMES)}"


def _fake_email(value: str, draws: _Draws) -> str:
    first, last = draws.pick(_FIRST_NAMES).lower(), draws.pick(_LAST_NAMES).lower()
    return f"{first}.{last}{draws.below(10_000)}@{draws.pick(_EMAIL_DOMAINS)}"


def _fake_phone(value: str, draws: _Draws) -> str:
    return f"{draws.pick(_MOBILE_PREFIXES)}-{draws.digits(4)}-{draws.digits(4)}"


def _fake_company(value: str, draws: _Draws) -> str:
    return draws.pick(_CITIES) + draws.pick(_TRADE_NAMES) + draws.pick(_INDUSTRIES) + draws.pick(_COMPANY_FORMS)


def _fake_text(value: str, draws: _Draws) -> str:
    """Latin filler as long as the value (never longer: the field's length limit still holds)."""
    size = len(value)
    words: list[str] = []
    length = -1
    while length < size:
        words.append(draws.pick(_WORDS))
        length += len(words[-1]) + 1
    # Never empty: `size` is at least 1 (empty values are not faked) and no word starts with a space.
    return " ".join(words)[:size].rstrip().capitalize()


def _fake_number(value: str, draws: _Draws) -> str:
    """Every character but signs, separators and spaces becomes a digit: the cast still reads the result.

    Letters become digits too, so a value that was not a number leaks nothing. The first
    digit stays zero or non-zero, so the magnitude and the number of digits stay.
    """
    out: list[str] = []
    first = True
    for char in value:
        if char in _NUMBER_PUNCTUATION or char.isspace():
            out.append(char)
            continue
        if not first:
            out.append(str(draws.below(10)))
        else:
            out.append("0" if char == "0" else str(1 + draws.below(9)))
            first = False
    return "".join(out)


def _fake_date(value: str, draws: _Draws) -> str:
    """A YYYY-MM-DD value moves by 1 to 365 days (any time after it stays); anything else gets a date."""
    try:
        if not _ISO_DATE.match(value):
            raise ValueError(value)
        day = dt.date.fromisoformat(value[:10])
    except ValueError:
        start, span = _FALLBACK_DATES
        return (start + dt.timedelta(days=draws.below(span))).isoformat()
    shift = 1 + draws.below(_DATE_SHIFT_DAYS)
    sign = 1 if draws.below(2) else -1
    try:
        moved = day + dt.timedelta(days=sign * shift)
    except OverflowError:  # next to year 1 or 9999: go the other way
        moved = day - dt.timedelta(days=sign * shift)
    return moved.isoformat() + value[10:]


_FAKERS: dict[str, Callable[[str, _Draws], str]] = {
    "company": _fake_company,
    "date": _fake_date,
    "email": _fake_email,
    "name": _fake_name,
    "name_en": _fake_name_en,
    "number": _fake_number,
    "phone": _fake_phone,
    "text": _fake_text,
}
